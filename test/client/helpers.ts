// Runs kzymy-client as a real subprocess (`node --import tsx src/cli/client.ts ...`), the
// same code path as the installed bin, with its own profile folder.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { onionAddress } from '../helpers/onion.js';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const CLIENT_CLI = path.join(ROOT, 'src', 'cli', 'client.ts');

export interface ClientRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ClientRunOptions {
  env?: NodeJS.ProcessEnv;
  input?: string;
}

/** Runs kzymy-client with ARGS; never rejects on a non-zero exit (look at code). */
export function runClient(args: string[], opts: ClientRunOptions = {}): Promise<ClientRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLIENT_CLI, ...args], {
      cwd: ROOT,
      env: { ...process.env, KZYMY_DEBUG: '', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.stdin.on('error', () => {});
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

/** No stack trace, no Node internals: what a user must never see. */
export function expectNoStack(r: ClientRun): void {
  const all = r.stdout + r.stderr;
  if (/\n\s+at .+:\d+:\d+|node:internal|Error: .*\n\s+at /.test(all)) {
    throw new Error(`kzymy-client printed a stack trace:\n${all}`);
  }
}

/** A TCP listener that counts connections (a stand-in proxy that must stay untouched). */
export async function countingListener(): Promise<{ port: number; connections: () => number; close: () => Promise<void> }> {
  let count = 0;
  const server = net.createServer((s) => {
    count++;
    s.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return { port, connections: () => count, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** A port nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface SocksLog {
  /** Address types and hosts the client asked to CONNECT to. */
  requests: Array<{ atyp: number; host: string; port: number }>;
}

/**
 * A minimal SOCKS5 server (RFC 1928, no auth, CONNECT) standing in for tor: it records
 * what the client asked for and forwards every connection to 127.0.0.1:`forwardPort`,
 * whatever the name, as tor forwards an onion name to its service.
 */
export async function fakeTor(forwardPort: number): Promise<{ port: number; log: SocksLog; close: () => Promise<void> }> {
  const log: SocksLog = { requests: [] };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    let buf = Buffer.alloc(0);
    let stage: 'greeting' | 'request' | 'piped' = 'greeting';
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      if (stage === 'greeting') {
        if (buf.length < 2 || buf.length < 2 + buf[1]!) return;
        buf = buf.subarray(2 + buf[1]!);
        client.write(Buffer.from([5, 0]));
        stage = 'request';
      }
      if (stage === 'request') {
        if (buf.length < 5) return;
        const atyp = buf[3]!;
        let host: string;
        let end: number;
        if (atyp === 3) {
          end = 5 + buf[4]! + 2;
          if (buf.length < end) return;
          host = buf.subarray(5, 5 + buf[4]!).toString('latin1');
        } else if (atyp === 1) {
          end = 4 + 4 + 2;
          if (buf.length < end) return;
          host = [...buf.subarray(4, 8)].join('.');
        } else {
          end = 4 + 16 + 2;
          if (buf.length < end) return;
          host = buf.subarray(4, 20).toString('hex');
        }
        const port = buf.readUInt16BE(end - 2);
        log.requests.push({ atyp, host, port });
        const rest = buf.subarray(end);
        stage = 'piped';
        client.off('data', onData);
        const upstream = net.connect(forwardPort, '127.0.0.1', () => {
          client.write(Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, 0, 0]));
          if (rest.length) upstream.write(rest);
          client.pipe(upstream);
          upstream.pipe(client);
        });
        sockets.add(upstream);
        upstream.on('close', () => sockets.delete(upstream));
        upstream.on('error', () => client.destroy());
      }
    };
    client.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    log,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export { onionAddress };

/** A valid v3 onion name (56 base32 characters with a correct checksum), the same every run. */
export const FAKE_ONION = onionAddress(Buffer.alloc(32, 0x5a));
