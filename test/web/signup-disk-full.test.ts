// A web signup confirmed while the disk holding the registry is full (a real, small
// tmpfs): the answer is 503 with a sentence for the visitor, the signup stays open, and
// the same code completes it once there is space again.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import { inCI, requireBinaries, tempDir } from '../helpers/env.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { makeFreshGpgKey, requireGpg } from '../helpers/gpg.js';
import { swaks } from '../helpers/swaks.js';
import { api, decryptCode, type TestServer } from './harness.js';

const run = promisify(execFile);

/** Writes zeros into `file` until the file system says it is full. */
function fill(file: string): void {
  const fd = openSync(file, 'w');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
}

describe('web: signup while the registry disk is full', function () {
  this.timeout(180_000);
  let tmp: { dir: string; cleanup: () => Promise<void> } | null = null;
  let mnt = '';
  let mounted = false;
  let srv: RunningServer | null = null;

  before(async function () {
    requireGpg(this);
    requireBinaries(this, 'mount', 'umount', 'swaks', 'openssl');
    tmp = await tempDir('kzymy-diskfull-');
    mnt = path.join(tmp.dir, 'small');
    await mkdir(mnt);
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=2m,mode=0700', 'tmpfs', mnt]);
      mounted = true;
    } catch (err) {
      const line = `cannot mount a tmpfs (needs root): ${String((err as { stderr?: string }).stderr ?? err).trim()}`;
      if (inCI) throw new Error(line);
      console.warn(`\n  !!! SKIPPING "${this.test?.parent?.fullTitle() ?? 'suite'}": ${line}\n`);
      this.skip();
    }
  });
  after(async () => {
    await srv?.cleanup();
    if (mounted) await run('umount', [mnt]);
    await tmp?.cleanup();
  });

  it('answers 503 with a sentence, keeps the signup, and the same code works once there is space', async function () {
    const dataDir = path.join(mnt, 'data');
    srv = await startServer({ config: { dataDir } });
    const web = { base: `http://127.0.0.1:${srv.webPort!}`, port: srv.webPort! } as TestServer;
    const key = await makeFreshGpgKey('ed25519');

    const started = await api(web, 'POST', '/api/v1/signup', { publicKey: key.publicArmored });
    expect(started.status, JSON.stringify(started.json)).to.equal(201);
    const code = await decryptCode(key, started.json.challenge as string);
    const confirm = { signupId: started.json.signupId, code };

    const filler = path.join(mnt, 'filler');
    fill(filler);
    const full = await api(web, 'POST', '/api/v1/signup/confirm', confirm);
    expect(full.status, JSON.stringify(full.json)).to.equal(503);
    const error = full.json.error as { code: string; message: string };
    expect(error.code).to.equal('not-saved');
    expect(error.message).to.match(/^[A-Z][^\n]*\.$/);
    expect(error.message, 'no server path').not.to.match(/\//);
    expect(error.message).not.to.match(/\bat\s|Error|ENOSPC/);
    expect(full.res.headers.get('retry-after')).to.match(/^\d+$/);
    // Nothing half-written was left in the registry.
    const registryDir = path.join(dataDir, 'registry');
    expect((await readdir(path.join(registryDir, 'keys'))).filter((f) => f.startsWith('.')), 'temporary key files').to.deep.equal([]);
    expect(JSON.parse(await srv.cli('users', 'list', '--json'))).to.deep.equal([]);

    await rm(filler);
    const done = await api(web, 'POST', '/api/v1/signup/confirm', confirm);
    expect(done.status, JSON.stringify(done.json)).to.equal(201);
    const username = done.json.username as string;
    expect(username).to.match(/^[a-z][a-z0-9]{11}$/);

    // The account exists: for the server (RCPT), for the operator, and it can log in.
    expect((await swaks({ port: srv.smtpPort, to: `x@${username}.${srv.domain}`, extra: ['--quit-after', 'RCPT'] })).last).to.match(/^250 /);
    expect(await srv.cli('users', 'show', username)).to.include(key.fingerprint);
    const ch = await api(web, 'POST', '/api/v1/auth/challenge', { username });
    expect(ch.status).to.equal(200);
    expect(ch.json.fingerprint).to.equal(key.fingerprint);
    // The code is spent now.
    const again = await api(web, 'POST', '/api/v1/signup/confirm', confirm);
    expect(again.status).to.equal(404);
    // The server logged the failure without a path or a stack.
    expect(srv.output()).to.match(/"evt":"signup-save-failed"/);
    expect(srv.output()).not.to.match(/^\s+at /m);
  });
});
