// SMTP intake end to end: a real kzymy-server process, real swaks,
// real GnuPG and Sequoia keys, real files.
import { expect } from 'chai';
import { writeFile, readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { requireBinaries } from '../helpers/env.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { swaks, swaksWire } from '../helpers/swaks.js';
import { GOOD_GPG_KEY_KINDS, gpg, makeGpgKey, makeSqKey, gpgDecryptPgpMime, parsePgpMime, sqDecrypt, type TestKey } from '../helpers/gpg.js';
import { tempDir } from '../helpers/env.js';
import { restoreBuffer } from '../../src/pgp/index.js';
import { marker, rawMessage, newFiles, filesContaining } from '../helpers/mail.js';
import { sendRaw } from '../helpers/smtp-client.js';

async function addUser(srv: RunningServer, key: TestKey): Promise<string> {
  const f = path.join(srv.base, `key-${key.fingerprint}.asc`);
  await writeFile(f, key.publicArmored);
  return (await srv.cli('users', 'add', '--key', f)).trim();
}

function expectDelivered(decrypted: Buffer, original: Buffer, rcpt: string): void {
  const text = decrypted.toString('latin1');
  expect(text).to.match(/^Return-Path: <sender@example\.org>\r\nDelivered-To: [^\r\n]+\r\nReceived: from [^\r\n]+\r\n/);
  expect(text.split('\r\n')[1]).to.equal(`Delivered-To: ${rcpt}`);
  const headerEnd = text.indexOf('\r\n', text.indexOf('Received: ')) + 2;
  expect(Buffer.compare(decrypted.subarray(headerEnd), swaksWire(original))).to.equal(0, 'the original bytes, unchanged');
}

describe('SMTP intake (real server, swaks, gpg)', function () {
  let srv: RunningServer;
  const marks: string[] = [];

  before(async function () {
    requireBinaries(this, 'gpg', 'swaks', 'openssl');
    srv = await startServer();
  });
  after(async function () {
    if (!srv) return;
    await srv.stop();
    // Promise 1 and 6: no marker anywhere but inside ciphertext.
    const output = srv.output();
    for (const m of marks) {
      expect(output, 'server log').not.to.include(m);
      expect(await filesContaining(srv.base, m), 'data dir and maildirs').to.deep.equal([]);
      expect(await filesContaining(tmpdir(), m, (p) => p.startsWith(srv.base) || /kzymy-gpg|kzymy-keys-|gnupg/.test(p)), 'system temp dir').to.deep.equal([]);
    }
    expect(output).not.to.match(/sender@example\.org|example\.net/, 'no mail address in the default-level log');
    await srv.cleanup();
  });

  for (const kind of [...GOOD_GPG_KEY_KINDS, 'sq'] as const) {
    it(`delivers one encrypted copy that decrypts to the original bytes (${kind} key)`, async function () {
      const key = kind === 'sq' ? await makeSqKey() : await makeGpgKey(kind);
      const user = await addUser(srv, key);
      const mark = marker();
      marks.push(mark);
      const rcpt = `Anything@${user}.${srv.domain}`;
      const msg = rawMessage(mark, { to: rcpt });
      const r = await swaks({ port: srv.smtpPort, to: rcpt, data: msg });
      expect(r.last).to.match(/^250 2\.0\.0 /);
      const files = await newFiles(srv.maildirRoot, user);
      expect(files).to.have.length(1);
      const file = await readFile(files[0]!);
      expect(file.includes(Buffer.from(mark))).to.equal(false);
      const names = parsePgpMime(file).fields.map(([n]) => n.toLowerCase()).sort();
      expect(names).to.deep.equal(['content-type', 'date', 'message-id', 'mime-version', 'subject']);
      expectDelivered(await gpgDecryptPgpMime(key.gnupghome, file), msg, rcpt);
      if (kind === 'sq') {
        const payload = await sqDecrypt(key.secretKeyFile, parsePgpMime(file).armored);
        expect(payload.toString('latin1')).to.match(/^Kzymy-Payload: v1; wrapper=\d+\r\nContent-Type: message\/rfc822;/);
        expectDelivered(restoreBuffer(payload), msg, rcpt);
      }
    });
  }

  it('offers STARTTLS, SIZE, 8BITMIME, PIPELINING, SMTPUTF8, ENHANCEDSTATUSCODES and no AUTH', async function () {
    const key = await makeGpgKey('ed25519');
    const user = (await srv.cli('users', 'list', '--json')).includes(key.fingerprint) ? null : await addUser(srv, key);
    const list = JSON.parse(await srv.cli('users', 'list', '--json')) as Array<{ username: string; fingerprint: string }>;
    const name = user ?? list.find((u) => u.fingerprint === key.fingerprint)!.username;
    const mark = marker();
    marks.push(mark);
    const r = await swaks({ port: srv.smtpPort, to: `tls@${name}.${srv.domain}`, data: rawMessage(mark), tls: true });
    const ehlo = r.replies.filter((l) => l.startsWith('250-') || l.startsWith('250 ')).join('\n');
    for (const f of ['STARTTLS', 'SIZE', '8BITMIME', 'PIPELINING', 'SMTPUTF8', 'ENHANCEDSTATUSCODES']) expect(ehlo).to.include(f);
    expect(ehlo).not.to.match(/AUTH/);
    expect(r.transcript).to.match(/TLS started/);
    expect(r.last).to.match(/^250 2\.0\.0 /);
  });

  it('refuses an unknown user with 550 5.1.1', async function () {
    const r = await swaks({ port: srv.smtpPort, to: `x@nosuchuser.${srv.domain}`, body: 'x' });
    expect(r.last).to.match(/^550 5\.1\.1 /);
  });

  it('refuses a foreign domain with 550 5.7.1 (never an open relay)', async function () {
    for (const to of ['victim@example.com', `x@${srv.domain}.evil.example`, `x@a.b.${srv.domain}`]) {
      const r = await swaks({ port: srv.smtpPort, to, body: 'x' });
      expect(r.last, to).to.match(to.endsWith(srv.domain) ? /^550 5\.1\.1 / : /^550 5\.7\.1 /);
    }
  });

  it('refuses postmaster@DOMAIN when no operator account is configured', async function () {
    const r = await swaks({ port: srv.smtpPort, to: `postmaster@${srv.domain}`, body: 'x' });
    expect(r.last).to.match(/^550 5\.1\.1 /);
  });

  it('refuses a disabled user with 550 5.1.1 and accepts again once enabled', async function () {
    const key = await makeGpgKey('rsa3072');
    const list = JSON.parse(await srv.cli('users', 'list', '--json')) as Array<{ username: string; fingerprint: string }>;
    const name = list.find((u) => u.fingerprint === key.fingerprint)?.username ?? (await addUser(srv, key));
    await srv.cli('users', 'disable', name);
    await waitFor(async () => (await swaks({ port: srv.smtpPort, to: `a@${name}.${srv.domain}`, body: 'x' })).last.startsWith('550 5.1.1'));
    await srv.cli('users', 'enable', name);
    await waitFor(async () => (await swaks({ port: srv.smtpPort, to: `a@${name}.${srv.domain}`, body: 'x' })).last.startsWith('250 '));
  });

  it('gives each user of a multi-recipient message her own copy, and one copy per user', async function () {
    const k1 = await makeGpgKey('nistp256');
    const k2 = await makeGpgKey('rsa4096');
    const list = JSON.parse(await srv.cli('users', 'list', '--json')) as Array<{ username: string; fingerprint: string }>;
    const u1 = list.find((u) => u.fingerprint === k1.fingerprint)?.username ?? (await addUser(srv, k1));
    const u2 = list.find((u) => u.fingerprint === k2.fingerprint)?.username ?? (await addUser(srv, k2));
    const before1 = (await newFiles(srv.maildirRoot, u1)).length;
    const before2 = (await newFiles(srv.maildirRoot, u2)).length;
    const mark = marker();
    marks.push(mark);
    const msg = rawMessage(mark);
    const r = await swaks({ port: srv.smtpPort, to: [`a@${u1}.${srv.domain}`, `b@${u1}.${srv.domain}`, `c@${u2}.${srv.domain}`], data: msg });
    expect(r.last).to.match(/^250 /);
    const f1 = await newFiles(srv.maildirRoot, u1);
    const f2 = await newFiles(srv.maildirRoot, u2);
    expect(f1.length - before1).to.equal(1);
    expect(f2.length - before2).to.equal(1);
    const newest = async (files: string[]) => {
      const withTimes = await Promise.all(files.map(async (f) => ({ f, t: (await import('node:fs/promises')).stat(f).then((s) => s.mtimeMs) })));
      const resolved = await Promise.all(withTimes.map(async (x) => ({ f: x.f, t: await x.t })));
      return readFile(resolved.sort((a, b) => b.t - a.t)[0]!.f);
    };
    expectDelivered(await gpgDecryptPgpMime(k1.gnupghome, await newest(f1)), msg, `a@${u1}.${srv.domain}`);
    expectDelivered(await gpgDecryptPgpMime(k2.gnupghome, await newest(f2)), msg, `c@${u2}.${srv.domain}`);
    // Each copy is encrypted to its own user's key only.
    await gpgDecryptPgpMime(k1.gnupghome, await newest(f2)).then(
      () => expect.fail('user 1 decrypted user 2 copy'),
      () => undefined,
    );
  });
});

describe('SMTP limits (real server)', function () {
  before(function () {
    requireBinaries(this, 'gpg', 'swaks', 'openssl');
  });

  it('refuses an oversize message with 552 5.3.4 and stores nothing', async function () {
    const srv = await startServer({ config: { limits: { maxMessageBytes: 20_000 } } });
    try {
      const key = await makeGpgKey('ed25519');
      const user = await addUser(srv, key);
      const r = await swaks({ port: srv.smtpPort, to: `big@${user}.${srv.domain}`, data: rawMessage(marker(), { bodyBytes: 2_000_000 }) });
      expect(r.last).to.match(/^552 5\.3\.4 /);
      const ehlo = r.replies.find((l) => /SIZE/.test(l));
      expect(ehlo).to.match(/SIZE 20000/);
      expect(await newFiles(srv.maildirRoot, user)).to.deep.equal([]);
      expect(await readdir(path.join(srv.maildirRoot, user, 'tmp'))).to.deep.equal([]);
    } finally {
      await srv.cleanup();
    }
  });

  it('limits recipients per message (452 4.5.3) and command line length', async function () {
    const srv = await startServer({ config: { smtp: { maxRecipients: 2, maxLineLength: 1024 } } });
    try {
      const user = await addUser(srv, await makeGpgKey('ed25519'));
      const r = await sendRaw(srv.smtpPort, [`a@${user}.${srv.domain}`, `b@${user}.${srv.domain}`, `c@${user}.${srv.domain}`], rawMessage(marker()));
      expect(r.reply).to.match(/^452 4\.5\.3 /);
      const long = await swaks({ port: srv.smtpPort, to: `${'x'.repeat(1500)}@${user}.${srv.domain}`, body: 'x' });
      expect(long.last).to.match(/^421 4\.5\.0 Command line too long/);
      expect(await newFiles(srv.maildirRoot, user)).to.deep.equal([]);
    } finally {
      await srv.cleanup();
    }
  });

  it('refuses connections over smtp.maxClients with 421 and serves the others', async function () {
    const srv = await startServer({ config: { smtp: { maxClients: 2 } } });
    const net = await import('node:net');
    const greet = () =>
      new Promise<{ line: string; sock: import('node:net').Socket }>((resolve, reject) => {
        const sock = net.connect(srv.smtpPort, '127.0.0.1');
        sock.once('data', (d) => resolve({ line: d.toString().split('\r\n')[0]!, sock }));
        sock.once('error', reject);
      });
    try {
      const a = await greet();
      const b = await greet();
      const c = await greet();
      expect(a.line).to.match(/^220 /);
      expect(b.line).to.match(/^220 /);
      expect(c.line).to.match(/^421 4\.7\.0 .*Too many connected clients/);
      for (const x of [a, b, c]) x.sock.destroy();
    } finally {
      await srv.cleanup();
    }
  });

  it('closes an idle connection after smtp.idleTimeoutMs with 421 4.4.2', async function () {
    const srv = await startServer({ config: { smtp: { idleTimeoutMs: 1000 } } });
    const net = await import('node:net');
    try {
      const text = await new Promise<string>((resolve, reject) => {
        let got = '';
        const sock = net.connect(srv.smtpPort, '127.0.0.1');
        sock.on('data', (d) => (got += d.toString()));
        sock.on('close', () => resolve(got));
        sock.on('error', reject);
      });
      expect(text).to.match(/^220 /);
      expect(text).to.match(/\r\n421 4\.4\.2 /);
    } finally {
      await srv.cleanup();
    }
  });

  it('answers 452 4.2.2 for a user over quota', async function () {
    const srv = await startServer({ config: { limits: { quotaBytes: 20_000 } } });
    try {
      const user = await addUser(srv, await makeGpgKey('ed25519'));
      const first = await swaks({ port: srv.smtpPort, to: `q@${user}.${srv.domain}`, data: rawMessage(marker(), { bodyBytes: 5000 }) });
      expect(first.last).to.match(/^250 /);
      // The second would pass the quota once encrypted: refused at the end of DATA, nothing kept.
      const second = await swaks({ port: srv.smtpPort, to: `q@${user}.${srv.domain}`, data: rawMessage(marker(), { bodyBytes: 10_000 }) });
      expect(second.last).to.match(/^452 4\.2\.2 /);
    } finally {
      await srv.cleanup();
    }
  });

  it('answers 452 4.3.1 when free disk is under the floor', async function () {
    const srv = await startServer({ config: { limits: { minFreeBytes: 2 ** 52 } } });
    try {
      const user = await addUser(srv, await makeGpgKey('ed25519'));
      const r = await swaks({ port: srv.smtpPort, to: `d@${user}.${srv.domain}`, body: 'x' });
      expect(r.last).to.match(/^452 4\.3\.1 /);
    } finally {
      await srv.cleanup();
    }
  });

  it('answers 450 4.7.1 for a key that has expired since signup (the sender retries)', async function () {
    const srv = await startServer();
    try {
      // A key valid for a few seconds: registered while valid, expired by the time mail comes.
      const key = await shortLivedKey(6);
      const user = await addUser(srv, key);
      await new Promise((r) => setTimeout(r, 7000));
      const r = await swaks({ port: srv.smtpPort, to: `e@${user}.${srv.domain}`, body: 'x' });
      expect(r.last).to.match(/^450 4\.7\.1 /);
    } finally {
      await srv.cleanup();
    }
  });

  it('routes postmaster@DOMAIN to the configured operator account', async function () {
    const srv = await startServer();
    const key = await makeGpgKey('ed25519');
    const user = await addUser(srv, key);
    await srv.stop();
    const again = await startServer({ base: srv.base, config: { postmaster: user } });
    try {
      const mark = marker();
      const msg = rawMessage(mark);
      const r = await swaks({ port: again.smtpPort, to: `PostMaster@${again.domain}`, data: msg });
      expect(r.last).to.match(/^250 /);
      const files = await newFiles(again.maildirRoot, user);
      expect(files).to.have.length(1);
      expectDelivered(await gpgDecryptPgpMime(key.gnupghome, await readFile(files[0]!)), msg, `PostMaster@${again.domain}`);
    } finally {
      await again.cleanup();
      await srv.cleanup();
    }
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A GnuPG key (ed25519 + cv25519) that expires `seconds` after it is made. */
async function shortLivedKey(seconds: number): Promise<TestKey> {
  const { dir } = await tempDir('kzymy-gpg-short-');
  const uid = 'Short <short@example.invalid>';
  await gpg(dir, ['--quick-gen-key', uid, 'ed25519', 'cert', `seconds=${seconds}`]);
  const fpr = /^fpr:+([0-9A-F]+):/m.exec((await gpg(dir, ['--list-keys', '--with-colons'])).toString())![1]!;
  await gpg(dir, ['--quick-add-key', fpr, 'cv25519', 'encr', `seconds=${seconds}`]);
  const publicArmored = (await gpg(dir, ['--armor', '--export', fpr])).toString();
  return { gnupghome: dir, fingerprint: fpr, publicArmored, secretArmored: '', secretKeyFile: '', uid };
}
