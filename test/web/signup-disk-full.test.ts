// A web signup confirmed while the disk holding the registry is full (a real, small
// tmpfs): the answer is 503 with a sentence for the visitor, the signup stays open, and
// the same code completes it once there is space again.
import { expect } from 'chai';
import { closeSync, openSync, writeSync } from 'node:fs';
import { readFile, readdir, rm, stat, truncate } from 'node:fs/promises';
import path from 'node:path';
import { requireBinaries } from '../helpers/env.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { makeFreshGpgKey, requireGpg, type TestKey } from '../helpers/gpg.js';
import { swaks } from '../helpers/swaks.js';
import { useTmpfs } from '../helpers/tmpfs.js';
import { api, decryptCode, type TestServer } from './harness.js';

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
  const servers: RunningServer[] = [];

  before(function () {
    requireGpg(this);
    requireBinaries(this, 'swaks', 'openssl');
  });
  after(async () => {
    for (const s of servers) await s.cleanup();
  });
  // Declared after the hooks above: mocha runs before and after hooks in the order they
  // are declared, so the tmpfs is mounted once the binaries are checked and unmounted
  // once every server on it has stopped.
  const small = useTmpfs('2m', 'kzymy-diskfull-');

  /** A server with its data dir on the small disk, and a signup of a fresh key up to the code. */
  async function pendingSignup(name: string): Promise<{ srv: RunningServer; web: TestServer; dataDir: string; key: TestKey; confirm: Record<string, unknown> }> {
    const dataDir = path.join(small.dir(), name);
    const s = await startServer({ config: { dataDir } });
    servers.push(s);
    const web = { base: `http://127.0.0.1:${s.webPort!}`, port: s.webPort! } as TestServer;
    const key = await makeFreshGpgKey('ed25519');
    const started = await api(web, 'POST', '/api/v1/signup', { publicKey: key.publicArmored });
    expect(started.status, JSON.stringify(started.json)).to.equal(201);
    const code = await decryptCode(key, started.json.challenge as string);
    return { srv: s, web, dataDir, key, confirm: { signupId: started.json.signupId, code } };
  }

  /** The refusal a visitor sees: 503, a sentence without a path or a stack, Retry-After. */
  function expectNotSaved(r: Awaited<ReturnType<typeof api>>): void {
    expect(r.status, JSON.stringify(r.json)).to.equal(503);
    const error = r.json.error as { code: string; message: string };
    expect(error.code).to.equal('not-saved');
    expect(error.message).to.match(/^[A-Z][^\n]*\.$/);
    expect(error.message, 'no server path').not.to.match(/\//);
    expect(error.message).not.to.match(/\bat\s|Error|ENOSPC/);
    expect(r.res.headers.get('retry-after')).to.match(/^\d+$/);
  }

  /** The second confirm with the same code: the account exists for the server, the operator and a login. */
  async function expectAccount(p: Awaited<ReturnType<typeof pendingSignup>>): Promise<void> {
    const done = await api(p.web, 'POST', '/api/v1/signup/confirm', p.confirm);
    expect(done.status, JSON.stringify(done.json)).to.equal(201);
    const username = done.json.username as string;
    expect(username).to.match(/^[a-z][a-z0-9]{11}$/);
    expect((await swaks({ port: p.srv.smtpPort, to: `x@${username}.${p.srv.domain}`, extra: ['--quit-after', 'RCPT'] })).last).to.match(/^250 /);
    expect(await p.srv.cli('users', 'show', username)).to.include(p.key.fingerprint);
    const ch = await api(p.web, 'POST', '/api/v1/auth/challenge', { username });
    expect(ch.status).to.equal(200);
    expect(ch.json.fingerprint).to.equal(p.key.fingerprint);
    // The code is spent now.
    expect((await api(p.web, 'POST', '/api/v1/signup/confirm', p.confirm)).status).to.equal(404);
    // The server logged the failure without a path or a stack.
    expect(p.srv.output()).to.match(/"evt":"signup-save-failed"/);
    expect(p.srv.output()).not.to.match(/^\s+at /m);
  }

  it('answers 503 when the key cannot be stored, keeps the signup, and the same code works once there is space', async function () {
    const p = await pendingSignup('data1');
    const filler = path.join(small.dir(), 'filler');
    fill(filler);
    expectNotSaved(await api(p.web, 'POST', '/api/v1/signup/confirm', p.confirm));
    // Nothing half-written was left in the registry.
    const keysDir = path.join(p.dataDir, 'registry', 'keys');
    expect(await readdir(keysDir), 'key files').to.deep.equal([]);
    expect(JSON.parse(await p.srv.cli('users', 'list', '--json'))).to.deep.equal([]);
    await rm(filler);
    await expectAccount(p);
  });

  it('answers 503 when the key is stored but its journal record cannot be, and the same code works once there is space', async function () {
    const p = await pendingSignup('data2');
    const journal = path.join(p.dataDir, 'registry', 'journal.1');
    expect((await stat(journal)).size, 'a fresh registry: an empty journal').to.equal(0);
    const filler = path.join(small.dir(), 'filler');
    fill(filler);
    // Room for one page: the key file takes it, and the journal's first record finds none.
    await truncate(filler, (await stat(filler)).size - 4096);
    expectNotSaved(await api(p.web, 'POST', '/api/v1/signup/confirm', p.confirm));
    const keysDir = path.join(p.dataDir, 'registry', 'keys');
    expect((await readdir(keysDir)).filter((f) => f.endsWith('.asc')), 'the key was stored').to.have.length(1);
    expect(await readFile(journal, 'utf8'), 'no complete record in the journal').not.to.match(/\n/);
    expect(JSON.parse(await p.srv.cli('users', 'list', '--json'))).to.deep.equal([]);
    await rm(filler);
    await expectAccount(p);
    expect((await readdir(keysDir)).filter((f) => f.endsWith('.asc')), 'one key file for one account').to.have.length(1);
  });
});
