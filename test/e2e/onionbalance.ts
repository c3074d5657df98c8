// Onionbalance (Debian's `onionbalance`, v3) as a frontend on the private Tor network:
// the frontend's master key, its configuration file, and the process itself, talking to
// a controlled tor of the network. Onionbalance runs with --is-testnet, which sizes its
// time periods for 20-second votes: start the network with votingInterval 20.
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { which } from '../helpers/env.js';
import { onionAddress } from '../helpers/onion.js';
import type { ControlledTor } from './tornet/index.js';

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
  return { keyFile, address: onionAddress(raw) };
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
  // Debian installs it in /usr/sbin, which a PATH may lack.
  const child = spawn(which('onionbalance') ?? 'onionbalance', ['--is-testnet', '-v', 'info', '-c', config, '-i', '127.0.0.1', '-p', String(opts.tor.controlPort)], {
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
