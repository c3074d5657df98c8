// The --mda destination: each message on the stdin of a command, like getmail's
// MDA_external, made safe against a message that turns out broken after it began.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { chunksOf, reason, type Chunks, type DeliveryInfo, type Destination } from './deliver.js';
import { DeliveryError, EXIT_TEMPFAIL } from './errors.js';

/** Exit status an MDA uses for "try again later" (sysexits EX_TEMPFAIL). */
export const MDA_TEMPFAIL = 75;

/** SIGKILL to a detached child's whole process group. */
function killGroup(child: { pid?: number }): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/**
 * `/bin/sh -c COMMAND` with the message on stdin: exit 0 and nothing on stderr means
 * delivered; exit 75 means try again later; anything else is not delivered.
 *
 * An MDA cannot be asked to give back what it has read, and one that got a cut-short
 * message may well exit 0 and file it. So (1) the downloaded file reaches an MDA only
 * complete: fetch spools it first (ciphertext, see Spool) and checks its size; (2) the
 * message is written with backpressure and stdin is closed (end of file) only after the
 * last chunk arrived intact. When the message fails midway (gpg finds the ciphertext
 * damaged, which it may do only after writing most of the plaintext), the MDA is killed
 * with SIGKILL (its whole process group) while its stdin is still open, so that it never
 * sees the end of the message, and the message counts as not delivered whatever it did. An MDA that delivers what it has
 * read before end of file is not one kzymy-client can make safe; procmail, maildrop,
 * dovecot-lda and `cat > file` read to end of file first.
 */
export class MdaDestination implements Destination {
  readonly irrevocable = true;

  constructor(readonly command: string) {}

  describe(): string {
    return `the MDA "${this.command}"`;
  }

  async deliver(message: Buffer | Chunks, info: DeliveryInfo): Promise<number> {
    const env: NodeJS.ProcessEnv = { ...process.env, KZYMY_MESSAGE_ID: info.id };
    if (info.sender !== undefined) env.SENDER = info.sender;
    if (info.recipient !== undefined) env.RECIPIENT = info.recipient;
    // Its own process group, so that a kill reaches every process of the command (a
    // pipeline, a subshell), not only /bin/sh: none of them may see the end of its input.
    const child = spawn('/bin/sh', ['-c', this.command], { stdio: ['pipe', 'ignore', 'pipe'], env, detached: true });
    const killAll = (): void => killGroup(child);
    // A client that exits now (a second SIGINT) must not leave the MDA a cut-short input.
    process.on('exit', killAll);
    try {
      return await this.feed(child, message);
    } finally {
      process.off('exit', killAll);
    }
  }

  private async feed(child: ChildProcessByStdio<Writable, null, Readable>, message: Buffer | Chunks): Promise<number> {
    const killAll = (): void => killGroup(child);
    const err: Buffer[] = [];
    let errBytes = 0;
    child.stderr.on('data', (c: Buffer) => {
      if (errBytes < 64 * 1024) err.push(c);
      errBytes += c.length;
    });
    let spawnFailure: Error | null = null;
    const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on('error', (e) => {
        spawnFailure = e;
      });
      child.on('close', (code, signal) => resolve({ code, signal }));
    });
    let reading = true; // false once the MDA stopped reading (EPIPE): its exit status tells
    child.stdin.on('error', () => {
      reading = false;
    });
    const stdinClosed = new Promise<void>((resolve) => child.stdin.once('close', () => resolve()));
    let size = 0;
    try {
      for await (const chunk of chunksOf(message)) {
        size += chunk.length;
        if (reading && !child.stdin.destroyed) {
          // Backpressure: wait until the MDA has taken the chunk (or gone).
          if (!child.stdin.write(chunk)) await Promise.race([once(child.stdin, 'drain').catch(() => undefined), stdinClosed]);
        }
        // Past an MDA that stopped reading, the rest is still read, so that a failure of
        // the message (gpg's verdict at its end) is known before the MDA counts.
      }
    } catch (e) {
      killAll();
      await closed;
      throw e;
    }
    child.stdin.end();
    const { code, signal } = await closed;
    if (spawnFailure) throw new DeliveryError(`Cannot run the MDA: ${reason(spawnFailure)}.`);
    const stderr = Buffer.concat(err).toString('utf8').trim();
    const said = stderr ? `: ${firstLine(stderr)}` : '';
    if (code === 0 && !stderr) return size;
    if (code === 0) throw new DeliveryError(`The MDA exited 0 but wrote to stderr, so the message counts as not delivered${said}.`);
    if (code === MDA_TEMPFAIL) throw new DeliveryError(`The MDA asked to try again later (exit 75)${said}.`, EXIT_TEMPFAIL);
    if (signal) throw new DeliveryError(`The MDA was killed by ${signal}; the message was not delivered.`);
    throw new DeliveryError(`The MDA exited ${code}; the message was not delivered${said}.`);
  }
}

function firstLine(s: string): string {
  const line = s.split('\n')[0]!.trim();
  return line.length > 200 ? line.slice(0, 200) + '...' : line;
}
