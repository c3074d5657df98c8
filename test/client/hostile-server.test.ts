// kzymy-client against a hostile server: an in-process HTTP server on 127.0.0.1 (--no-tor)
// that speaks kzymy's authentication protocol but serves, as its challenges, things a seized
// server would like decrypted: a stored kzymy message, any ciphertext to the user's key, a
// real challenge made for another purpose, username, server or key. The real client CLI runs
// as a subprocess with a real GnuPG home. Every request body is recorded: nothing decrypted
// may ever come back, and the client exits 76 with a sentence.
import { expect } from 'chai';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { createMessage, readKey, readSignature, verify } from 'openpgp';
import { encryptBufferToPgpMime } from '../../src/pgp/index.js';
import { tempDir } from '../helpers/env.js';
import { gpg, killGpgAgent, makeGpgKey, parsePgpMime, requireGpg, run, TEST_UID, type TestKey } from '../helpers/gpg.js';
import { marker, rawMessage } from '../helpers/mail.js';
import { countingListener, expectNoStack, onionAddress, runClient, type ClientRun } from './helpers.js';

const USERNAME = 'hostileuser1';

interface Recorded {
  method: string;
  path: string;
  body: string;
}

/** What the server answers; each field replaces the honest answer of one endpoint. */
interface Behaviour {
  signupChallenge?: string;
  signupFingerprint?: string;
  confirmFingerprint?: string;
  /** When set, the login challenge response carries this `challenge` (the code fallback). */
  loginChallenge?: string;
  loginFingerprint?: string;
  /** A refusal of POST /api/v1/auth/challenge with this message. */
  loginRefusal?: string;
  rotateChallenge?: string;
  account?: Record<string, unknown>;
}

interface Hostile {
  url: string;
  /** The "server:" name the client uses for it: 127.0.0.1:PORT. */
  name: string;
  requests: Recorded[];
  behaviour: Behaviour;
  close(): Promise<void>;
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function startHostile(key: TestKey, behaviour: Behaviour): Promise<Hostile> {
  const requests: Recorded[] = [];
  const nonce = randomBytes(32).toString('base64url');
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const p = req.url ?? '';
      requests.push({ method: req.method ?? '', path: p, body });
      const soon = new Date(Date.now() + 300_000).toISOString();
      const route = `${req.method} ${p}`;
      switch (route) {
        case 'POST /api/v1/signup':
          return send(res, 200, {
            signupId: 'sg1',
            fingerprint: behaviour.signupFingerprint ?? key.fingerprint,
            challenge: behaviour.signupChallenge,
            expiresAt: soon,
            attemptsLeft: 5,
          });
        case 'POST /api/v1/signup/confirm':
          return send(res, 200, {
            username: USERNAME,
            domain: 'kzymy.test',
            mailDomain: `${USERNAME}.kzymy.test`,
            fingerprint: behaviour.confirmFingerprint ?? key.fingerprint,
            onion: null,
            exampleAddress: `shop@${USERNAME}.kzymy.test`,
          });
        case 'POST /api/v1/auth/challenge':
          if (behaviour.loginRefusal !== undefined) {
            return send(res, 403, { error: { code: 'account-disabled', message: behaviour.loginRefusal } });
          }
          return send(res, 200, {
            challengeId: 'ch1',
            nonce,
            expiresAt: soon,
            fingerprint: behaviour.loginFingerprint ?? key.fingerprint,
            ...(behaviour.loginChallenge !== undefined ? { challenge: behaviour.loginChallenge } : {}),
          });
        case 'POST /api/v1/auth/token':
          return send(res, 200, { token: 'tok1', tokenType: 'Bearer', username: USERNAME, expiresAt: soon });
        case 'POST /api/v1/auth/logout':
          return send(res, 200, {});
        case 'GET /api/v1/account':
          return send(res, 200, behaviour.account ?? {
            username: USERNAME,
            domain: 'kzymy.test',
            mailDomain: `${USERNAME}.kzymy.test`,
            onion: null,
            fingerprint: key.fingerprint,
            keyExpiresAt: null,
            createdAt: soon,
            messages: { count: 0, bytes: 0, oldest: null },
            quotaBytes: 1000,
            catchAll: true,
            aliases: [],
            blocked: [],
          });
        case 'POST /api/v1/key':
          return send(res, 200, { status: 'confirm', rotationId: 'rot1', fingerprint: key.fingerprint, challenge: behaviour.rotateChallenge, expiresAt: soon });
        case 'POST /api/v1/key/confirm':
          return send(res, 200, { status: 'rotated', fingerprint: key.fingerprint, keyExpiresAt: null });
        default:
          return send(res, 404, { error: { code: 'not-found', message: 'No such endpoint.' } });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as import('node:net').AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    name: `127.0.0.1:${port}`,
    requests,
    behaviour,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A challenge of kzymy's format, encrypted with gpg to `to`. */
async function challengeFor(
  to: TestKey,
  fields: { purpose: string; server: string; username: string; fingerprint: string; code: string },
): Promise<string> {
  const text =
    `kzymy challenge v1\npurpose: ${fields.purpose}\nserver: ${fields.server}\nusername: ${fields.username}\n` +
    `fingerprint: ${fields.fingerprint}\ncode: ${fields.code}\n`;
  return (await gpg(to.gnupghome, ['--armor', '--trust-model', 'always', '--encrypt', '--recipient', to.fingerprint], text)).toString('utf8');
}

function newCode(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = randomBytes(16);
  const chars = [...bytes].map((b) => alphabet[b % alphabet.length]).join('');
  return chars.match(/.{4}/g)!.join('-');
}

type Flow = 'signup' | 'login' | 'rotate';

/** The purpose, username and command line of a flow. */
const FLOWS: Record<Flow, { purpose: string; username: string; word: string }> = {
  signup: { purpose: 'signup', username: '-', word: 'signup' },
  login: { purpose: 'login', username: USERNAME, word: 'login' },
  rotate: { purpose: 'rotate', username: USERNAME, word: 'key-rotation' },
};

describe('kzymy-client against a hostile server', function () {
  let key: TestKey;
  let other: TestKey;
  let dir: string;
  let cleanup: () => Promise<void>;
  let counter = 0;

  before(async function () {
    requireGpg(this);
    key = await makeGpgKey('ed25519');
    other = await makeGpgKey('nistp256');
  });
  beforeEach(async () => ({ dir, cleanup } = await tempDir('kzymy-hostile-')));
  afterEach(async () => cleanup());

  function configFile(): string {
    return path.join(dir, `client-${++counter}.json`);
  }

  /** Runs `flow` through the real CLI against `h`. */
  function runFlow(flow: Flow, h: Hostile, config = configFile()): Promise<ClientRun> {
    const base = ['--config', config, '--gnupghome', key.gnupghome, '--server', h.url, '--no-tor', '--key', key.fingerprint];
    if (flow === 'signup') return runClient([...base, 'signup']);
    if (flow === 'login') return runClient([...base, '--username', USERNAME, 'status']);
    return runClient([...base, '--username', USERNAME, 'key', 'update']);
  }

  /** Installs `challenge` where `flow` takes its decryption challenge. */
  function behaviourFor(flow: Flow, challenge: string): Behaviour {
    if (flow === 'signup') return { signupChallenge: challenge };
    if (flow === 'login') return { loginChallenge: challenge };
    return { rotateChallenge: challenge };
  }

  /** The endpoint that would carry an answer in `flow`. */
  const ANSWER_PATH: Record<Flow, string> = {
    signup: '/api/v1/signup/confirm',
    login: '/api/v1/auth/token',
    rotate: '/api/v1/key/confirm',
  };

  function expectRefused(r: ClientRun, h: Hostile, flow: Flow, secrets: string[]): void {
    const all = h.requests.map((q) => q.body).join('\n');
    for (const s of secrets) expect(all, `a request body carried ${s}`).not.to.include(s);
    expect(h.requests.map((q) => q.path), 'no answer was posted').not.to.include(ANSWER_PATH[flow]);
    expect(r.code, r.stderr).to.equal(76);
    expect(r.stderr).to.match(
      new RegExp(`^kzymy-client: The server at http://127\\.0\\.0\\.1:\\d+ sent a ${FLOWS[flow].word} challenge that .*nothing was sent back\\. Do not use this server, and tell its operator\\.\\n$`),
    );
    expectNoStack(r);
  }

  describe('the honest protocol (the hostile server as a correct one, so that the refusals below mean something)', function () {
    it('signs up with the code alone, and saves the key the user named', async function () {
      const code = newCode();
      const h = await startHostile(key, {});
      try {
        h.behaviour.signupChallenge = await challengeFor(key, { purpose: 'signup', server: h.name, username: '-', fingerprint: key.fingerprint, code });
        const config = configFile();
        const r = await runFlow('signup', h, config);
        expect(r.code, r.stderr).to.equal(0);
        const confirm = h.requests.find((q) => q.path === '/api/v1/signup/confirm');
        expect(JSON.parse(confirm!.body)).to.deep.equal({ signupId: 'sg1', code });
        const saved = JSON.parse(await readFile(config, 'utf8')) as Record<string, unknown>;
        expect(saved).to.include({ username: USERNAME, key: key.fingerprint });
      } finally {
        await h.close();
      }
    });

    it('logs in with a signature over the statement it built, which verifies with the public key', async function () {
      const h = await startHostile(key, {});
      try {
        const r = await runFlow('login', h);
        expect(r.code, r.stderr).to.equal(0);
        const ch = h.requests.find((q) => q.path === '/api/v1/auth/challenge');
        expect(JSON.parse(ch!.body)).to.deep.equal({ username: USERNAME });
        const tok = JSON.parse(h.requests.find((q) => q.path === '/api/v1/auth/token')!.body) as Record<string, string>;
        expect(Object.keys(tok).sort()).to.deep.equal(['challengeId', 'signature', 'statement']);
        const nonce = /^nonce: (.+)$/m.exec(tok.statement!)![1]!;
        expect(tok.statement).to.equal(`kzymy login v1\nserver: ${h.name}\nusername: ${USERNAME}\nfingerprint: ${key.fingerprint}\nnonce: ${nonce}\n`);
        expect(tok.signature).to.match(/^-----BEGIN PGP SIGNATURE-----/);
        const v = await verify({
          message: await createMessage({ binary: Buffer.from(tok.statement!, 'utf8') }),
          signature: await readSignature({ armoredSignature: tok.signature! }),
          verificationKeys: await readKey({ armoredKey: key.publicArmored }),
          expectSigned: true,
        });
        expect(v.signatures).to.have.length(1);
        await v.signatures[0]!.verified;
      } finally {
        await h.close();
      }
    });

    it('answers a login challenge (a key that cannot sign) and a rotation challenge with the code alone', async function () {
      for (const flow of ['login', 'rotate'] as const) {
        const code = newCode();
        const h = await startHostile(key, {});
        try {
          const challenge = await challengeFor(key, { purpose: flow, server: h.name, username: USERNAME, fingerprint: key.fingerprint, code });
          Object.assign(h.behaviour, behaviourFor(flow, challenge));
          const r = await runFlow(flow, h);
          expect(r.code, `${flow}: ${r.stderr}`).to.equal(0);
          const answer = JSON.parse(h.requests.find((q) => q.path === ANSWER_PATH[flow])!.body) as Record<string, string>;
          expect(answer).to.deep.equal(flow === 'login' ? { challengeId: 'ch1', code } : { rotationId: 'rot1', code });
        } finally {
          await h.close();
        }
      }
    });
  });

  for (const flow of ['signup', 'login', 'rotate'] as const) {
    it(`${flow}: decrypts nothing for the server (stored mail, any ciphertext, challenges for others) and exits 76`, async function () {
      const mark = marker();
      const publicKey = await readKey({ armoredKey: key.publicArmored });
      // (a) A message as kzymy stores it, small (under the plaintext cap) and large.
      const stored = async (bodyBytes?: number): Promise<string> =>
        parsePgpMime(await encryptBufferToPgpMime(rawMessage(mark, { bodyBytes }), { key: publicKey, domain: 'kzymy.test' })).armored;
      // (b) Any ciphertext to the key, e.g. a short secret made to look like a code.
      const secret = `Secret text ${mark}\n`;
      const arbitrary = (await gpg(key.gnupghome, ['--armor', '--trust-model', 'always', '--encrypt', '--recipient', key.fingerprint], secret)).toString();
      const cases: Array<{ label: string; make: (h: Hostile) => Promise<string>; secrets: string[] }> = [
        { label: 'a small stored message', make: () => stored(), secrets: [mark] },
        { label: 'a large stored message', make: () => stored(4000), secrets: [mark] },
        { label: 'a ciphertext of other text', make: async () => arbitrary, secrets: [mark, 'Secret text'] },
      ];
      // (c) Well-formed challenges, each made for someone or something else.
      const f = FLOWS[flow];
      const others: Array<[string, (h: Hostile) => { purpose: string; server: string; username: string; fingerprint: string }]> = [
        ['another purpose', (h) => ({ purpose: flow === 'rotate' ? 'login' : 'rotate', server: h.name, username: f.username, fingerprint: key.fingerprint })],
        ['another username', (h) => ({ purpose: f.purpose, server: h.name, username: flow === 'signup' ? USERNAME : 'someoneelse1', fingerprint: key.fingerprint })],
        ['another server', () => ({ purpose: f.purpose, server: `${onionAddress()}`, username: f.username, fingerprint: key.fingerprint })],
        ['another fingerprint', (h) => ({ purpose: f.purpose, server: h.name, username: f.username, fingerprint: other.fingerprint })],
      ];
      for (const [label, fields] of others) {
        const code = newCode();
        cases.push({ label: `a challenge for ${label}`, make: (h) => challengeFor(key, { ...fields(h), code }), secrets: [code, code.replace(/-/g, '')] });
      }
      await Promise.all(
        cases.map(async (c) => {
          const h = await startHostile(key, {});
          try {
            Object.assign(h.behaviour, behaviourFor(flow, await c.make(h)));
            const r = await runFlow(flow, h);
            try {
              expectRefused(r, h, flow, c.secrets);
            } catch (err) {
              (err as Error).message = `${c.label}: ${(err as Error).message}`;
              throw err;
            }
          } finally {
            await h.close();
          }
        }),
      );
    });
  }

  it('refuses what is no armored message at all, or one over 16 KiB, before running gpg', async function () {
    for (const challenge of ['hello', `-----BEGIN PGP MESSAGE-----\n${'A'.repeat(17_000)}\n-----END PGP MESSAGE-----\n`]) {
      const h = await startHostile(key, { loginChallenge: challenge });
      try {
        const r = await runFlow('login', h);
        expect(r.code, r.stderr).to.equal(76);
        expect(r.stderr).to.match(/sent a login challenge that is not an armored OpenPGP message of kzymy's size/);
        expect(h.requests.map((q) => q.path)).not.to.include('/api/v1/auth/token');
      } finally {
        await h.close();
      }
    }
  });

  it("keeps the user's fingerprint: a server naming another key at signup or login is refused (exit 76)", async function () {
    const code = newCode();
    for (const where of ['signupFingerprint', 'confirmFingerprint', 'loginFingerprint'] as const) {
      const h = await startHostile(key, { [where]: other.fingerprint });
      try {
        h.behaviour.signupChallenge = await challengeFor(key, { purpose: 'signup', server: h.name, username: '-', fingerprint: key.fingerprint, code });
        const config = configFile();
        const r = await runFlow(where === 'loginFingerprint' ? 'login' : 'signup', h, config);
        expect(r.code, `${where}: ${r.stderr}`).to.equal(76);
        expect(r.stderr).to.include(`names the key ${other.fingerprint}, not yours (${key.fingerprint})`);
        expectNoStack(r);
        // A refused run saves nothing: never the server's key, never a username it named.
        const saved = (await readFile(config, 'utf8').then(JSON.parse, () => ({}))) as Record<string, unknown>;
        expect(saved, where).to.deep.equal({});
        const paths = h.requests.map((q) => q.path);
        if (where === 'signupFingerprint') expect(paths).not.to.include('/api/v1/signup/confirm');
        if (where === 'loginFingerprint') expect(paths).not.to.include('/api/v1/auth/token');
      } finally {
        await h.close();
      }
    }
  });

  it('says so in a sentence when gpg cannot sign: an expired key, a locked key without a pinentry', async function () {
    const expired = await makeGpgKey('expired');
    const h = await startHostile(expired, {});
    try {
      const r = await runClient(['--config', configFile(), '--gnupghome', expired.gnupghome, '--server', h.url, '--no-tor',
        '--key', expired.fingerprint, '--username', USERNAME, 'status']);
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.include(`Your key ${expired.fingerprint} cannot make a signature now (expired, revoked, or without a signing key)`);
      expect(h.requests.map((q) => q.path)).not.to.include('/api/v1/auth/token');
      expectNoStack(r);
    } finally {
      await h.close();
    }
    const { dir: home, cleanup: done } = await tempDir('kzymy-locked-');
    try {
      const g = await run('gpg', ['--homedir', home, '--batch', '--pinentry-mode', 'loopback', '--passphrase', 'correct horse',
        '--quick-gen-key', TEST_UID, 'future-default', 'default', 'never']);
      expect(g.code, g.stderr).to.equal(0);
      const fpr = (await gpg(home, ['--with-colons', '-k'])).toString().split('\n').find((l) => l.startsWith('fpr:'))!.split(':')[9]!;
      await killGpgAgent(home); // forget any cached passphrase
      const h2 = await startHostile({ ...key, fingerprint: fpr }, {});
      try {
        const r = await runClient(['--config', configFile(), '--gnupghome', home, '--server', h2.url, '--no-tor',
          '--key', fpr, '--username', USERNAME, 'status']);
        expect(r.code, r.stderr).to.equal(1);
        expect(r.stderr).to.match(/GnuPG needs the passphrase of your key to sign the login statement and cannot ask for it here/);
        expect(h2.requests.map((q) => q.path)).not.to.include('/api/v1/auth/token');
        expectNoStack(r);
      } finally {
        await h2.close();
      }
    } finally {
      await killGpgAgent(home);
      await done();
    }
  });

  it('prints server text without control characters (ANSI escapes, carriage return, screen clear)', async function () {
    const evil = 'Account \x1b[31mdisabled\x1b[0m\r\x1b[2J\x1b]0;owned\x07 by the \x9b1moperator\x08\x7f.';
    const h = await startHostile(key, { loginRefusal: evil });
    try {
      const r = await runFlow('login', h);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.include('Account disabled');
      expect(r.stderr.replace(/\n$/, '')).not.to.match(/[\x00-\x1f\x7f-\x9f]/); // eslint-disable-line no-control-regex
      expectNoStack(r);
    } finally {
      await h.close();
    }
    const h2 = await startHostile(key, {
      account: {
        username: `${USERNAME}\r\x1b[2J`,
        mailDomain: 'evil\x1b[1A.test',
        fingerprint: `${key.fingerprint}\x1b[8m`,
        keyExpiresAt: '2030\r',
        messages: { count: 1, bytes: 2, oldest: '\x1b[2Jnow' },
        quotaBytes: 5,
        catchAll: false,
        aliases: ['shop\x1b[31m'],
        blocked: ['\rspam'],
      },
    });
    try {
      const r = await runFlow('login', h2);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.include(`account    ${USERNAME} (mail to anything@evil.test)`);
      expect(r.stdout).not.to.match(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/); // eslint-disable-line no-control-regex
    } finally {
      await h2.close();
    }
  });

  it('catches a mistyped onion address by its checksum, before any connection (exit 2)', async function () {
    const proxy = await countingListener();
    try {
      const good = onionAddress();
      // One character changed: still 56 base32 characters, so only the checksum tells.
      const i = 10;
      const typo = good.slice(0, i) + (good[i] === 'a' ? 'b' : 'a') + good.slice(i + 1);
      for (const server of [typo, `http://${typo}/`, good.slice(0, 55) + '.onion']) {
        const r = await runClient(['--config', configFile(), '--proxy', `socks5h://127.0.0.1:${proxy.port}`, '--server', server,
          '--username', USERNAME, '--key', key.fingerprint, '--gnupghome', key.gnupghome, 'status']);
        expect(r.code, r.stderr).to.equal(2);
        expect(r.stderr).to.match(/^kzymy-client: The onion address [a-z2-7]+\.onion has a typo: .*copy it again from the server's page\.\n$/);
        expectNoStack(r);
      }
      expect(proxy.connections(), 'connections to the proxy').to.equal(0);
      // The correct address does go to the proxy (which hangs up at once: exit 75).
      const r = await runClient(['--config', configFile(), '--proxy', `socks5h://127.0.0.1:${proxy.port}`, '--server', good,
        '--username', USERNAME, '--key', key.fingerprint, '--gnupghome', key.gnupghome, 'status']);
      expect(r.code, r.stderr).to.equal(75);
      expect(proxy.connections()).to.be.greaterThan(0);
    } finally {
      await proxy.close();
    }
  });
});
