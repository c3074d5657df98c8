#!/usr/bin/env node
// Builds the single-file kzymy-client: src/cli/client.ts and everything it imports
// (commander, socks-proxy-agent, cli-progress, proper-lockfile, ...) bundled by esbuild into
// one ESM file that needs only Node.js >= 20 at run time, plus gpg and tor. It is written to
// dist/bundle/kzymy-client.mjs (the server offers that file on its onion pages) and copied
// into packages/kzymy-client/ (the package `npm pack` makes there). `npm run build` runs it
// after tsc. The same sources and lockfile give the same bytes: no time, no absolute path.
import { build } from 'esbuild';
import { chmod, mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..');
const ENTRY = 'src/cli/client.ts';
const OUT = path.join(ROOT, 'dist', 'bundle', 'kzymy-client.mjs');
const PACKAGE_DIR = path.join(ROOT, 'packages', 'kzymy-client');
const PACKAGE_COPY = path.join(PACKAGE_DIR, 'kzymy-client.mjs');

function fail(sentence) {
  process.stderr.write(`build-client: ${sentence}\n`);
  process.exit(1);
}

const readJson = async (file) => JSON.parse(await readFile(file, 'utf8'));
const rootPkg = await readJson(path.join(ROOT, 'package.json'));
const clientPkg = await readJson(path.join(PACKAGE_DIR, 'package.json'));
if (clientPkg.version !== rootPkg.version) {
  fail(`packages/kzymy-client/package.json has version ${clientPkg.version} but package.json has ${rootPkg.version}: give both the same version.`);
}

const result = await build({
  absWorkingDir: ROOT,
  entryPoints: [ENTRY],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  outfile: OUT,
  write: false,
  metafile: true,
  charset: 'utf8',
  legalComments: 'eof',
  logLevel: 'warning',
  // Readable on purpose: whoever downloads it can read what it does.
  minify: false,
  define: { __KZYMY_VERSION__: JSON.stringify(rootPkg.version) },
  // The bundled CommonJS packages call require() for Node's own modules; an ES module has
  // none, so it is made here. (esbuild keeps the entry's #! line above this banner.)
  banner: {
    js: [
      `// kzymy-client ${rootPkg.version}: one file, built from kzymy's source (${ENTRY}) by scripts/build-client.mjs.`,
      '// Needs Node.js >= 20, gpg and tor; nothing else. License: AGPL-3.0-or-later. The licenses',
      '// of the packages bundled in it are at the end of this file.',
      "import { createRequire as __kzymyCreateRequire } from 'node:module';",
      'const require = __kzymyCreateRequire(import.meta.url);',
    ].join('\n'),
  },
});

/** The license texts of every package bundled, as line comments (a text cannot end them). */
async function thirdPartyNotices(metafile) {
  const dirs = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m) dirs.add(m[1]);
  }
  const lines = ['', '// ---- Packages bundled in this file, with their licenses ----'];
  for (const dir of [...dirs].sort()) {
    const pkg = await readJson(path.join(ROOT, dir, 'package.json'));
    lines.push('//', `// ${pkg.name} ${pkg.version} (${typeof pkg.license === 'string' ? pkg.license : 'see below'})`);
    const names = (await readdir(path.join(ROOT, dir))).filter((n) => /^licen[cs]e(\.|$)/i.test(n)).sort();
    if (names.length === 0) {
      lines.push('//   (the package ships no license file)');
      continue;
    }
    const text = await readFile(path.join(ROOT, dir, names[0]), 'utf8');
    for (const line of text.replace(/\r\n?/g, '\n').trimEnd().split('\n')) lines.push(`//   ${line}`.trimEnd());
  }
  return lines.join('\n') + '\n';
}

const js = result.outputFiles.find((f) => f.path === OUT);
if (!js) fail('esbuild wrote no bundle.');
const text = js.text + (await thirdPartyNotices(result.metafile));
if (!text.startsWith('#!/usr/bin/env node\n')) fail(`${ENTRY} must start with "#!/usr/bin/env node" so that the bundle runs as a command.`);

/** Written beside, then renamed: a server reading the file never sees half of it. */
async function put(file, data) {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, data, { mode: 0o755 });
  await chmod(tmp, 0o755);
  await rename(tmp, file);
}
await put(OUT, text);
await put(PACKAGE_COPY, text);

const sha256 = createHash('sha256').update(text).digest('hex');
const kib = (Buffer.byteLength(text) / 1024).toFixed(0);
process.stdout.write(`build-client: ${path.relative(ROOT, OUT)} (${kib} KiB, SHA-256 ${sha256}), copied to ${path.relative(ROOT, PACKAGE_COPY)}\n`);
