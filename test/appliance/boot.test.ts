// The appliance booted for real: scripts/test-appliance.sh debootstraps Debian 13,
// provisions it twice, boots it under systemd-nspawn and checks it from inside. Needs root
// on Linux: skipped loudly elsewhere, but under CI=true it must run (CI is root).
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { inCI, requireBinaries } from '../helpers/env.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));

describe('appliance: boot under systemd-nspawn (scripts/test-appliance.sh)', function () {
  this.timeout(20 * 60_000);
  this.slow(5 * 60_000);

  before(function () {
    const isRoot = process.getuid?.() === 0;
    if (process.platform !== 'linux' || !isRoot) {
      const line = `the appliance boot test needs root on Linux (this is ${process.platform}, uid ${process.getuid?.() ?? '?'}); run: sudo scripts/test-appliance.sh`;
      if (inCI) throw new Error(line);
      console.warn(`\n  !!! SKIPPING "${this.test?.parent?.fullTitle() ?? 'suite'}": ${line}\n`);
      this.skip();
    }
    requireBinaries(this, 'bash', 'tar', 'rsync');
  });

  it('provisions twice, boots, and passes every check from inside', async () => {
    const logDir = path.join(repo, 'test-output');
    await mkdir(logDir, { recursive: true });
    const logFile = path.join(logDir, 'appliance.log');
    const log = createWriteStream(logFile);
    const lines: string[] = [];
    const code = await new Promise<number>((resolve, reject) => {
      const child = spawn('bash', [path.join(repo, 'scripts', 'test-appliance.sh')], {
        cwd: repo,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const take = (chunk: Buffer): void => {
        log.write(chunk);
        lines.push(...chunk.toString('utf8').split('\n'));
        if (lines.length > 400) lines.splice(0, lines.length - 400);
      };
      child.stdout.on('data', take);
      child.stderr.on('data', take);
      child.on('error', reject);
      child.on('close', (c, signal) => resolve(c ?? (signal ? 128 : 1)));
    });
    await new Promise<void>((resolve) => log.end(resolve));
    const text = lines.join('\n');
    expect(code, `scripts/test-appliance.sh exited ${code} (whole log: ${logFile}):\n${lines.slice(-40).join('\n')}`).to.equal(0);
    expect(text).to.match(/test-appliance: PASSED/);
    // The figures worth seeing in the test output.
    const shown = text
      .split('\n')
      .filter((l) => /exposure|onion hostname:|^timings:|^ {2}\S.* s$/.test(l));
    console.log(shown.map((l) => `      ${l}`).join('\n'));
  });
});
