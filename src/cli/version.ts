// The version both command lines print with --version. The single-file kzymy-client
// (scripts/build-client.mjs) has it written in at build time, as __KZYMY_VERSION__, since
// no package.json travels with that file; otherwise it is package.json's, read at run time
// (the file sits two folders up from src/cli and from dist/cli alike).
import { readFileSync } from 'node:fs';

declare const __KZYMY_VERSION__: string | undefined;

export function version(): string {
  if (typeof __KZYMY_VERSION__ === 'string') return __KZYMY_VERSION__;
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}
