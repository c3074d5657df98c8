// Real SMTP client for tests: swaks. Returns the transcript and the server's replies.
import { execFile } from 'node:child_process';

export interface SwaksResult {
  exitCode: number;
  transcript: string;
  /** Server replies in order, e.g. ["220 ...", "250-...", "550 5.1.1 ..."]. */
  replies: string[];
  /** The last server reply line. */
  last: string;
}

export interface SwaksOptions {
  port: number;
  to: string | string[];
  from?: string;
  /** Raw message (headers + body, CRLF or LF); swaks sends it after DATA. */
  data?: string | Buffer;
  /** Or: just a body with default headers. */
  body?: string;
  header?: string[];
  tls?: boolean;
  extra?: string[];
}

export function swaks(o: SwaksOptions): Promise<SwaksResult> {
  const args = ['--server', '127.0.0.1', '--port', String(o.port), '--from', o.from ?? 'sender@example.org', '--helo', 'sender.example.org', '--timeout', '60'];
  // swaks takes several recipients as one comma-separated --to (a second --to replaces the first).
  args.push('--to', Array.isArray(o.to) ? o.to.join(',') : o.to);
  if (o.data !== undefined) args.push('--data', '-');
  if (o.body !== undefined) args.push('--body', o.body);
  for (const h of o.header ?? []) args.push('--header', h);
  if (o.tls) args.push('--tls');
  args.push(...(o.extra ?? []));
  return new Promise((resolve, reject) => {
    const child = execFile('swaks', args, { maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' }, (err, stdout) => {
      const code = err ? ((err as { code?: number }).code ?? 1) : 0;
      if (typeof code !== 'number') return reject(err);
      const replies = stdout
        .split('\n')
        .filter((l) => /^(<-|<~|<\*\*|<~\*) /.test(l))
        .map((l) => l.replace(/^\S+\s+/, ''));
      // The reply that decided the transaction: the last one before QUIT's 221.
      const decisive = replies.filter((l) => !/^221[ -]/.test(l));
      resolve({ exitCode: code, transcript: stdout, replies, last: decisive[decisive.length - 1] ?? '' });
    });
    if (o.data !== undefined) child.stdin!.end(o.data);
    else child.stdin!.end();
  });
}

/** The bytes swaks puts between DATA and the final dot for `data`: it always adds a CRLF. */
export function swaksWire(data: Buffer): Buffer {
  return Buffer.concat([data, Buffer.from('\r\n')]);
}
