// A real kzymy web server for tests: real registry and Maildir in a temporary folder,
// listening on 127.0.0.1, port 0. Logs are kept in memory to check what they hold.
import { chmod, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { Writable } from 'node:stream';
import { HtmlValidate } from 'html-validate';
import { expect } from 'chai';
import { loadConfig, type Config } from '../../src/config/index.js';
import { createLogger } from '../../src/config/log.js';
import { openRegistry, type Registry } from '../../src/registry/index.js';
import { MaildirStore } from '../../src/maildir/index.js';
import { KeyCache } from '../../src/pgp/index.js';
import { startWeb, type WebDeps, type WebLimits } from '../../src/web/index.js';
import { tempDir } from '../helpers/env.js';
import { gpg, gpgDecrypt, killGpgAgent, TEST_UID, type TestKey } from '../helpers/gpg.js';

export interface TestServer {
  base: string;
  port: number;
  dir: string;
  config: Config;
  deps: WebDeps;
  registry: Registry;
  maildir: MaildirStore;
  logs: string[];
  clock: { offsetMs: number };
  close(): Promise<void>;
}

export async function startTestServer(
  opts: { limits?: Partial<WebLimits>; onion?: string | null; domain?: string; clientBundle?: string } = {},
): Promise<TestServer> {
  const { dir, cleanup } = await tempDir('kzymy-web-');
  const config = loadConfig({
    cwd: dir,
    env: {
      PATH: process.env.PATH,
      KZYMY_DATA_DIR: `${dir}/data`,
      KZYMY_MAILDIR_ROOT: `${dir}/maildirs`,
      KZYMY_WEB_HOST: '127.0.0.1',
      KZYMY_WEB_PORT: '0',
      KZYMY_TOR_MANAGE: '0',
      KZYMY_DOMAIN: opts.domain ?? 'kzymy.test',
    },
  });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(chunk.toString('utf8'));
      cb();
    },
  });
  const logger = createLogger('info', sink);
  const registry = await openRegistry({ dataDir: config.dataDir });
  const maildir = new MaildirStore(config.maildirRoot);
  const clock = { offsetMs: 0 };
  const deps: WebDeps = {
    config,
    registry,
    maildir,
    keys: new KeyCache(),
    logger,
    onionAddress: () => opts.onion ?? null,
    now: () => new Date(Date.now() + clock.offsetMs),
    limits: opts.limits,
    clientBundle: opts.clientBundle,
  };
  const server = await startWeb(deps);
  return {
    base: `http://127.0.0.1:${server.port}`,
    port: server.port,
    dir,
    config,
    deps,
    registry,
    maildir,
    logs,
    clock,
    close: async () => {
      await server.close();
      await registry.close();
      await cleanup();
    },
  };
}

export const EXPECTED_CSP =
  "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export function expectSecurityHeaders(res: Response): void {
  expect(res.headers.get('content-security-policy')).to.equal(EXPECTED_CSP);
  expect(res.headers.get('referrer-policy')).to.equal('no-referrer');
  expect(res.headers.get('x-content-type-options')).to.equal('nosniff');
  expect(res.headers.get('cache-control')).to.equal('no-store');
}

const validator = new HtmlValidate({ extends: ['html-validate:recommended'] });

/** A page must: have no script, no URL to another host, the headers, and validate. */
export async function expectGoodPage(res: Response, body: string): Promise<void> {
  expectSecurityHeaders(res);
  expect(res.headers.get('content-type')).to.match(/^text\/html/);
  expect(body).not.to.match(/<script/i);
  expect(body).not.to.match(/\son[a-z]+\s*=/i, 'an inline event handler');
  expect(body).not.to.match(/javascript:/i);
  // Every URL in an attribute is local (starts with one '/' or '#').
  for (const m of body.matchAll(/\s(?:href|src|action|formaction|srcset|poster|data)\s*=\s*"([^"]*)"/gi)) {
    expect(m[1]!, 'a URL to another host').to.match(/^(\/(?!\/)|#)/);
  }
  // No absolute URL in the text either, but this service's own onion address (the page's
  // #onion) in the commands it gives to copy.
  const own = /id="onion">([a-z0-9.-]+\.onion)</.exec(body)?.[1];
  for (const m of body.matchAll(/(?:https?:)?\/\/([a-z0-9.-]+\.[a-z]{2,})\//gi)) expect(m[1], 'an absolute URL').to.equal(own);
  const report = await validator.validateString(body);
  const problems = report.results.flatMap((r) => r.messages.map((m) => `${m.line}:${m.column} ${m.ruleId}: ${m.message}`));
  expect(problems, problems.join('\n')).to.deep.equal([]);
}

export function htmlUnescape(s: string): string {
  return s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&');
}

export function field(body: string, name: string): string {
  const m = new RegExp(`name="${name}" value="([^"]*)"`).exec(body);
  if (!m) throw new Error(`no field ${name} in page`);
  return htmlUnescape(m[1]!);
}

export function byId(body: string, id: string): string {
  const m = new RegExp(`id="${id}"[^>]*>([\\s\\S]*?)</`).exec(body);
  if (!m) throw new Error(`no element #${id} in page`);
  return htmlUnescape(m[1]!);
}

/** The six lines of a decryption challenge, as gpg decrypts them. */
export const CHALLENGE_FORMAT =
  /^kzymy challenge v1\npurpose: (signup|rotate|login)\nserver: ([^\n]+)\nusername: ([a-z0-9]+|-)\nfingerprint: ([0-9A-F]{40}|[0-9A-F]{64})\ncode: ([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4})\n$/;

/** gpg --decrypt of a challenge: its plaintext must be kzymy's exact format. */
export async function decryptChallenge(
  key: TestKey,
  armored: string,
): Promise<{ purpose: string; server: string; username: string; fingerprint: string; code: string; text: string }> {
  const text = (await gpgDecrypt(key.gnupghome, armored)).toString('utf8');
  const m = CHALLENGE_FORMAT.exec(text);
  if (!m) throw new Error(`the challenge plaintext is not in kzymy's format: ${JSON.stringify(text)}`);
  return { purpose: m[1]!, server: m[2]!, username: m[3]!, fingerprint: m[4]!, code: m[5]!, text };
}

/** The code of a challenge (its `code:` line). */
export async function decryptCode(key: TestKey, armored: string): Promise<string> {
  return (await decryptChallenge(key, armored)).code;
}

/** The statement a client signs to log in. */
export function loginStatement(server: string, username: string, fingerprint: string, nonce: string): string {
  return `kzymy login v1\nserver: ${server}\nusername: ${username}\nfingerprint: ${fingerprint}\nnonce: ${nonce}\n`;
}

/** `gpg --detach-sign --armor` of a text with the key. */
export async function gpgSign(key: TestKey, text: string): Promise<string> {
  return (await gpg(key.gnupghome, ['--armor', '--detach-sign', '--local-user', key.fingerprint], text)).toString('utf8');
}

/** The "server:" name of the test server, as a client on loopback gives it. */
export function serverName(s: TestServer): string {
  return `127.0.0.1:${s.port}`;
}

export async function api(
  s: TestServer,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<{ status: number; json: Record<string, unknown>; res: Response }> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(s.base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    json = { raw: text };
  }
  return { status: res.status, json, res };
}

/** Whole signup over the API; returns the username. */
export async function signupApi(s: TestServer, key: TestKey): Promise<string> {
  const start = await api(s, 'POST', '/api/v1/signup', { publicKey: key.publicArmored });
  expect(start.status, JSON.stringify(start.json)).to.equal(201);
  const code = await decryptCode(key, start.json.challenge as string);
  const done = await api(s, 'POST', '/api/v1/signup/confirm', { signupId: start.json.signupId, code });
  expect(done.status, JSON.stringify(done.json)).to.equal(201);
  return done.json.username as string;
}

/** The token request of a login: a statement signed with real gpg (or the code, when the key cannot sign). */
export async function loginAnswer(
  s: TestServer,
  username: string,
  key: TestKey,
  ch: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  if (typeof ch.challenge === 'string') {
    const c = await decryptChallenge(key, ch.challenge);
    expect(c).to.include({ purpose: 'login', server: serverName(s), username, fingerprint: key.fingerprint });
    return { challengeId: ch.challengeId, code: c.code };
  }
  const statement = loginStatement(serverName(s), username, key.fingerprint, ch.nonce as string);
  return { challengeId: ch.challengeId, statement, signature: await gpgSign(key, statement) };
}

/** Challenge, sign (or decrypt) with gpg, token. */
export async function login(s: TestServer, username: string, key: TestKey): Promise<string> {
  const ch = await api(s, 'POST', '/api/v1/auth/challenge', { username });
  expect(ch.status, JSON.stringify(ch.json)).to.equal(200);
  expect(ch.json.fingerprint).to.equal(key.fingerprint);
  expect(ch.json.nonce).to.match(/^[A-Za-z0-9_-]{43}$/);
  const tok = await api(s, 'POST', '/api/v1/auth/token', await loginAnswer(s, username, key, ch.json));
  expect(tok.status, JSON.stringify(tok.json)).to.equal(200);
  return tok.json.token as string;
}

/** The armored OpenPGP message inside a PGP/MIME file. */
export function armoredPart(file: Buffer | string): string {
  const m = /-----BEGIN PGP MESSAGE-----[\s\S]*?-----END PGP MESSAGE-----/.exec(file.toString());
  if (!m) throw new Error('no armored message in the file');
  return m[0] + '\n';
}

/**
 * A GnuPG key made by `gpg --quick-gen-key` with the given arguments (after the user id),
 * in a fresh GNUPGHOME; `addSubkey` then adds a subkey with `gpg --quick-add-key`.
 * Call `dispose` to stop its agent and remove the folder.
 */
export async function makeCustomGpgKey(
  algoUsageExpire: string[],
  addSubkey?: string[],
): Promise<TestKey & { dispose(): Promise<void> }> {
  const { dir, cleanup } = await tempDir('kzymy-key-');
  await chmod(dir, 0o700);
  await gpg(dir, ['--quick-gen-key', TEST_UID, ...algoUsageExpire]);
  const colons = (await gpg(dir, ['--with-colons', '--fingerprint', '--list-secret-keys'])).toString('utf8');
  const fingerprint = colons.split('\n').find((l) => l.startsWith('fpr:'))!.split(':')[9]!.toUpperCase();
  if (addSubkey) await gpg(dir, ['--quick-add-key', fingerprint, ...addSubkey]);
  const publicArmored = (await gpg(dir, ['--armor', '--export', fingerprint])).toString('utf8');
  const secretArmored = (await gpg(dir, ['--armor', '--export-secret-keys', fingerprint])).toString('utf8');
  const secretKeyFile = path.join(dir, 'secret-key.asc');
  await writeFile(secretKeyFile, secretArmored, { mode: 0o600 });
  return {
    gnupghome: dir,
    fingerprint,
    publicArmored,
    secretArmored,
    secretKeyFile,
    uid: TEST_UID,
    dispose: async () => {
      await killGpgAgent(dir);
      await cleanup();
    },
  };
}

/** Fingerprints of the subkeys of a key in its GNUPGHOME, in order. */
export async function subkeyFingerprints(key: TestKey): Promise<string[]> {
  const colons = (await gpg(key.gnupghome, ['--with-colons', '--with-subkey-fingerprints', '--list-keys', key.fingerprint])).toString('utf8');
  const lines = colons.split('\n');
  const out: string[] = [];
  lines.forEach((l, i) => {
    if (l.startsWith('sub:')) {
      const f = lines.slice(i + 1).find((x) => x.startsWith('fpr:'));
      if (f) out.push(f.split(':')[9]!.toUpperCase());
    }
  });
  return out;
}

/** A JSON request with a chosen Host header (fetch does not let a test set one). */
export function apiWithHost(
  s: TestServer,
  host: string,
  method: string,
  p: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      {
        host: '127.0.0.1',
        port: s.port,
        method,
        path: p,
        headers: { host, ...(data ? { 'content-type': 'application/json', 'content-length': String(data.length) } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: Record<string, unknown> = {};
          try {
            json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
          } catch {
            json = { raw: text };
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}
