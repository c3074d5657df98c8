// Space counted for the whole server, from an SMTP worker process: every hold lives in the
// server process's SpaceLedger (so quota and disk floor see all workers' copies at once); the
// worker keeps a mirror of what each hold has reserved, so that the common case (a chunk or a
// final size within what is reserved already, which cannot be refused) is a notice, not a
// round trip. Only growing a reservation waits for the server process's answer.
// The early answer at RCPT is made here, without asking: this worker's count of the user's
// stored mail (read from the folders at most usageTtlMs ago, plus its own changes) and a
// fresh statfs. It can miss what other workers have in flight at that moment; the binding
// check is the one made as the copies are written, in the server process, on every byte.
import type { Channel, WireError } from './channel.js';
import { statfs } from 'node:fs/promises';
import type { Config } from '../config/index.js';
import type { MaildirStore } from '../maildir/index.js';
import { reply, SmtpReply } from './replies.js';
import { FILE_SLACK, type Space, type SpaceHold } from './space-hold.js';

/** A hold's operation, as the server process applies it to its Reservation. */
export type HoldOp = 'reserve' | 'beforeWrite' | 'afterWrite' | 'settle';

/** Worker -> server process, about space. */
export type SpaceMessage =
  | { t: 'hold'; rid: number; user: string | null; op: HoldOp; n: number }
  | { t: 'release'; rid: number }
  | { t: 'abort'; rid: number };

/** What an SmtpReply becomes on the wire, and back. */
export function flattenReply(err: unknown): WireError {
  if (err instanceof SmtpReply) return { name: 'SmtpReply', code: err.responseCode, enhanced: err.enhanced, text: err.message.slice(err.enhanced.length + 1) };
  return { name: err instanceof Error ? err.name : typeof err };
}

export function reviveReply(e: WireError): Error {
  if (e.name === 'SmtpReply' && e.code && e.enhanced) return new SmtpReply(e.code, e.enhanced, e.text ?? '');
  return Object.assign(new Error(`the server process could not count the space (${e.name})`), { name: e.name });
}

/** statfs is read again once its reading is older than this. */
const DISK_TTL_MS = 1_000;

export class RemoteSpace implements Space {
  private nextId = 1;
  private disk = { free: 0, at: 0 };

  constructor(
    private readonly channel: Channel,
    private readonly config: Pick<Config, 'maildirRoot' | 'limits'>,
    private readonly maildir: MaildirStore,
  ) {}

  open(user: string, signal?: AbortSignal): SpaceHold {
    return new RemoteHold(this.channel, this.nextId++, user, signal);
  }

  openSpool(signal?: AbortSignal): SpaceHold {
    return new RemoteHold(this.channel, this.nextId++, null, signal);
  }

  async admit(user: string, declaredSize: number): Promise<void> {
    const { quotaBytes, minFreeBytes } = this.config.limits;
    const usage = await this.maildir.usage(user);
    if (usage.bytes + declaredSize > quotaBytes) throw reply.overQuota();
    const t = Date.now();
    if (t - this.disk.at > DISK_TTL_MS) {
      const s = await statfs(this.config.maildirRoot);
      this.disk = { free: s.bavail * s.bsize, at: t };
    }
    if (this.disk.free - declaredSize < minFreeBytes) throw reply.diskFull();
  }
}

class RemoteHold implements SpaceHold {
  /** Mirror of the server process's reservation: bytes it has granted this hold. */
  private reserved = 0;
  private written = 0;
  private released = false;

  constructor(
    private readonly channel: Channel,
    private readonly rid: number,
    private readonly user: string | null,
    private readonly signal?: AbortSignal,
  ) {}

  async reserve(total: number): Promise<void> {
    if (total <= this.reserved) return;
    await this.ask('reserve', total);
  }

  async beforeWrite(bytes: number): Promise<void> {
    this.signal?.throwIfAborted();
    if (this.written + bytes + FILE_SLACK <= this.reserved) this.tell('beforeWrite', bytes);
    else await this.ask('beforeWrite', bytes);
    this.written += bytes;
  }

  afterWrite(bytes: number): void {
    this.tell('afterWrite', bytes);
  }

  async settle(size: number): Promise<void> {
    if (size + FILE_SLACK <= this.reserved) this.tell('settle', size);
    else await this.ask('settle', size);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.channel.notify({ t: 'release', rid: this.rid } satisfies SpaceMessage);
  }

  private tell(op: HoldOp, n: number): void {
    this.channel.notify({ t: 'hold', rid: this.rid, user: this.user, op, n } satisfies SpaceMessage);
  }

  private async ask(op: HoldOp, n: number): Promise<void> {
    this.signal?.throwIfAborted();
    const answer = this.channel.request<{ held: number }>({ t: 'hold', rid: this.rid, user: this.user, op, n } satisfies SpaceMessage);
    if (!this.signal) {
      try {
        this.reserved = (await answer).held;
      } catch (err) {
        this.reserved = 0; // a refused reservation holds nothing any more
        throw err;
      }
      return;
    }
    // An abort here ends the wait in the server process too (it may be waiting for room).
    const signal = this.signal;
    let onAbort: () => void = () => undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        this.channel.notify({ t: 'abort', rid: this.rid } satisfies SpaceMessage);
        reject(signal.reason as Error);
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
    answer.catch(() => undefined);
    try {
      this.reserved = (await Promise.race([answer, aborted])).held;
    } catch (err) {
      this.reserved = 0;
      throw err;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }
}
