// The node flags kzymy-server is started with are the same wherever it is started: npm start,
// the kzymy-server command (its shebang), the systemd unit, and the benchmarks (which must
// measure the server as it ships); and the node on this machine accepts them.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { SERVER_NODE_FLAGS } from '../../bench/lib/kzymy.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const read = (f: string) => readFileSync(path.join(ROOT, f), 'utf8');

describe('cli: node flags of kzymy-server start', function () {
  const flags = SERVER_NODE_FLAGS.join(' ');

  it('npm start, the shebang of kzymy-server and the systemd unit carry the benchmarks\' flags', function () {
    expect(flags).to.equal('--max-semi-space-size=4');
    const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
    expect(pkg.scripts.start).to.equal(`node ${flags} dist/cli/server.js start`);
    expect(read('src/cli/server.ts').split('\n')[0]).to.equal(`#!/usr/bin/env -S node ${flags}`);
    const exec = read('scripts/kzymy.service').split('\n').find((l) => l.startsWith('ExecStart='));
    expect(exec).to.match(new RegExp(`^ExecStart=/usr/bin/node ${flags} /opt/kzymy/dist/cli/server\\.js start `));
  });

  it('node accepts them and gives the small young generation they ask for', function () {
    const script = "const s=require('v8').getHeapSpaceStatistics().find(x=>x.space_name==='new_space');process.stdout.write(String(s.space_size))";
    const small = Number(execFileSync(process.execPath, [...SERVER_NODE_FLAGS, '-e', script], { encoding: 'utf8' }));
    expect(small).to.be.greaterThan(0);
    expect(small).to.be.at.most(12 * 1024 * 1024);
  });
});
