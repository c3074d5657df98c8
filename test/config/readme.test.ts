// The README's configuration table against the settings of schema.ts: every key once, each row's environment
// variables those of its keys, and each fixed default written in its row.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { settings } from '../../src/config/schema.js';

const README = readFileSync(path.join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
const MiB = 1024 * 1024;

interface Row {
  keys: string[];
  envs: string[];
  dflt: string;
}

function table(): Row[] {
  const lines = README.split('\n');
  const start = lines.indexOf('| key | env | default | appliance |');
  expect(start, 'the configuration table in README.md').to.be.above(-1);
  const rows: Row[] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    const [key = '', env = '', dflt = ''] = line.slice(1, -1).split('|').map((c) => c.trim());
    const ticked = (cell: string) => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
    rows.push({ keys: ticked(key.replace(/\(.*\)/, '')), envs: ticked(env).filter((e) => e.startsWith('KZYMY_')), dflt });
  }
  return rows;
}

/** How the README writes a fixed default. */
function written(v: unknown): RegExp | null {
  if (typeof v === 'number') return v >= MiB && v % MiB === 0 ? new RegExp(`(^|\\D)${v / MiB} MiB`) : new RegExp(`(^|\\D)${v}(\\D|$)`);
  if (typeof v === 'string') return new RegExp(`\`${v.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\``);
  if (v === null) return /none/;
  return null;
}

describe('config: the README table', () => {
  const rows = table();
  const byKey = new Map(rows.flatMap((r) => r.keys.map((k) => [k, r] as const)));

  it('lists every setting once, and only settings', () => {
    const listed = rows.flatMap((r) => r.keys);
    expect(listed).to.have.members(settings().map((l) => l.key));
  });

  it("gives each row the environment variables of its settings", () => {
    for (const r of rows) {
      const envs = r.keys.flatMap((k) => settings().find((l) => l.key === k)?.setting.env ?? []);
      expect(r.envs, r.keys.join(', ')).to.have.members(envs);
    }
  });

  it('writes each fixed default in its row', () => {
    for (const { key, setting } of settings()) {
      const shown = typeof setting.default === 'function' ? null : written(setting.default);
      if (shown) expect(byKey.get(key)?.dflt, key).to.match(shown);
    }
  });
});
