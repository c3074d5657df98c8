// One connection to tor's control port (control-spec.txt): commands and their replies, the
// asynchronous events, cookie authentication, and the keyword lines of GETINFO and events.
// Hand-written: the npm tor-control clients are unmaintained, and kzymy needs only a few
// commands over a unix socket.
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import { UserError } from '../config/index.js';
import type { TorBootstrap } from './control.js';

/** tor answered a command with a status other than 250 (`status`: 552 unknown key or address, 551 internal error, ...). */
export class ControlRefusal extends UserError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** `KEY=VALUE KEY="quoted value"` pairs of a reply or event line. */
export function parseKeywords(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /([A-Za-z_]+)=("(?:[^"\\]|\\.)*"|\S*)/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const v = m[2]!;
    out[m[1]!.toUpperCase()] = v.startsWith('"') ? v.slice(1, -1).replace(/\\(.)/g, '$1') : v;
  }
  return out;
}

/** A "BOOTSTRAP PROGRESS=N TAG=t SUMMARY=..." text, or null. */
export function parseBootstrap(text: string): TorBootstrap | null {
  if (!/\bBOOTSTRAP\b/.test(text)) return null;
  const k = parseKeywords(text);
  const percent = Number(k.PROGRESS);
  if (!Number.isInteger(percent)) return null;
  return { percent, tag: k.TAG ?? '', summary: k.SUMMARY ?? '' };
}

/** One control connection: commands in order, replies matched to them, 650 events aside. */
export class ControlConnection {
  private buf = '';
  private inData = false;
  private lines: string[] = [];
  private pending: { resolve: (lines: string[]) => void; reject: (e: Error) => void }[] = [];
  private readonly sock: net.Socket;

  constructor(
    socket: string,
    private readonly onEvent: (line: string) => void,
    onClose: (err: Error | null) => void,
  ) {
    this.sock = net.connect(socket);
    this.sock.setEncoding('utf8');
    let failure: Error | null = null;
    this.sock.on('data', (d: string) => this.read(d));
    this.sock.on('error', (e) => (failure = e));
    this.sock.on('close', () => {
      const e = failure ?? new Error('tor closed the control connection');
      for (const p of this.pending.splice(0)) p.reject(e);
      onClose(failure);
    });
  }

  ready(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.sock.once('connect', resolve);
      this.sock.once('error', reject);
      this.sock.once('close', () => reject(new Error('tor closed the control connection')));
    });
  }

  private read(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).replace(/\r$/, '');
      this.buf = this.buf.slice(nl + 1);
      // The data lines after "NNN+" up to "." belong to the reply (a descriptor, for GETINFO).
      if (this.inData) {
        if (line === '.') this.inData = false;
        else this.lines.push(line.startsWith('..') ? line.slice(1) : line);
        continue;
      }
      // Not a reply line (no "NNN" and separator): dropped, so it cannot spoil the next one.
      if (!/^\d{3}[ +-]/.test(line)) continue;
      this.lines.push(line);
      if (line[3] === '+') this.inData = true;
      // "NNN-" and "NNN+" (with its data) continue, "NNN " ends a reply.
      if (line.length >= 4 && line[3] === ' ') {
        const reply = this.lines.splice(0);
        if (line.startsWith('6')) this.onEvent(reply.join('\n'));
        else this.pending.shift()?.resolve(reply);
      }
    }
  }

  /** Sends `cmd`; a reply other than 250 throws a ControlRefusal with tor's status code. */
  async command(cmd: string): Promise<string[]> {
    const reply = new Promise<string[]>((resolve, reject) => this.pending.push({ resolve, reject }));
    this.sock.write(`${cmd}\r\n`);
    const lines = await reply;
    const last = lines[lines.length - 1] ?? '';
    if (!last.startsWith('250')) throw new ControlRefusal(Number(last.slice(0, 3)) || 0, `tor refused ${cmd.split(' ')[0]}: ${last}`);
    return lines;
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Authenticates with the cookie tor names in PROTOCOLINFO (or none if tor asks none). */
export async function authenticate(c: ControlConnection): Promise<void> {
  const info = (await c.command('PROTOCOLINFO 1')).join('\n');
  const auth = /AUTH METHODS=(\S+)(.*)/.exec(info);
  const methods = (auth?.[1] ?? '').split(',');
  if (methods.includes('NULL')) {
    await c.command('AUTHENTICATE');
    return;
  }
  const file = parseKeywords(auth?.[2] ?? '').COOKIEFILE;
  if (!methods.includes('COOKIE') || !file) throw new UserError('tor asks for a control password; kzymy reads only cookie authentication');
  let cookie: Buffer;
  try {
    cookie = await readFile(file);
  } catch (err) {
    throw new UserError(`tor's control cookie ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  await c.command(`AUTHENTICATE ${cookie.toString('hex')}`);
}
