// The signup pages against a real server: real registry, Maildir and GnuPG keys.
import { expect } from 'chai';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { gpg, gpgDecrypt, makeFreshGpgKey, makeGpgKey, requireGpg, type TestKey } from '../helpers/gpg.js';
import { tempDir } from '../helpers/env.js';
import {
  armoredPart,
  byId,
  decryptChallenge,
  decryptCode,
  expectGoodPage,
  expectSecurityHeaders,
  field,
  startTestServer,
  type TestServer,
} from './harness.js';

interface Page {
  res: Response;
  body: string;
}

async function get(s: TestServer, p: string): Promise<Page> {
  const res = await fetch(s.base + p, { redirect: 'manual' });
  return { res, body: await res.text() };
}

/** The front page form, as a browser sends it (multipart). */
async function postKey(s: TestServer, key: string, opts: { csrf?: string; file?: Buffer } = {}): Promise<Page> {
  const csrf = opts.csrf ?? field((await get(s, '/')).body, 'csrf');
  const fd = new FormData();
  fd.set('csrf', csrf);
  fd.set('key', key);
  if (opts.file) fd.set('keyfile', new Blob([new Uint8Array(opts.file)], { type: 'application/pgp-keys' }), 'key.asc');
  else fd.set('keyfile', new Blob([]), '');
  const res = await fetch(s.base + '/signup', { method: 'POST', body: fd, redirect: 'manual' });
  return { res, body: await res.text() };
}

async function postCode(s: TestServer, challengePage: string, code: string, csrf?: string): Promise<Page> {
  const form = new URLSearchParams({ signup: field(challengePage, 'signup'), csrf: csrf ?? field(challengePage, 'csrf'), code });
  const res = await fetch(s.base + '/signup/confirm', { method: 'POST', body: form, redirect: 'manual' });
  return { res, body: await res.text() };
}

async function userCount(s: TestServer): Promise<number> {
  return s.registry.list().length;
}

describe('web: signup pages', function () {
  let s: TestServer;
  let key: TestKey;

  before(async function () {
    requireGpg(this);
    s = await startTestServer({ onion: 'kzymyexampleonionaddressxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion' });
    key = await makeFreshGpgKey('ed25519');
  });
  after(async () => {
    await s?.close();
  });

  it('serves a front page with the form and what kzymy protects and does not', async () => {
    const { res, body } = await get(s, '/');
    expect(res.status).to.equal(200);
    await expectGoodPage(res, body);
    expect(body).to.include('<meta name="viewport"');
    expect(body).to.include('What kzymy protects, and what it does not');
    expect(body).to.match(/not secret in transit/);
    expect(body).to.match(/fresh key for each identity/);
    expect(body).to.match(/when mail arrives/);
    expect(body).to.include('name="csrf"');
    expect(body).to.include('enctype="multipart/form-data"');
  });

  it('serves its own stylesheet with the security headers', async () => {
    const { res, body } = await get(s, '/style.css');
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.match(/^text\/css/);
    expectSecurityHeaders(res);
    expect(body).to.include('pre{');
    expect(body).not.to.match(/url\(|@import/);
  });

  it('answers 404 and 405 with a human page', async () => {
    const nf = await get(s, '/no/such/page');
    expect(nf.res.status).to.equal(404);
    await expectGoodPage(nf.res, nf.body);
    expect(nf.body).to.include('There is nothing at this address.');
    const res = await fetch(s.base + '/', { method: 'DELETE' });
    expect(res.status).to.equal(405);
    expect(res.headers.get('allow')).to.match(/GET/);
    await expectGoodPage(res, await res.text());
    // A reload of a form address goes back to the start.
    const back = await get(s, '/signup');
    expect(back.res.status).to.equal(303);
    expect(back.res.headers.get('location')).to.equal('/');
    expectSecurityHeaders(back.res);
  });

  it('refuses a form that is far too large with 413 and a page', async () => {
    const big = Buffer.alloc(200 * 1024, 'A');
    const { res, body } = await postKey(s, '', { file: big });
    expect(res.status).to.equal(413);
    await expectGoodPage(res, body);
    expect(body).to.match(/64 KiB/);
  });

  it('refuses a post without a valid form token (anti-CSRF)', async () => {
    const { res, body } = await postKey(s, key.publicArmored, { csrf: '1.forged' });
    expect(res.status).to.equal(400);
    await expectGoodPage(res, body);
    expect(byId(body, 'error')).to.match(/did not come from this site/);
    expect(await userCount(s)).to.equal(0);
  });

  it('signs up with a pasted key: fingerprint, challenge, code, account, welcome mail', async () => {
    const before = await userCount(s);
    const step1 = await postKey(s, key.publicArmored);
    expect(step1.res.status).to.equal(200);
    await expectGoodPage(step1.res, step1.body);
    expect(byId(step1.body, 'fingerprint').replace(/\s/g, '')).to.equal(key.fingerprint);
    expect(step1.body).to.include('gpg --decrypt');
    const challenge = byId(step1.body, 'challenge');
    expect(challenge).to.match(/^-----BEGIN PGP MESSAGE-----/);
    // Nothing exists before the code comes back.
    expect(await userCount(s)).to.equal(before);

    const decrypted = await decryptChallenge(key, challenge);
    expect(decrypted).to.include({ purpose: 'signup', server: `127.0.0.1:${s.port}`, username: '-', fingerprint: key.fingerprint });
    expect(step1.body).to.include('code:');
    // A person may paste all six lines gpg printed: the code line is taken from them.
    const step2 = await postCode(s, step1.body, decrypted.text);
    expect(step2.res.status).to.equal(200);
    await expectGoodPage(step2.res, step2.body);
    const username = byId(step2.body, 'username');
    expect(username).to.match(/^[a-z][a-z0-9]{11}$/);
    expect(byId(step2.body, 'mail-domain')).to.equal(`${username}.kzymy.test`);
    expect(step2.body).to.include(`anything@${username}.kzymy.test`);
    const onion = 'kzymyexampleonionaddressxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion';
    expect(byId(step2.body, 'onion')).to.equal(onion);
    expect(step2.body).to.include(
      `node kzymy-client.mjs fetch --server http://${onion} --username ${username} --key ${key.fingerprint} --maildir ~/Maildir --decrypt`,
    );

    const user = s.registry.get(username)!;
    expect(user.fingerprint).to.equal(key.fingerprint);
    expect(await s.registry.publicKey(user)).not.to.match(/PRIVATE/);
    // The welcome message waits, encrypted; gpg reads it.
    const files = await readdir(path.join(s.config.maildirRoot, username, 'new'));
    expect(files).to.have.length(1);
    const stored = await readFile(path.join(s.config.maildirRoot, username, 'new', files[0]!));
    expect(stored.toString()).to.include('multipart/encrypted');
    expect(stored.toString()).not.to.include('Welcome to kzymy');
    const plain = (await gpgDecrypt(key.gnupghome, armoredPart(stored))).toString('utf8');
    expect(plain).to.include('Subject: Welcome to kzymy');
    expect(plain).to.include(`anything@${username}.kzymy.test`);

    // The same key again, by a stranger who holds only the public key: the same answer
    // as for a fresh key, a challenge page; nothing tells that the key has an account.
    const fresh = await makeFreshGpgKey('ed25519');
    const again = await postKey(s, key.publicArmored);
    const other = await postKey(s, fresh.publicArmored);
    expect(again.res.status).to.equal(other.res.status);
    await expectGoodPage(again.res, again.body);
    const shape = (body: string): string =>
      body
        .replace(/<code class="fpr" id="fingerprint">[^<]*</, '<FPR<')
        .replace(/<pre id="challenge">[^<]*</, '<CHALLENGE<')
        .replace(/value="[^"]*"/g, 'value=""')
        .replace(/until \d\d:\d\d UTC/, 'until HH:MM UTC');
    expect(shape(again.body)).to.equal(shape(other.body));
    expect(again.body).not.to.match(/already registered/);
    // Only the key's holder, with the right code, learns it: refused, one key one account.
    const taken = await postCode(s, again.body, await decryptCode(key, byId(again.body, 'challenge')));
    expect(taken.res.status).to.equal(409);
    await expectGoodPage(taken.res, taken.body);
    expect(byId(taken.body, 'error')).to.match(/already registered/);
    expect(await userCount(s)).to.equal(before + 1);

    // Info logs hold no username, fingerprint or address.
    const logText = s.logs.join('');
    expect(logText).not.to.include(username);
    expect(logText).not.to.include(key.fingerprint);
    expect(logText).not.to.include('127.0.0.1');
    expect(logText).to.include('"route":"/signup/confirm"');
  });

  it('names an uploaded secret key file as a secret key, and echoes nothing of it', async () => {
    const secret = (await makeGpgKey('ed25519')).secretArmored;
    const { res, body } = await postKey(s, '', { file: Buffer.from(secret) });
    expect(res.status).to.equal(400);
    await expectGoodPage(res, body);
    expect(byId(body, 'error')).to.match(/SECRET key/);
    expect(body).not.to.include(secret.split('\n').find((l) => l.length > 60)!);
  });

  it('signs up with an uploaded key file', async () => {
    const k = await makeFreshGpgKey('ed25519');
    const step1 = await postKey(s, '', { file: Buffer.from(k.publicArmored) });
    expect(step1.res.status).to.equal(200);
    expect(byId(step1.body, 'fingerprint').replace(/\s/g, '')).to.equal(k.fingerprint);
    const step2 = await postCode(s, step1.body, await decryptCode(k, byId(step1.body, 'challenge')));
    expect(step2.res.status).to.equal(200);
    expect(s.registry.findByFingerprint(k.fingerprint)).to.not.equal(undefined);
  });

  describe('refuses bad keys with a sentence and creates nothing', function () {
    const cases: Array<[string, () => Promise<string>, RegExp?]> = [
      ['an empty form', async () => ''],
      ['garbage', async () => 'hello, this is not a key at all'],
      ['a broken armor', async () => '-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n'],
      ['a secret key', async () => (await makeGpgKey('ed25519')).secretArmored],
      [
        'two keys in one armor',
        async () => {
          const a = await makeFreshGpgKey('ed25519');
          const b = await makeFreshGpgKey('ed25519');
          const { dir, cleanup } = await tempDir('kzymy-two-');
          try {
            await gpg(dir, ['--import'], a.publicArmored + b.publicArmored);
            return (await gpg(dir, ['--armor', '--export'])).toString('utf8');
          } finally {
            await gpg(dir, ['--kill', 'gpg-agent']).catch(() => undefined);
            await cleanup();
          }
        },
      ],
      ['rsa1024', async () => (await makeGpgKey('rsa1024')).publicArmored],
      ['an expired key', async () => (await makeGpgKey('expired')).publicArmored],
      ['a revoked key', async () => (await makeGpgKey('revoked')).publicArmored],
      ['a sign-only key', async () => (await makeGpgKey('sign-only')).publicArmored],
      ['a DSA/ElGamal key', async () => (await makeGpgKey('dsa')).publicArmored],
    ];
    for (const [name, make] of cases) {
      it(name, async () => {
        const input = await make();
        const before = await userCount(s);
        const { res, body } = await postKey(s, input);
        expect(res.status, body).to.equal(400);
        await expectGoodPage(res, body);
        const sentence = byId(body, 'error');
        expect(sentence.length).to.be.greaterThan(15);
        expect(sentence).to.match(/[.!]$/);
        expect(await userCount(s)).to.equal(before);
        if (input.includes('PRIVATE KEY')) {
          // A secret key is never echoed back.
          const line = input.split('\n').find((l) => l.length > 60)!;
          expect(body).not.to.include(line);
          expect(body).not.to.include('PRIVATE KEY BLOCK-----');
        }
      });
    }
  });

  it('shows the challenge again after a wrong code, and ends the signup after 5 (429)', async () => {
    const k = await makeFreshGpgKey('ed25519');
    const step1 = await postKey(s, k.publicArmored);
    let last: Page | null = null;
    for (let i = 1; i <= 4; i++) {
      last = await postCode(s, step1.body, 'aaaa-bbbb-cccc-dddd');
      expect(last.res.status).to.equal(400);
      await expectGoodPage(last.res, last.body);
      expect(byId(last.body, 'error')).to.include(`${5 - i} attempt`);
    }
    last = await postCode(s, step1.body, 'aaaa-bbbb-cccc-dddd');
    expect(last.res.status).to.equal(429);
    await expectGoodPage(last.res, last.body);
    expect(last.body).to.match(/Too many wrong codes/);
    // Even the right code is too late now.
    const right = await postCode(s, step1.body, await decryptCode(k, byId(step1.body, 'challenge')));
    expect(right.res.status).to.equal(404);
    expect(s.registry.findByFingerprint(k.fingerprint)).to.equal(undefined);
  });

  it('refuses a confirm form whose token does not match its signup', async () => {
    const k = await makeFreshGpgKey('ed25519');
    const step1 = await postKey(s, k.publicArmored);
    const code = await decryptCode(k, byId(step1.body, 'challenge'));
    const forged = await postCode(s, step1.body, code, 'x'.repeat(32));
    expect(forged.res.status).to.equal(400);
    await expectGoodPage(forged.res, forged.body);
    expect(s.registry.findByFingerprint(k.fingerprint)).to.equal(undefined);
  });

  it('lets a pending signup expire after 15 minutes', async () => {
    const k = await makeFreshGpgKey('ed25519');
    const step1 = await postKey(s, k.publicArmored);
    const code = await decryptCode(k, byId(step1.body, 'challenge'));
    s.clock.offsetMs = 16 * 60_000;
    try {
      const late = await postCode(s, step1.body, code);
      expect(late.res.status).to.equal(404);
      await expectGoodPage(late.res, late.body);
      expect(byId(late.body, 'error')).to.match(/expired/);
    } finally {
      s.clock.offsetMs = 0;
    }
    expect(s.registry.findByFingerprint(k.fingerprint)).to.equal(undefined);
  });
});

describe('web: signup rate limit', function () {
  let s: TestServer;
  before(async function () {
    requireGpg(this);
    s = await startTestServer({ limits: { signupBurst: 2, signupPerMinute: 1 } });
  });
  after(async () => {
    await s?.close();
  });

  it('answers 429 with Retry-After once the bucket is empty', async () => {
    const k = await makeGpgKey('ed25519');
    expect((await postKey(s, k.publicArmored)).res.status).to.equal(200);
    expect((await postKey(s, k.publicArmored)).res.status).to.equal(200);
    const third = await postKey(s, k.publicArmored);
    expect(third.res.status).to.equal(429);
    expect(Number(third.res.headers.get('retry-after'))).to.be.greaterThan(0);
    await expectGoodPage(third.res, third.body);
    // The API shares the bucket.
    const res = await fetch(s.base + '/api/v1/signup', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ publicKey: k.publicArmored }),
    });
    expect(res.status).to.equal(429);
    const error = ((await res.json()) as { error: { code: string; message: string } }).error;
    expect(error.code).to.equal('rate-limited');
    // One wait time, the Retry-After value, in the sentence of the page and of the API.
    for (const [text, after] of [[third.body, third.res.headers.get('retry-after')], [error.message, res.headers.get('retry-after')]]) {
      const waits = String(text).match(/\b(?:in|wait) (?:a |\d+ )?(?:few )?(?:seconds?|minutes?)\b/gi) ?? [];
      expect(waits, String(text)).to.have.length(1);
      expect(waits[0]).to.equal(`in ${after} seconds`);
    }
  });
});

describe('web: junk does not use up the signup limit', function () {
  let s: TestServer;
  before(async function () {
    requireGpg(this);
    s = await startTestServer({ limits: { signupBurst: 2, signupPerMinute: 1 } });
  });
  after(async () => {
    await s?.close();
  });

  it('still takes a valid signup after 60 junk posts (garbage, a secret key, malformed forms and bodies)', async () => {
    const secret = (await makeGpgKey('ed25519')).secretArmored;
    for (let i = 0; i < 15; i++) {
      expect((await postKey(s, 'not a key ' + i)).res.status).to.equal(400);
      expect((await postKey(s, secret)).res.status).to.equal(400);
      const api = await fetch(s.base + '/api/v1/signup', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ publicKey: 'x'.repeat(i + 1) }) });
      expect(api.status).to.equal(400);
      const broken = await fetch(s.base + '/api/v1/signup', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"publicKey":' });
      expect(broken.status).to.equal(400);
    }
    const k = await makeFreshGpgKey('ed25519');
    const step1 = await postKey(s, k.publicArmored);
    expect(step1.res.status).to.equal(200);
    const step2 = await postCode(s, step1.body, await decryptCode(k, byId(step1.body, 'challenge')));
    expect(step2.res.status).to.equal(200);
    expect(s.registry.findByFingerprint(k.fingerprint)).to.not.equal(undefined);
  });
});
