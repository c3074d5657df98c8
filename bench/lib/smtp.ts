// A minimal SMTP client for the benchmark: read a greeting, and send one (large) message
// with backpressure, timing the DATA phase. Only for 127.0.0.1 servers we started.
import net from 'node:net';
import { now } from './util.js';

/** Connects, returns the first reply line (the greeting), quits. */
export function readGreeting(port: number, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('no greeting'));
    }, timeoutMs);
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        sock.end('QUIT\r\n');
        sock.destroy();
        resolve(buf.slice(0, nl).trim());
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Reads SMTP replies (multi-line aware) from a socket. */
class Replies {
  private buf = '';
  private waiters: Array<(line: string) => void> = [];
  private done: string[] = [];
  private failed: Error | null = null;
  constructor(sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      let nl: number;
      let lines: string[] = [];
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).replace(/\r$/, '');
        this.buf = this.buf.slice(nl + 1);
        lines.push(line);
        if (/^\d{3} /.test(line) || !/^\d{3}-/.test(line)) {
          this.push(lines.join('\n'));
          lines = [];
        }
      }
      if (lines.length) this.buf = lines.map((l) => l + '\r\n').join('') + this.buf;
    });
    const fail = (err: Error) => {
      this.failed = err;
      for (const w of this.waiters.splice(0)) w(`000 ${err.message}`);
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('connection closed')));
  }
  private push(reply: string) {
    const w = this.waiters.shift();
    if (w) w(reply);
    else this.done.push(reply);
  }
  next(timeoutMs: number): Promise<string> {
    const r = this.done.shift();
    if (r !== undefined) return Promise.resolve(r);
    if (this.failed) return Promise.resolve(`000 ${this.failed.message}`);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve('000 timeout'), timeoutMs);
      this.waiters.push((line) => {
        clearTimeout(timer);
        resolve(line);
      });
    });
  }
}

export interface BigSendResult {
  /** Seconds from the first byte of the message to the final reply. */
  dataSeconds: number;
  /** The final reply to DATA (e.g. "250 2.0.0 Ok: ..."). */
  reply: string;
}

/**
 * Sends `message` (CRLF lines, no line starting with "."; ends with CRLF) in one transaction.
 * Throws if any step before the final reply is refused; the final reply is returned as it is.
 */
export async function sendMessage(port: number, from: string, to: string, message: Buffer, timeoutMs = 300_000): Promise<BigSendResult> {
  const sock = net.connect(port, '127.0.0.1');
  sock.setNoDelay(true);
  const replies = new Replies(sock);
  const expect = async (code: string, what: string) => {
    const r = await replies.next(30_000);
    if (!r.startsWith(code)) throw new Error(`${what}: expected ${code}, got ${JSON.stringify(r)}`);
    return r;
  };
  const write = (data: string | Buffer) =>
    new Promise<void>((resolve, reject) => {
      if (sock.write(data)) resolve();
      else {
        const onDrain = () => {
          sock.off('close', onClose);
          resolve();
        };
        const onClose = () => {
          sock.off('drain', onDrain);
          reject(new Error('connection closed while sending'));
        };
        sock.once('drain', onDrain);
        sock.once('close', onClose);
      }
    });
  try {
    await expect('220', 'greeting');
    await write('EHLO bench-client.invalid\r\n');
    await expect('250', 'EHLO');
    await write(`MAIL FROM:<${from}> SIZE=${message.length}\r\n`);
    await expect('250', 'MAIL FROM');
    await write(`RCPT TO:<${to}>\r\n`);
    await expect('250', 'RCPT TO');
    await write('DATA\r\n');
    await expect('354', 'DATA');
    const t0 = now();
    const CHUNK = 64 * 1024;
    for (let off = 0; off < message.length; off += CHUNK) await write(message.subarray(off, off + CHUNK));
    await write('.\r\n');
    const reply = await replies.next(timeoutMs);
    const dataSeconds = now() - t0;
    sock.end('QUIT\r\n');
    return { dataSeconds, reply };
  } finally {
    setTimeout(() => sock.destroy(), 1000).unref();
  }
}

export interface TransactionOptions {
  /** Source address of the connection (any 127.0.0.0/8 address on Linux loopback). */
  localAddress?: string;
  /** Awaited after the last RCPT and before DATA, e.g. to start many transactions at once. */
  beforeData?: () => Promise<void>;
  /** Longest wait for the reply to the final dot. */
  timeoutMs?: number;
}

export interface TransactionResult {
  /** The final reply to DATA, or the first refusal ("000 ..." if the connection died). */
  reply: string;
  /** Recipients answered 250. */
  accepted: number;
}

/**
 * One transaction with many recipients over one connection: EHLO, MAIL, every RCPT, DATA,
 * the message (CRLF lines, none starting with "."; ends with CRLF), QUIT. Never throws on a
 * refusal: the reply is returned.
 */
export async function sendTransaction(port: number, from: string, to: string[], message: Buffer, o: TransactionOptions = {}): Promise<TransactionResult> {
  const sock = net.connect({ port, host: '127.0.0.1', ...(o.localAddress ? { localAddress: o.localAddress } : {}) });
  sock.setNoDelay(true);
  sock.on('error', () => undefined);
  const replies = new Replies(sock);
  let accepted = 0;
  const write = (data: string | Buffer) =>
    new Promise<void>((resolve) => {
      if (sock.write(data)) return resolve();
      const onDone = () => {
        sock.off('drain', onDone);
        sock.off('close', onDone);
        resolve();
      };
      sock.once('drain', onDone);
      sock.once('close', onDone);
    });
  try {
    let r = await replies.next(60_000);
    if (!r.startsWith('220')) return { reply: r, accepted };
    await write('EHLO bench-client.invalid\r\n');
    if (!(r = await replies.next(60_000)).startsWith('250')) return { reply: r, accepted };
    await write(`MAIL FROM:<${from}> SIZE=${message.length}\r\n`);
    if (!(r = await replies.next(60_000)).startsWith('250')) return { reply: r, accepted };
    for (const rcpt of to) {
      await write(`RCPT TO:<${rcpt}>\r\n`);
      if (!(r = await replies.next(60_000)).startsWith('250')) return { reply: r, accepted };
      accepted++;
    }
    if (o.beforeData) await o.beforeData();
    await write('DATA\r\n');
    if (!(r = await replies.next(60_000)).startsWith('354')) return { reply: r, accepted };
    const CHUNK = 64 * 1024;
    for (let off = 0; off < message.length; off += CHUNK) await write(message.subarray(off, off + CHUNK));
    await write('.\r\n');
    const reply = await replies.next(o.timeoutMs ?? 1_800_000);
    sock.end('QUIT\r\n');
    return { reply, accepted };
  } finally {
    setTimeout(() => sock.destroy(), 1000).unref();
  }
}
