// Onionbalance (Debian's `onionbalance`, v3) as a frontend on the private Tor network:
// the frontend's master key, its configuration file, and the process itself, talking to
// a controlled tor of the network. Onionbalance runs with --is-testnet, which sizes its
// time periods for 20-second votes: start the network with votingInterval 20.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ControlledTor } from './tornet/index.js';

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

function base32(bytes: Buffer): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/** The v3 onion address of an ed25519 public key: base32(pubkey | checksum[0..2] | 3) + ".onion". */
export function onionAddressOf(publicKey: Buffer): string {
  const version = Buffer.from([3]);
  const checksum = createHash('sha3-256').update(Buffer.concat([Buffer.from('.onion checksum'), publicKey, version])).digest().subarray(0, 2);
  return `${base32(Buffer.concat([publicKey, checksum, version]))}.onion`;
}

export interface FrontendKey {
  /** PEM (PKCS#8) ed25519 private key, the format Onionbalance reads. */
  keyFile: string;
  address: string;
}

/** A fresh frontend identity, as `onionbalance-config` makes one. */
export async function makeFrontendKey(dir: string): Promise<FrontendKey> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const keyFile = path.join(dir, 'frontend.key');
  await writeFile(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x as string, 'base64url');
  return { keyFile, address: onionAddressOf(raw) };
}

export interface Onionbalance {
  child: ChildProcess;
  logFile: string;
  log(): Promise<string>;
  /** Resolves once Onionbalance logged an upload of the frontend descriptor after `since` bytes of its log. */
  waitForUpload(opts?: { since?: number; timeoutMs?: number }): Promise<void>;
  stop(): Promise<void>;
}

/** Starts `onionbalance` for one frontend and its backend instances (onion addresses). */
export async function startOnionbalance(opts: { dir: string; key: FrontendKey; instances: string[]; tor: ControlledTor }): Promise<Onionbalance> {
  const config = path.join(opts.dir, 'onionbalance.yaml');
  const yaml = [
    'services:',
    `- key: ${JSON.stringify(opts.key.keyFile)}`,
    '  instances:',
    ...opts.instances.map((a, i) => `  - address: ${JSON.stringify(a.replace(/\.onion$/, ''))}\n    name: node${i}`),
    '',
  ].join('\n');
  await writeFile(config, yaml, { mode: 0o600 });
  const logFile = path.join(opts.dir, 'onionbalance.log');
  const out = openSync(logFile, 'a');
  const child = spawn('onionbalance', ['--is-testnet', '-v', 'info', '-c', config, '-i', '127.0.0.1', '-p', String(opts.tor.controlPort)], {
    stdio: ['ignore', out, out],
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  closeSync(out);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', kill);
  const log = async (): Promise<string> => {
    try {
      return await readFile(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  return {
    child,
    logFile,
    log,
    async waitForUpload(o = {}) {
      const until = Date.now() + (o.timeoutMs ?? 180_000);
      for (;;) {
        const text = (await log()).slice(o.since ?? 0);
        if (/Uploading (first|second) descriptor for/.test(text)) return;
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`onionbalance exited:\n${text.slice(-2000)}`);
        if (Date.now() > until) throw new Error(`onionbalance uploaded no frontend descriptor in time:\n${text.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    async stop() {
      process.off('exit', kill);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(kill, 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}
