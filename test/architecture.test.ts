// The house rule, checked: imports run one way,
// cli -> smtp | web | client -> registry | pgp | maildir | tor -> config;
// and no source file grows past MAX_LINES (a longer file holds more than one concern).
import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const SRC = path.resolve(import.meta.dirname, '..', 'src');
const ALLOWED: Record<string, string[]> = {
  config: [],
  registry: ['config'],
  pgp: ['config'],
  maildir: ['config'],
  tor: ['config'],
  smtp: ['config', 'registry', 'pgp', 'maildir'],
  web: ['config', 'registry', 'pgp', 'maildir', 'tor'],
  client: ['config', 'pgp', 'maildir'],
  cli: ['config', 'registry', 'pgp', 'maildir', 'tor', 'smtp', 'web', 'client'],
};

const MAX_LINES = 300;

function sourceFiles(): string[] {
  return readdirSync(SRC).flatMap((mod) =>
    readdirSync(path.join(SRC, mod))
      .filter((file) => file.endsWith('.ts'))
      .map((file) => path.join(mod, file)),
  );
}

describe('architecture', () => {
  it('imports flow one way between the modules of src/', () => {
    const wrong: string[] = [];
    for (const mod of readdirSync(SRC)) {
      for (const file of readdirSync(path.join(SRC, mod))) {
        if (!file.endsWith('.ts')) continue;
        const text = readFileSync(path.join(SRC, mod, file), 'utf8');
        for (const m of text.matchAll(/from '\.\.\/([a-z]+)\//g)) {
          const target = m[1]!;
          if (!(ALLOWED[mod] ?? []).includes(target)) wrong.push(`src/${mod}/${file} imports src/${target}`);
        }
      }
    }
    expect(wrong).to.deep.equal([]);
    expect(Object.keys(ALLOWED).sort()).to.deep.equal(readdirSync(SRC).sort(), 'every module has a place in the rule');
  });

  it(`keeps every file of src/ within ${MAX_LINES} lines`, () => {
    const long = sourceFiles()
      .map((file) => ({ file, lines: readFileSync(path.join(SRC, file), 'utf8').split('\n').length - 1 }))
      .filter((f) => f.lines > MAX_LINES)
      .map((f) => `src/${f.file}: ${f.lines} lines`);
    expect(long).to.deep.equal([]);
  });
});
