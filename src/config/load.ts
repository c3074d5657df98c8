// Building the configuration: each setting's default, then the JSON file, then the
// environment (schema.ts declares all three). Every mistake found becomes one sentence; all
// are reported together in one ConfigError.
import path from 'node:path';
import { readConfigFile } from './file.js';
import { ConfigError } from './problems.js';
import { settings, type Config, type Leaf, type Where } from './schema.js';

export interface LoadOptions {
  /** JSON file; else $KZYMY_CONFIG; else built-in defaults only. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Base for relative default paths (the checkout); defaults to the working directory. */
  cwd?: string;
}

/** Builds the configuration or throws ConfigError listing every problem found. */
export function loadConfig(opts: LoadOptions = {}): Config {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const file = opts.file ?? (env.KZYMY_CONFIG || undefined);
  const abs = file ? path.resolve(cwd, file) : null;
  const { values: inFile, problems } = abs ? readConfigFile(abs) : { values: {}, problems: [] };

  // What the file and then the environment give; a value refused is left to the default.
  const given = new Map<string, unknown>();
  const refused = new Set<string>();
  const take = (leaf: Leaf, raw: unknown, base: string) => {
    const checked = leaf.schema.safeParse(raw);
    if (!checked.success) {
      problems.push(checked.error.issues[0]!.message);
      given.delete(leaf.key);
      refused.add(leaf.key);
    } else {
      given.set(leaf.key, leaf.setting.kind.isPath ? path.resolve(base, checked.data as string) : checked.data);
    }
  };
  for (const leaf of settings()) {
    // Relative paths in the file are relative to the file; in the environment, to the working directory.
    const raw = valueAt(inFile, leaf.path);
    if (raw !== undefined) take(leaf, raw, path.dirname(abs!));
    const text = leaf.setting.env ? env[leaf.setting.env] : undefined;
    const fromEnv = text === undefined ? undefined : leaf.setting.kind.fromEnv(text);
    if (fromEnv !== undefined) take(leaf, fromEnv, cwd);
  }

  const config = withDefaults(given, { cwd, PATH: env.PATH ?? process.env.PATH ?? '' });
  config.source = { file: abs };

  const { registry, limits } = config;
  if (registry.engine === 'postgres' && registry.url === null && !refused.has('registry.url')) {
    problems.push('The registry engine "postgres" needs "registry.url" (KZYMY_REGISTRY_URL), such as postgresql:///kzymy?host=/run/postgresql.');
  }
  if (registry.engine !== 'postgres') registry.url = null;
  if (limits.memoryBudgetBytes < 2 * limits.memoryBufferBytes) {
    problems.push(
      `The setting "limits.memoryBudgetBytes" must be at least twice "limits.memoryBufferBytes" (${2 * limits.memoryBufferBytes} bytes), or one transaction could hold more than the budget.`,
    );
  }

  if (problems.length) throw new ConfigError(problems);
  return config;
}

/** The value at `at` in the file, if its sections are objects. */
function valueAt(values: Record<string, unknown>, at: readonly string[]): unknown {
  let v: unknown = values;
  for (const k of at) {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

/**
 * The configuration: each setting given, else its default. A default may read other
 * settings (tor.hostnameFile is under tor.dataDir), so each is worked out when first read.
 */
function withDefaults(given: ReadonlyMap<string, unknown>, at: Where): Config {
  type Tree = Record<string, unknown>;
  const root: Tree = {};
  for (const leaf of settings()) {
    const parent = leaf.path.slice(0, -1).reduce((o, k) => (o[k] ??= {}) as Tree, root);
    const name = leaf.path.at(-1)!;
    const d = leaf.setting.default;
    Object.defineProperty(parent, name, {
      enumerable: true,
      configurable: true,
      get() {
        const value = given.has(leaf.key) ? given.get(leaf.key) : typeof d === 'function' ? d(root as unknown as Config, at) : d;
        Object.defineProperty(parent, name, { value, enumerable: true, writable: true, configurable: true });
        return value;
      },
    });
  }
  for (const leaf of settings()) leaf.path.reduce<unknown>((o, k) => (o as Tree)[k], root);
  return root as unknown as Config;
}
