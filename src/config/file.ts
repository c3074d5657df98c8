// Reading the configuration file: one JSON object whose keys and sections are those of
// the settings (schema.ts). The values themselves are checked setting by setting (load.ts).
import { readFileSync } from 'node:fs';
import * as z from 'zod';
import { sentences } from './problems.js';
import { settings } from './schema.js';

let shape: z.ZodObject | undefined;

/** The file's shape: the known keys of each section, any value for each setting. */
function fileShape(): z.ZodObject {
  if (shape) return shape;
  const sections = new Map<string, Record<string, z.ZodType>>();
  const top: Record<string, z.ZodType> = {};
  for (const { path } of settings()) {
    if (path.length === 1) top[path[0]!] = z.unknown().optional();
    else {
      const [section, key] = path as [string, string];
      if (!sections.has(section)) sections.set(section, {});
      sections.get(section)![key] = z.unknown().optional();
    }
  }
  for (const [section, keys] of sections) {
    top[section] = z
      .strictObject(keys, { error: (iss) => (iss.code === 'invalid_type' ? `The setting "${section}" must be an object.` : undefined) })
      .optional();
  }
  return (shape = z.strictObject(top));
}

/** The JSON object in `file` (an absolute path), and the sentences for what is wrong with it. */
export function readConfigFile(file: string): { values: Record<string, unknown>; problems: string[] } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return failed(`The configuration file ${file} does not exist.`);
    if (e instanceof SyntaxError) return failed(`The configuration file ${file} is not valid JSON: ${e.message}.`);
    return failed(`The configuration file ${file} cannot be read (${e.code ?? e.message}).`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return failed(`The configuration file ${file} must hold one JSON object.`);
  const checked = fileShape().safeParse(parsed);
  return { values: parsed as Record<string, unknown>, problems: checked.success ? [] : sentences(checked.error.issues, Object.keys(parsed)) };
}

function failed(sentence: string): { values: Record<string, unknown>; problems: string[] } {
  return { values: {}, problems: [sentence] };
}
