// Messages between the SMTP primary (the server process) and its worker processes, over
// Node's IPC channel. A request gets exactly one answer; a notice gets none. Messages sent in
// one turn of the event loop travel together as one array: one write and one parse instead of
// one per message, which matters at a few messages per mail and a thousand mails a second.
// Node's IPC delivers messages in order, so a notice sent before a request is handled first.
// Hand-written: no maintained package does request/answer plus batching over process.send.
import type { Socket } from 'node:net';

/** What travels: requests, answers, notices; never mail content. */
type Packet =
  | { k: 'req'; id: number; m: unknown }
  | { k: 'res'; id: number; ok: true; v: unknown }
  | { k: 'res'; id: number; ok: false; e: WireError }
  | { k: 'note'; m: unknown };

/** An error as it crosses: an SMTP reply keeps its code and text; anything else only its name. */
export interface WireError {
  name: string;
  code?: number;
  enhanced?: string;
  text?: string;
}

/** The one end of the IPC channel: `process` in a worker, the ChildProcess in the primary. */
export interface Port {
  send(message: unknown, handle?: Socket, options?: { keepOpen?: boolean }, callback?: (err: Error | null) => void): boolean;
  on(event: 'message', listener: (message: unknown, handle?: unknown) => void): unknown;
  on(event: 'disconnect', listener: () => void): unknown;
  connected?: boolean;
}

export interface Handlers {
  /** Answers a request; a thrown error is sent back as a WireError. */
  request?(message: unknown): unknown;
  notice?(message: unknown): void;
  /** A message that came with a socket; null when the socket was gone before it could travel. */
  socket?(message: unknown, socket: Socket | null): void;
}

/** How long a notice may wait for others to travel with it. */
const NOTICE_DELAY_MS = 2;

export class ChannelClosed extends Error {
  constructor() {
    super('the channel to the other process is closed');
    this.name = 'ChannelClosed';
  }
}

export class Channel {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  private outbox: Packet[] = [];
  private flushing = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly port: Port,
    private readonly handlers: Handlers,
    /** Turns an error that came back into the error to throw (e.g. an SmtpReply). */
    private readonly revive: (e: WireError) => Error = (e) => Object.assign(new Error(e.name), { name: e.name }),
    /** Turns a thrown error into what may cross (never its message, unless it is an SMTP reply). */
    private readonly flatten: (err: unknown) => WireError = (err) => ({ name: err instanceof Error ? err.name : typeof err }),
  ) {
    port.on('message', (message, handle) => this.receive(message, handle));
    port.on('disconnect', () => this.close());
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  request<T>(m: unknown): Promise<T> {
    if (this.closed) return Promise.reject(new ChannelClosed());
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.queue({ k: 'req', id, m });
    });
  }

  notify(m: unknown): void {
    if (!this.closed) this.queue({ k: 'note', m });
  }

  /**
   * Sends `m` with a socket (after everything queued before it). This process keeps its own
   * copy of the socket open (the caller closes it once the other side says it has the socket):
   * Node does not close a passed socket whose receiver died before acknowledging it, and
   * that client would wait for ever. `failed` runs when the send fails. False only when the
   * channel is closed: send()'s own false means "queued behind others" (each socket waits for
   * the other side's acknowledgement before the next one goes).
   */
  sendSocket(m: unknown, socket: Socket, failed?: () => void): boolean {
    if (this.closed) return false;
    this.flush();
    try {
      this.port.send({ k: 'sock', m }, socket, { keepOpen: true }, (err) => {
        if (err) failed?.();
      });
    } catch {
      return false;
    }
    return true;
  }

  /** Rejects every request still waiting (the other process is gone). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.outbox = [];
    for (const p of this.pending.values()) p.reject(new ChannelClosed());
    this.pending.clear();
  }

  /**
   * Requests and answers leave at the end of this turn of the event loop; notices wait up to
   * NOTICE_DELAY_MS for company (a mail makes several, at moments apart), which saves a write
   * and a wake-up of the other process for most of them. Order is kept either way.
   */
  private queue(p: Packet): void {
    this.outbox.push(p);
    if (p.k === 'note' && !(p.m as { t?: string } | null)?.t?.startsWith('closed')) {
      if (!this.flushing && !this.timer) {
        this.timer = setTimeout(() => this.flush(), NOTICE_DELAY_MS);
        this.timer.unref();
      }
      return;
    }
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushing = false;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.outbox.length === 0 || this.closed) return;
    const batch = this.outbox;
    this.outbox = [];
    if (this.port.connected === false) return this.close();
    try {
      this.port.send(batch, undefined, undefined, (err) => {
        if (err) this.close();
      });
    } catch {
      this.close();
    }
  }

  private receive(message: unknown, handle: unknown): void {
    if (this.closed) return;
    if (Array.isArray(message)) {
      for (const p of message as Packet[]) this.one(p);
      return;
    }
    const m = message as { k?: string; m?: unknown };
    // A socket the client closed before it could be passed arrives as the message alone.
    if (m && m.k === 'sock') this.handlers.socket?.(m.m, (handle as Socket | undefined) ?? null);
  }

  private one(p: Packet): void {
    if (p.k === 'note') return this.handlers.notice?.(p.m);
    if (p.k === 'res') {
      const waiting = this.pending.get(p.id);
      if (!waiting) return;
      this.pending.delete(p.id);
      if (p.ok) waiting.resolve(p.v);
      else waiting.reject(this.revive(p.e));
      return;
    }
    if (p.k === 'req') {
      const answer = (v: unknown) => this.queue({ k: 'res', id: p.id, ok: true, v: v ?? null });
      const fail = (err: unknown) => this.queue({ k: 'res', id: p.id, ok: false, e: this.flatten(err) });
      try {
        const r = this.handlers.request ? this.handlers.request(p.m) : undefined;
        if (r instanceof Promise) r.then(answer, fail);
        else answer(r);
      } catch (err) {
        fail(err);
      }
    }
  }
}
