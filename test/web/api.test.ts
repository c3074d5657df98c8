// /api/v1 against a real server: real registry, Maildir, GnuPG keys and PGP/MIME files.
import { expect } from 'chai';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { deliveryHeaders, sealMessage } from '../../src/pgp/index.js';
import { allows } from '../../src/registry/index.js';
import { readFrames } from '../../src/client/frames.js';
import { gpg, gpgDecrypt, makeFreshGpgKey, makeGpgKey, requireGpg, requireSq, sqDecrypt, type TestKey } from '../helpers/gpg.js';
import {
  api,
  armoredPart,
  CHALLENGE_FORMAT,
  decryptChallenge,
  decryptCode,
  expectSecurityHeaders,
  gpgSign,
  login,
  loginAnswer,
  loginStatement,
  serverName,
  signupApi,
  startTestServer,
  type TestServer,
} from './harness.js';
import { pathsUnder } from '../helpers/mail.js';

/** Encrypts and stores a message the way the SMTP intake does. */
async function deliverMail(s: TestServer, username: string, mark: string): Promise<string> {
  const user = s.registry.get(username)!;
  const key = await s.deps.keys.get(user.fingerprint, user.keyId, () => s.registry.publicKey(user));
  const date = new Date();
  const raw = Buffer.from(`From: a@example.org\r\nTo: x@${username}.kzymy.test\r\nSubject: ${mark}\r\n\r\nBody ${mark}\r\n`);
  const plain = [
    deliveryHeaders({
      mailFrom: 'a@example.org',
      rcptTo: `x@${username}.kzymy.test`,
      heloName: 'mx.example.org',
      remoteAddress: '192.0.2.1',
      receivedBy: s.config.domain,
      id: randomBytes(4).toString('hex'),
      date,
      tls: false,
    }),
    raw,
  ];
  const file = await sealMessage(plain, { key, domain: s.config.domain, date });
  return (await s.maildir.deliver(username, file)).id;
}

/** A raw request (fetch would normalise `..` and friends). */
function rawRequest(s: TestServer, method: string, rawPath: string, token?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: s.port, method, path: rawPath, headers: token ? { authorization: `Bearer ${token}` } : {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function errCode(j: Record<string, unknown>): string {
  return (j.error as { code: string } | undefined)?.code ?? '';
}

async function filesUnder(dir: string): Promise<string[]> {
  return (await pathsUnder(dir)).map((p) => p.path);
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

describe('web: /api/v1', function () {
  let s: TestServer;
  let keyA: TestKey;
  let keyB: TestKey;
  let userA: string;
  let userB: string;
  let tokenA: string;
  let tokenB: string;

  before(async function () {
    requireGpg(this);
    s = await startTestServer();
    keyA = await makeFreshGpgKey('ed25519');
    keyB = await makeGpgKey('rsa3072');
    userA = await signupApi(s, keyA);
    userB = await signupApi(s, keyB);
    tokenA = await login(s, userA, keyA);
    tokenB = await login(s, userB, keyB);
  });
  after(async () => {
    await s?.close();
  });

  describe('conventions', () => {
    it('gives server information', async () => {
      const r = await api(s, 'GET', '/api/v1/info');
      expect(r.status).to.equal(200);
      expectSecurityHeaders(r.res);
      expect(r.json).to.deep.include({ version: 1, domain: 'kzymy.test', onion: null });
    });

    it('answers JSON errors: 404, 405, 415, 400, 413; never a stack', async () => {
      const nf = await api(s, 'GET', '/api/v1/nothing');
      expect(nf.status).to.equal(404);
      expect(nf.res.headers.get('content-type')).to.match(/^application\/json/);
      expect(errCode(nf.json)).to.equal('not-found');
      expectSecurityHeaders(nf.res);

      const na = await api(s, 'GET', '/api/v1/signup');
      expect(na.status).to.equal(405);
      expect(na.res.headers.get('allow')).to.include('POST');
      expect(errCode(na.json)).to.equal('method-not-allowed');

      const plain = await fetch(s.base + '/api/v1/signup', { method: 'POST', body: 'hello', headers: { 'content-type': 'text/plain' } });
      expect(plain.status).to.equal(415);

      const bad = await fetch(s.base + '/api/v1/signup', { method: 'POST', body: '{not json', headers: { 'content-type': 'application/json' } });
      expect(bad.status).to.equal(400);
      const badJson = (await bad.json()) as Record<string, unknown>;
      expect(errCode(badJson)).to.equal('bad-json');
      expect(JSON.stringify(badJson)).not.to.match(/at .*\.ts|stack|SyntaxError/);

      const big = await api(s, 'POST', '/api/v1/signup', { publicKey: 'A'.repeat(300 * 1024) });
      expect(big.status).to.equal(413);
      expect(errCode(big.json)).to.equal('too-large');
    });
  });

  describe('signup', () => {
    it('refuses a bad key, a wrong code, an unknown id; 5 wrong codes end it; a registered key only after its code', async () => {
      const garbage = await api(s, 'POST', '/api/v1/signup', { publicKey: 'garbage' });
      expect(garbage.status).to.equal(400);
      expect(errCode(garbage.json)).to.equal('bad-key');
      expect((garbage.json.error as { message: string }).message).to.match(/\.$/);

      const secret = await api(s, 'POST', '/api/v1/signup', { publicKey: keyA.secretArmored });
      expect(secret.status).to.equal(400);
      expect(JSON.stringify(secret.json)).not.to.include(keyA.secretArmored.split('\n')[3]!);

      // A registered key gets a challenge like any key; only its right code learns that it is taken.
      const registered = await api(s, 'POST', '/api/v1/signup', { publicKey: keyA.publicArmored });
      expect(registered.status).to.equal(201);
      const regCode = await decryptCode(keyA, registered.json.challenge as string);
      const taken = await api(s, 'POST', '/api/v1/signup/confirm', { signupId: registered.json.signupId, code: regCode });
      expect(taken.status).to.equal(409);
      expect(errCode(taken.json)).to.equal('key-registered');

      const k = await makeFreshGpgKey('ed25519');
      const start = await api(s, 'POST', '/api/v1/signup', { publicKey: k.publicArmored });
      expect(start.status).to.equal(201);
      expect(start.json.fingerprint).to.equal(k.fingerprint);
      expect(start.json.attemptsLeft).to.equal(5);
      for (let i = 4; i >= 1; i--) {
        const wrong = await api(s, 'POST', '/api/v1/signup/confirm', { signupId: start.json.signupId, code: 'zzzz-zzzz-zzzz-zzzz' });
        expect(wrong.status).to.equal(400);
        expect(errCode(wrong.json)).to.equal('wrong-code');
        expect((wrong.json.error as { message: string }).message).to.include(`${i} attempt`);
      }
      const fifth = await api(s, 'POST', '/api/v1/signup/confirm', { signupId: start.json.signupId, code: 'zzzz' });
      expect(fifth.status).to.equal(429);
      expect(errCode(fifth.json)).to.equal('too-many-attempts');
      const code = await decryptCode(k, start.json.challenge as string);
      const late = await api(s, 'POST', '/api/v1/signup/confirm', { signupId: start.json.signupId, code });
      expect(late.status).to.equal(404);
      expect(errCode(late.json)).to.equal('no-signup');
      expect(s.registry.findByFingerprint(k.fingerprint)).to.equal(undefined);
    });

    it('sends a challenge whose plaintext is exactly the six lines, byte for byte, for gpg and for sq', async function () {
      requireSq(this);
      const start = await api(s, 'POST', '/api/v1/signup', { publicKey: keyA.publicArmored });
      const armored = start.json.challenge as string;
      const viaGpg = await gpgDecrypt(keyA.gnupghome, armored);
      const viaSq = await sqDecrypt(keyA.secretKeyFile, armored);
      expect(viaSq.equals(viaGpg)).to.equal(true);
      const text = viaGpg.toString('utf8');
      expect(text).to.match(CHALLENGE_FORMAT);
      expect(text).not.to.include('\r');
      expect(text.split('\n').slice(0, 5)).to.deep.equal([
        'kzymy challenge v1',
        'purpose: signup',
        `server: ${serverName(s)}`,
        'username: -',
        `fingerprint: ${keyA.fingerprint}`,
      ]);
    });

    it('lets a pending signup expire', async () => {
      const k = await makeFreshGpgKey('ed25519');
      const start = await api(s, 'POST', '/api/v1/signup', { publicKey: k.publicArmored });
      const code = await decryptCode(k, start.json.challenge as string);
      s.clock.offsetMs = 15 * 60_000 + 1000;
      try {
        const late = await api(s, 'POST', '/api/v1/signup/confirm', { signupId: start.json.signupId, code });
        expect(late.status).to.equal(404);
        expect(errCode(late.json)).to.equal('no-signup');
      } finally {
        s.clock.offsetMs = 0;
      }
    });

    it('creates the account with a welcome message that the user can decrypt', async () => {
      const list = await api(s, 'GET', '/api/v1/messages', undefined, tokenA);
      expect(list.status).to.equal(200);
      const msgs = list.json.messages as Array<{ id: string }>;
      expect(msgs.length).to.be.greaterThan(0);
      const res = await fetch(`${s.base}/api/v1/messages/${encodeURIComponent(msgs[0]!.id)}`, { headers: { authorization: `Bearer ${tokenA}` } });
      const plain = (await gpgDecrypt(keyA.gnupghome, armoredPart(Buffer.from(await res.arrayBuffer())))).toString();
      expect(plain).to.include('Welcome to kzymy');
      expect(plain).to.include(`--username ${userA} --key ${keyA.fingerprint}`);
    });
  });

  describe('authentication', () => {
    it('refuses every account call without a valid token (401)', async () => {
      const calls: Array<[string, string, unknown?]> = [
        ['GET', '/api/v1/messages'],
        ['GET', '/api/v1/messages/1.M1P1Q1.host,S=1'],
        ['DELETE', '/api/v1/messages/1.M1P1Q1.host,S=1'],
        ['GET', '/api/v1/account'],
        ['DELETE', '/api/v1/account'],
        ['GET', '/api/v1/aliases'],
        ['PUT', '/api/v1/aliases/shop'],
        ['DELETE', '/api/v1/aliases/shop'],
        ['PUT', '/api/v1/blocked/shop'],
        ['PUT', '/api/v1/catch-all', { enabled: false }],
        ['POST', '/api/v1/key', { publicKey: keyA.publicArmored }],
        ['POST', '/api/v1/key/confirm', { rotationId: 'x', code: 'y' }],
        ['POST', '/api/v1/auth/logout'],
      ];
      for (const [method, p, body] of calls) {
        for (const token of [undefined, 'kzt_forged', tokenA.slice(0, -2) + 'xx']) {
          const r = await api(s, method, p, body, token);
          expect(r.status, `${method} ${p}`).to.equal(401);
          expect(errCode(r.json)).to.equal('unauthorized');
        }
      }
      expect(s.registry.get(userA)).to.not.equal(undefined);
    });

    it('refuses an unknown username and a replayed, forged, wrong or expired proof', async () => {
      const unknown = await api(s, 'POST', '/api/v1/auth/challenge', { username: 'nosuchuser00' });
      expect(unknown.status).to.equal(404);

      // A key that can sign gets no decryption challenge: nothing for a client to decrypt.
      const ch = await api(s, 'POST', '/api/v1/auth/challenge', { username: userA });
      expect(ch.status).to.equal(200);
      expect(ch.json).to.have.keys('challengeId', 'nonce', 'expiresAt', 'fingerprint');
      expect(ch.json.fingerprint).to.equal(keyA.fingerprint);

      // Replay: the right answer works once.
      const answer = await loginAnswer(s, userA, keyA, ch.json);
      const ok = await api(s, 'POST', '/api/v1/auth/token', answer);
      expect(ok.status).to.equal(200);
      expect(ok.json.username).to.equal(userA);
      const replay = await api(s, 'POST', '/api/v1/auth/token', answer);
      expect(replay.status).to.equal(401);
      expect(errCode(replay.json)).to.equal('bad-challenge');

      // A forged challenge id, and a real one with another user's name in it.
      const ch2 = await api(s, 'POST', '/api/v1/auth/challenge', { username: userA });
      const id2 = ch2.json.challengeId as string;
      const good2 = await loginAnswer(s, userA, keyA, ch2.json);
      const forged = id2.replace(/^[a-z0-9]+\./, `${userB}.`);
      expect((await api(s, 'POST', '/api/v1/auth/token', { ...good2, challengeId: forged })).status).to.equal(401);
      const later = id2.replace(/\.(\d+)\./, (_m, t: string) => `.${Number(t) + 3_600_000}.`);
      expect((await api(s, 'POST', '/api/v1/auth/token', { ...good2, challengeId: later })).status).to.equal(401);

      // Statements that are not exactly for this challenge, user, key and server.
      const sign = async (statement: string): Promise<Record<string, unknown>> => ({ challengeId: id2, statement, signature: await gpgSign(keyA, statement) });
      const nonce2 = ch2.json.nonce as string;
      const wrongStatements = [
        loginStatement('evil.example:80', userA, keyA.fingerprint, nonce2),
        loginStatement('abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz2345.onion', userA, keyA.fingerprint, nonce2),
        loginStatement(serverName(s), userB, keyA.fingerprint, nonce2),
        loginStatement(serverName(s), userA, keyB.fingerprint, nonce2),
        loginStatement(serverName(s), userA, keyA.fingerprint, ch.json.nonce as string),
        loginStatement(serverName(s), userA, keyA.fingerprint, nonce2).replace(/\n/g, '\r\n'),
        loginStatement(serverName(s), userA, keyA.fingerprint, nonce2) + 'extra\n',
      ];
      // Each failure counts against userA; past 10 they are answered 429 (still refused).
      const refused = (r: { status: number; json: Record<string, unknown> }, what: string): void => {
        expect([401, 429], what).to.include(r.status);
        expect(['bad-proof', 'rate-limited'], what).to.include(errCode(r.json));
      };
      for (const st of wrongStatements) refused(await api(s, 'POST', '/api/v1/auth/token', await sign(st)), st);
      // A signature by another key, over the right statement.
      const right2 = good2.statement as string;
      refused(await api(s, 'POST', '/api/v1/auth/token', { challengeId: id2, statement: right2, signature: await gpgSign(keyB, right2) }), 'by B');
      // A signature of keyA over another text.
      refused(await api(s, 'POST', '/api/v1/auth/token', { challengeId: id2, statement: right2, signature: await gpgSign(keyA, right2 + 'x') }), 'other text');
      // Junk signatures and a code for a key that signs.
      for (const signature of ['', 'x'.repeat(9000), '-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n', keyA.publicArmored]) {
        refused(await api(s, 'POST', '/api/v1/auth/token', { challengeId: id2, statement: right2, signature }), signature.slice(0, 40));
      }
      refused(await api(s, 'POST', '/api/v1/auth/token', { challengeId: id2, code: 'abcd-efgh-ijkl-mnop' }), 'code');
      // None of that used the challenge up, and the failures do not lock her out: the right proof works.
      expect((await api(s, 'POST', '/api/v1/auth/token', good2)).status).to.equal(200);

      // Expiry.
      const ch3 = await api(s, 'POST', '/api/v1/auth/challenge', { username: userA });
      const answer3 = await loginAnswer(s, userA, keyA, ch3.json);
      s.clock.offsetMs = 5 * 60_000 + 1000;
      try {
        const late = await api(s, 'POST', '/api/v1/auth/token', answer3);
        expect(late.status).to.equal(401);
        expect(errCode(late.json)).to.equal('bad-challenge');
      } finally {
        s.clock.offsetMs = 0;
      }
    });

    it('expires tokens, and ends one on logout', async () => {
      const t = await login(s, userA, keyA);
      expect((await api(s, 'GET', '/api/v1/account', undefined, t)).status).to.equal(200);
      s.clock.offsetMs = 30 * 60_000 + 1000;
      try {
        expect((await api(s, 'GET', '/api/v1/account', undefined, t)).status).to.equal(401);
      } finally {
        s.clock.offsetMs = 0;
      }
      const t2 = await login(s, userA, keyA);
      expect((await api(s, 'POST', '/api/v1/auth/logout', undefined, t2)).status).to.equal(200);
      expect((await api(s, 'GET', '/api/v1/account', undefined, t2)).status).to.equal(401);
    });

    it('answers 403 with a sentence for a disabled account', async () => {
      const k = await makeFreshGpgKey('ed25519');
      const u = await signupApi(s, k);
      const t = await login(s, u, k);
      await s.registry.setDisabled(u, true);
      const r = await api(s, 'GET', '/api/v1/messages', undefined, t);
      expect(r.status).to.equal(403);
      expect(errCode(r.json)).to.equal('account-disabled');
      expect((r.json.error as { message: string }).message).to.match(/disabled/);
      const ch = await api(s, 'POST', '/api/v1/auth/challenge', { username: u });
      expect(ch.status).to.equal(403);
    });

    it('rate-limits failed proofs per username, never the right one', async () => {
      const k = await makeFreshGpgKey('ed25519');
      const u = await signupApi(s, k);
      let limited = false;
      for (let i = 0; i < 15 && !limited; i++) {
        const ch = await api(s, 'POST', '/api/v1/auth/challenge', { username: u });
        expect(ch.status).to.equal(200);
        const r = await api(s, 'POST', '/api/v1/auth/token', { challengeId: ch.json.challengeId, code: 'zzzz-zzzz-zzzz-zzzz' });
        if (r.status === 429) {
          limited = true;
          expect(r.res.headers.get('retry-after')).to.match(/^\d+$/);
        } else expect(r.status).to.equal(401);
      }
      expect(limited).to.equal(true);
      expect(await login(s, u, k)).to.match(/^kzt_/);
    });
  });

  describe('pickup', () => {
    it("never lets user A's token list, read or acknowledge user B's mail", async () => {
      const idB = await deliverMail(s, userB, 'FOR-B-ONLY');
      const listA = await api(s, 'GET', '/api/v1/messages', undefined, tokenA);
      expect((listA.json.messages as Array<{ id: string }>).map((m) => m.id)).not.to.include(idB);
      const read = await api(s, 'GET', `/api/v1/messages/${encodeURIComponent(idB)}`, undefined, tokenA);
      expect(read.status).to.equal(404);
      expect(errCode(read.json)).to.equal('no-such-message');
      const ack = await api(s, 'DELETE', `/api/v1/messages/${encodeURIComponent(idB)}`, undefined, tokenA);
      expect(ack.status).to.equal(404);
      expect(await exists(path.join(s.config.maildirRoot, userB, 'new', idB))).to.equal(true);
      const listB = await api(s, 'GET', '/api/v1/messages', undefined, tokenB);
      expect((listB.json.messages as Array<{ id: string }>).map((m) => m.id)).to.include(idB);
    });

    it('downloads the stored file; an unacknowledged message is listed again; an acknowledged one is gone', async () => {
      const id = await deliverMail(s, userA, 'PICKUP-MARK');
      const stored = await readFile(path.join(s.config.maildirRoot, userA, 'new', id));
      const res = await fetch(`${s.base}/api/v1/messages/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${tokenA}` } });
      expect(res.status).to.equal(200);
      expect(res.headers.get('content-type')).to.equal('message/rfc822');
      expectSecurityHeaders(res);
      const body = Buffer.from(await res.arrayBuffer());
      expect(body.equals(stored)).to.equal(true);
      expect(Number(res.headers.get('content-length'))).to.equal(stored.length);
      const plain = (await gpgDecrypt(keyA.gnupghome, armoredPart(body))).toString();
      expect(plain).to.include('Subject: PICKUP-MARK');

      const again = await api(s, 'GET', '/api/v1/messages', undefined, tokenA);
      const entry = (again.json.messages as Array<{ id: string; size: number; receivedAt: string }>).find((m) => m.id === id)!;
      expect(entry.size).to.equal(stored.length);
      expect(new Date(entry.receivedAt).getTime()).to.be.closeTo(Date.now(), 60_000);

      const ack = await api(s, 'DELETE', `/api/v1/messages/${encodeURIComponent(id)}`, undefined, tokenA);
      expect(ack.status).to.equal(200);
      expect(ack.json.deleted).to.equal(id);
      const files = await filesUnder(path.join(s.config.maildirRoot, userA));
      expect(files.some((f) => f.includes(id.split(',')[0]!))).to.equal(false);
      const list = await api(s, 'GET', '/api/v1/messages', undefined, tokenA);
      expect((list.json.messages as Array<{ id: string }>).map((m) => m.id)).not.to.include(id);
      expect((await api(s, 'DELETE', `/api/v1/messages/${encodeURIComponent(id)}`, undefined, tokenA)).status).to.equal(404);
      expect((await api(s, 'GET', `/api/v1/messages/${encodeURIComponent(id)}`, undefined, tokenA)).status).to.equal(404);
    });

    it("downloads a batch in frames, in the order asked: the caller's own messages whole, another user's or an unknown id only as gone", async () => {
      const a1 = await deliverMail(s, userA, 'FRAME-1');
      const idB = await deliverMail(s, userB, 'FRAME-FOR-B');
      const unknown = '1700000000.M1P1Q1.nowhere,S=10';
      // Larger than what is read whole: sent from a stream, in the same framing.
      const large = '1700000001.M2P2Q2.test,S=300000';
      const largeBytes = randomBytes(300_000);
      await writeFile(path.join(s.config.maildirRoot, userA, 'new', large), largeBytes);
      const ids = [a1, idB, unknown, large, a1];
      const res = await fetch(`${s.base}/api/v1/messages/download`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tokenA}`, 'content-type': 'application/json' },
        body: JSON.stringify({ ids }),
      });
      expect(res.status).to.equal(200);
      expect(res.headers.get('content-type')).to.equal('application/vnd.kzymy.messages');
      expectSecurityHeaders(res);
      const raw = Buffer.from(await res.arrayBuffer());
      const stored = await readFile(path.join(s.config.maildirRoot, userA, 'new', a1));
      expect(raw.subarray(0, a1.length + 1 + String(stored.length).length + 1).toString()).to.equal(`${a1} ${stored.length}\n`);
      const fail = { hostile: (why: string) => new Error(why), broke: () => new Error('cut') };
      const wanted = ids.map((id) => ({ id, listed: id === a1 ? stored.length : id === large ? largeBytes.length : 0 }));
      const got: Array<Buffer | null> = [];
      for await (const f of readFrames((async function* () { yield raw; })(), wanted, fail)) got.push(f.bytes);
      expect(got[0]!.equals(stored)).to.equal(true);
      expect(got[1], "B's message is never sent to A").to.equal(null);
      expect(got[2]).to.equal(null);
      expect(got[3]!.equals(largeBytes)).to.equal(true);
      expect(got[4]!.equals(stored)).to.equal(true);
      expect(raw.includes(Buffer.from('FRAME-FOR-B'))).to.equal(false);
      // A download deletes nothing.
      expect(await exists(path.join(s.config.maildirRoot, userA, 'new', a1))).to.equal(true);
      expect(await exists(path.join(s.config.maildirRoot, userB, 'new', idB))).to.equal(true);
      await api(s, 'POST', '/api/v1/messages/acknowledge', { ids: [a1, large] }, tokenA);
    });

    it('refuses a batch download that names a bad id or is not a list of 1 to 100 ids; nothing is sent', async () => {
      const id = await deliverMail(s, userA, 'FRAME-KEPT');
      const bad: Array<[unknown, string]> = [
        [{ ids: [id, `../${userB}/new/x`] }, 'bad-id'],
        [{ ids: [id, 'a\u0000b'] }, 'bad-id'],
        [{ ids: [] }, 'bad-request'],
        [{ ids: id }, 'bad-request'],
        [{ ids: Array.from({ length: 101 }, () => id) }, 'bad-request'],
      ];
      for (const [body, code] of bad) {
        const r = await api(s, 'POST', '/api/v1/messages/download', body, tokenA);
        expect(r.status, JSON.stringify(body).slice(0, 80)).to.equal(400);
        expect(errCode(r.json)).to.equal(code);
        expect(JSON.stringify(r.json)).not.to.include('FRAME-KEPT');
      }
      expect((await api(s, 'POST', '/api/v1/messages/download', { ids: [id] })).status, 'no token').to.equal(401);
      await api(s, 'POST', '/api/v1/messages/acknowledge', { ids: [id] }, tokenA);
    });

    it("acknowledges a batch: deletes only the caller's own messages; another user's id or an unknown one is only reported missing", async () => {
      const mine = [await deliverMail(s, userA, 'BATCH-1'), await deliverMail(s, userA, 'BATCH-2')];
      const idB = await deliverMail(s, userB, 'BATCH-FOR-B');
      const unknown = '1700000000.M1P1Q1.nowhere,S=10';
      const r = await api(s, 'POST', '/api/v1/messages/acknowledge', { ids: [mine[0], idB, unknown, mine[1], mine[0]] }, tokenA);
      expect(r.status, JSON.stringify(r.json)).to.equal(200);
      expect(r.json.deleted).to.deep.equal(mine);
      expect(r.json.missing).to.deep.equal([idB, unknown, mine[0]]);
      for (const id of mine) expect(await exists(path.join(s.config.maildirRoot, userA, 'new', id))).to.equal(false);
      expect(await exists(path.join(s.config.maildirRoot, userB, 'new', idB)), "B's message stays").to.equal(true);
      const listB = await api(s, 'GET', '/api/v1/messages', undefined, tokenB);
      expect((listB.json.messages as Array<{ id: string }>).map((m) => m.id)).to.include(idB);
    });

    it('refuses a whole batch that names a bad id (a path, "..") or is not a list of 1 to 500 ids; nothing is deleted', async () => {
      const id = await deliverMail(s, userA, 'BATCH-KEPT');
      const before = await filesUnder(s.config.maildirRoot);
      const bad: Array<[unknown, string]> = [
        [{ ids: [id, `../${userB}/new/x`] }, 'bad-id'],
        [{ ids: [id, '..'] }, 'bad-id'],
        [{ ids: [id, 'a/b'] }, 'bad-id'],
        [{ ids: [id, 'a\u0000b'] }, 'bad-id'],
        [{ ids: [] }, 'bad-request'],
        [{ ids: id }, 'bad-request'],
        [{ ids: [id, 7] }, 'bad-request'],
        [{ ids: Array.from({ length: 501 }, () => id) }, 'bad-request'],
        [{}, 'bad-request'],
      ];
      for (const [body, code] of bad) {
        const r = await api(s, 'POST', '/api/v1/messages/acknowledge', body, tokenA);
        expect(r.status, JSON.stringify(body).slice(0, 80)).to.equal(400);
        expect(errCode(r.json)).to.equal(code);
      }
      expect((await api(s, 'POST', '/api/v1/messages/acknowledge', { ids: [id] })).status, 'no token').to.equal(401);
      expect(await filesUnder(s.config.maildirRoot)).to.deep.equal(before);
      expect((await api(s, 'POST', '/api/v1/messages/acknowledge', { ids: [id] }, tokenA)).json.deleted).to.deep.equal([id]);
    });

    it('answers 400 to ids with "/", "..", NUL or odd characters', async () => {
      const before = await filesUnder(s.config.maildirRoot);
      const bad = [
        '/api/v1/messages/..',
        '/api/v1/messages/%2E%2E',
        '/api/v1/messages/..%2F..%2Fdata%2Fregistry.json',
        '/api/v1/messages/a%2Fb',
        `/api/v1/messages/${encodeURIComponent('../' + userB + '/new/x')}`,
        '/api/v1/messages/a%00b',
        '/api/v1/messages/a/b',
        '/api/v1/messages/a%20b',
        '/api/v1/messages/%ZZ',
      ];
      for (const p of bad) {
        for (const method of ['GET', 'DELETE']) {
          const r = await rawRequest(s, method, p, tokenA);
          expect(r.status, `${method} ${p}: ${r.body}`).to.equal(400);
          expect(JSON.parse(r.body).error.code).to.equal('bad-id');
        }
      }
      expect(await filesUnder(s.config.maildirRoot)).to.deep.equal(before);
    });
  });

  describe('account', () => {
    it('shows status and usage', async () => {
      const r = await api(s, 'GET', '/api/v1/account', undefined, tokenB);
      expect(r.status).to.equal(200);
      expect(r.json).to.include({ username: userB, fingerprint: keyB.fingerprint, catchAll: true, mailDomain: `${userB}.kzymy.test` });
      const m = r.json.messages as { count: number; bytes: number };
      expect(m.count).to.be.greaterThan(0);
      expect(m.bytes).to.be.greaterThan(0);
      expect(r.json.quotaBytes).to.equal(s.config.limits.quotaBytes);
    });

    it('lists, adds, blocks and removes aliases and switches catch-all', async () => {
      const t = tokenA;
      expect((await api(s, 'GET', '/api/v1/aliases', undefined, t)).json).to.deep.equal({ catchAll: true, aliases: [], blocked: [] });
      let r = await api(s, 'PUT', '/api/v1/blocked/spam', undefined, t);
      expect(r.json).to.deep.equal({ catchAll: true, aliases: [], blocked: ['spam'] });
      expect(allows(s.registry.get(userA)!, 'spam')).to.equal(false);
      expect(allows(s.registry.get(userA)!, 'other')).to.equal(true);
      r = await api(s, 'PUT', '/api/v1/catch-all', { enabled: false }, t);
      expect(r.json.catchAll).to.equal(false);
      expect(allows(s.registry.get(userA)!, 'shop')).to.equal(false);
      r = await api(s, 'PUT', `/api/v1/aliases/${encodeURIComponent('Shop+News')}`, undefined, t);
      expect(r.json.aliases).to.deep.equal(['shop+news']);
      expect(allows(s.registry.get(userA)!, 'shop+news')).to.equal(true);
      r = await api(s, 'DELETE', `/api/v1/aliases/${encodeURIComponent('shop+news')}`, undefined, t);
      expect(r.json.aliases).to.deep.equal([]);
      r = await api(s, 'DELETE', '/api/v1/aliases/spam', undefined, t);
      expect(r.json.blocked).to.deep.equal([]);
      r = await api(s, 'PUT', '/api/v1/catch-all', { enabled: true }, t);
      expect(r.json.catchAll).to.equal(true);
      const bad = await api(s, 'PUT', `/api/v1/aliases/${encodeURIComponent('a b@c')}`, undefined, t);
      expect(bad.status).to.equal(400);
      expect(errCode(bad.json)).to.equal('bad-local-part');
      const badSwitch = await api(s, 'PUT', '/api/v1/catch-all', { enabled: 'yes' }, t);
      expect(badSwitch.status).to.equal(400);
      // B's policy is untouched by all this.
      expect(s.registry.get(userB)!.blocked).to.deep.equal([]);
    });

    it('updates the key with a new expiry (same fingerprint) directly', async () => {
      const k = await makeFreshGpgKey('ed25519');
      const u = await signupApi(s, k);
      const t = await login(s, u, k);
      expect(s.registry.get(u)!.keyExpiresAt).to.equal(null);
      await gpg(k.gnupghome, ['--quick-set-expire', k.fingerprint, '2y']);
      await gpg(k.gnupghome, ['--quick-set-expire', k.fingerprint, '2y', '*']);
      const updated = (await gpg(k.gnupghome, ['--armor', '--export', k.fingerprint])).toString();
      const r = await api(s, 'POST', '/api/v1/key', { publicKey: updated }, t);
      expect(r.status, JSON.stringify(r.json)).to.equal(200);
      expect(r.json.status).to.equal('updated');
      expect(r.json.fingerprint).to.equal(k.fingerprint);
      const exp = new Date(r.json.keyExpiresAt as string).getTime();
      expect(exp).to.be.greaterThan(Date.now() + 700 * 86_400_000);
      expect(s.registry.get(u)!.keyExpiresAt).to.equal(r.json.keyExpiresAt);
    });

    it('rotates to a new key only after the new key answers its challenge; new mail is for the new key only', async () => {
      const oldKey = await makeFreshGpgKey('ed25519');
      const newKey = await makeFreshGpgKey('ed25519');
      const u = await signupApi(s, oldKey);
      const t = await login(s, u, oldKey);
      const other = await login(s, u, oldKey);

      // Someone else's key is refused, and only after its challenge is answered.
      const taken = await api(s, 'POST', '/api/v1/key', { publicKey: keyB.publicArmored }, t);
      expect(taken.status).to.equal(202);
      const takenCode = await decryptChallenge(keyB, taken.json.challenge as string);
      expect(takenCode).to.include({ purpose: 'rotate', username: u, fingerprint: keyB.fingerprint, server: serverName(s) });
      const takenDone = await api(s, 'POST', '/api/v1/key/confirm', { rotationId: taken.json.rotationId, code: takenCode.code }, t);
      expect(takenDone.status).to.equal(409);
      expect(errCode(takenDone.json)).to.equal('key-registered');
      expect(s.registry.get(u)!.fingerprint).to.equal(oldKey.fingerprint);

      const r1 = await api(s, 'POST', '/api/v1/key', { publicKey: newKey.publicArmored }, t);
      expect(r1.status).to.equal(202);
      expect(r1.json.status).to.equal('confirm');
      expect(r1.json.fingerprint).to.equal(newKey.fingerprint);
      // The challenge is for the new key, not the old one.
      await decryptCode(oldKey, r1.json.challenge as string).then(
        () => expect.fail('the old key decrypted the rotation challenge'),
        () => undefined,
      );
      expect(s.registry.get(u)!.fingerprint).to.equal(oldKey.fingerprint);
      const wrong = await api(s, 'POST', '/api/v1/key/confirm', { rotationId: r1.json.rotationId, code: 'nope' }, t);
      expect(wrong.status).to.equal(400);
      expect(errCode(wrong.json)).to.equal('wrong-code');
      expect(s.registry.get(u)!.fingerprint).to.equal(oldKey.fingerprint, 'old key kept until proof');
      const code1 = await decryptCode(newKey, r1.json.challenge as string);
      const used = await api(s, 'POST', '/api/v1/key/confirm', { rotationId: r1.json.rotationId, code: code1 }, t);
      expect(used.status).to.equal(404);

      const r2 = await api(s, 'POST', '/api/v1/key', { publicKey: newKey.publicArmored }, t);
      const code2 = await decryptCode(newKey, r2.json.challenge as string);
      // Another user's token cannot confirm it.
      expect((await api(s, 'POST', '/api/v1/key/confirm', { rotationId: r2.json.rotationId, code: code2 }, tokenB)).status).to.equal(404);
      const r3 = await api(s, 'POST', '/api/v1/key', { publicKey: newKey.publicArmored }, t);
      const code3 = await decryptCode(newKey, r3.json.challenge as string);
      const done = await api(s, 'POST', '/api/v1/key/confirm', { rotationId: r3.json.rotationId, code: code3 }, t);
      expect(done.status, JSON.stringify(done.json)).to.equal(200);
      expect(done.json).to.include({ status: 'rotated', fingerprint: newKey.fingerprint });
      expect(s.registry.get(u)!.fingerprint).to.equal(newKey.fingerprint);
      expect(s.registry.findByFingerprint(oldKey.fingerprint)).to.equal(undefined);

      // The calling token lives on; the user's other tokens end.
      expect((await api(s, 'GET', '/api/v1/account', undefined, t)).status).to.equal(200);
      expect((await api(s, 'GET', '/api/v1/account', undefined, other)).status).to.equal(401);

      // New mail, encrypted as the SMTP path does, opens with the new key only.
      const id = await deliverMail(s, u, 'AFTER-ROTATION');
      const res = await fetch(`${s.base}/api/v1/messages/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${t}` } });
      const file = Buffer.from(await res.arrayBuffer());
      expect((await gpgDecrypt(newKey.gnupghome, armoredPart(file))).toString()).to.include('AFTER-ROTATION');
      await gpgDecrypt(oldKey.gnupghome, armoredPart(file)).then(
        () => expect.fail('the old key decrypted mail sent after the rotation'),
        () => undefined,
      );
      // And login now needs the new key.
      const ch = await api(s, 'POST', '/api/v1/auth/challenge', { username: u });
      expect(ch.json.fingerprint).to.equal(newKey.fingerprint);
      const st = loginStatement(serverName(s), u, newKey.fingerprint, ch.json.nonce as string);
      const byOld = await api(s, 'POST', '/api/v1/auth/token', { challengeId: ch.json.challengeId, statement: st, signature: await gpgSign(oldKey, st) });
      expect(byOld.status).to.equal(401);
      expect(await login(s, u, newKey)).to.match(/^kzt_/);
    });

    it('deletes the account: no file of the user remains, the token ends', async () => {
      const k = await makeFreshGpgKey('ed25519');
      const u = await signupApi(s, k);
      const t = await login(s, u, k);
      await deliverMail(s, u, 'DOOMED');
      expect(await exists(path.join(s.config.maildirRoot, u))).to.equal(true);
      const r = await api(s, 'DELETE', '/api/v1/account', undefined, t);
      expect(r.status).to.equal(200);
      expect(r.json.deleted).to.equal(u);
      expect(await exists(path.join(s.config.maildirRoot, u))).to.equal(false);
      expect(s.registry.get(u)).to.equal(undefined);
      const all = [...(await filesUnder(s.config.maildirRoot)), ...(await filesUnder(s.config.dataDir))];
      expect(all.filter((f) => f.includes(u))).to.deep.equal([]);
      for (const f of await filesUnder(s.config.dataDir)) {
        if ((await stat(f)).isFile()) {
          const text = await readFile(f, 'utf8');
          expect(text).not.to.include(u);
          expect(text).not.to.include(k.fingerprint);
        }
      }
      expect((await api(s, 'GET', '/api/v1/messages', undefined, t)).status).to.equal(401);
      expect((await api(s, 'POST', '/api/v1/auth/challenge', { username: u })).status).to.equal(404);
    });
  });

  describe('logs', () => {
    it('hold no username, fingerprint, address or token at info, and no stack', () => {
      const text = s.logs.join('');
      expect(text.length).to.be.greaterThan(0);
      for (const secret of [userA, userB, keyA.fingerprint, keyB.fingerprint, '127.0.0.1', 'kzt_']) {
        expect(text).not.to.include(secret);
      }
      expect(text).not.to.match(/"stack"|\n\s+at /);
      expect(text).to.include('"route":"/api/v1/messages/:id"');
    });
  });
});
