// Deadlines that a slow client cannot stretch, after Postfix's smtpd_per_record_deadline
// and smtpd_min_data_rate.
//
// smtp-server has only an idle timeout (socketTimeout), and any byte received restarts
// it: a client that sends one byte every few seconds is never timed out, so a few hundred
// such clients hold every connection slot for as long as they like. No option bounds the
// time a command line or a message may take, so patches.ts feeds this per-connection
// watcher from the connection's command parser:
//
// - command deadline: a command line must end within commandTimeoutMs of its first byte;
//   the bytes that trickle in meanwhile do not extend it. Idle time between commands is
//   left to the idle timeout.
// - DATA deadline: from the DATA command on, the message must end within
//   commandTimeoutMs + (bytes received so far) / minDataRate seconds. It is checked on a
//   timer that re-arms itself for the deadline the bytes received so far have bought.
//   Bytes only ever move the deadline later, so arriving bytes need no check of their own.
//
// Time that is the server's turn never counts: a command handler that has not answered,
// the reader of the message holding the client back (back-pressure), and everything after
// the final dot. A TLS handshake after STARTTLS is left to the idle timeout, which its
// bytes do not restart (the TLS socket's timer runs on decrypted input only).
// Over a deadline the client gets one 421 4.4.2 sentence and the connection is closed; in
// DATA the message stream is destroyed the way smtp-server does when a client goes away,
// so the data path removes whatever it wrote and nothing is stored.
import type { Writable } from 'node:stream';
import { reply, type SmtpReply } from './replies.js';

export interface DeadlineOptions {
  commandTimeoutMs: number;
  /** Bytes a second. */
  minDataRate: number;
  /** Told of every connection cut, for the log. */
  onDeadline?: (phase: 'command' | 'data') => void;
}

/** The parts of smtp-server's SMTPStream (the command parser) that are read here. */
export interface ParserState {
  _dataMode: boolean;
  _remainder: string;
  dataBytes: number;
  _dataStream: (Writable & { writableNeedDrain?: boolean }) | null;
}

/** The parts of smtp-server's SMTPConnection that are read here. */
export interface ConnectionState {
  _closing: boolean;
  _closed: boolean;
  _handlerPending: boolean;
  _upgrading: boolean;
  _parser: ParserState | false;
  send(code: number, data?: unknown, context?: unknown): void;
}

/** How often a deadline that is the server's turn looks again. */
const RECHECK_MS = 1000;

export class ConnectionDeadlines {
  /** When the first byte of the unfinished command line arrived; 0 when there is none. */
  private lineStart = 0;
  private lineTimer: NodeJS.Timeout | undefined;
  /** When DATA began, moved later by the time the reader held the client back; 0 outside DATA. */
  private dataStart = 0;
  private dataTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly conn: ConnectionState,
    private readonly opts: DeadlineOptions,
  ) {}

  /** Bytes reached the parser at `at`; in command mode they belong to a command line. */
  input(parser: ParserState, at: number): void {
    if (this.stopped || parser._dataMode || this.lineStart) return;
    this.startLine(at);
  }

  /** The parser is done with a chunk that arrived at `at`; a partial line it kept is owed. */
  inputDone(parser: ParserState, at: number): void {
    if (this.stopped || parser._dataMode || this.lineStart || !parser._remainder) return;
    this.startLine(at);
  }

  /** A whole command line arrived. */
  lineComplete(): void {
    this.lineStart = 0;
    clearTimeout(this.lineTimer);
    this.lineTimer = undefined;
  }

  /** DATA began: the parser now feeds the message stream. */
  dataBegins(): void {
    if (this.stopped) return;
    this.lineComplete();
    this.dataStart = Date.now();
    this.armData(this.opts.commandTimeoutMs);
  }

  /** The connection closed or is closing: nothing is owed any more. */
  stop(): void {
    this.stopped = true;
    this.lineComplete();
    this.dataStart = 0;
    clearTimeout(this.dataTimer);
    this.dataTimer = undefined;
  }

  private over(): boolean {
    return this.stopped || this.conn._closing || this.conn._closed;
  }

  private startLine(at: number): void {
    this.lineStart = at;
    this.armLine(Math.max(0, at + this.opts.commandTimeoutMs - Date.now()));
  }

  private armLine(ms: number): void {
    clearTimeout(this.lineTimer);
    this.lineTimer = setTimeout(() => this.checkLine(), ms);
    this.lineTimer.unref();
  }

  private checkLine(): void {
    this.lineTimer = undefined;
    if (this.over() || !this.lineStart) return;
    if (this.conn._handlerPending || this.conn._upgrading) return this.armLine(RECHECK_MS);
    const left = this.lineStart + this.opts.commandTimeoutMs - Date.now();
    if (left > 0) return this.armLine(left);
    this.refuse(reply.commandTooSlow());
    this.opts.onDeadline?.('command');
  }

  private armData(ms: number): void {
    clearTimeout(this.dataTimer);
    this.dataTimer = setTimeout(() => this.checkData(), ms);
    this.dataTimer.unref();
  }

  private checkData(): void {
    this.dataTimer = undefined;
    if (this.over() || !this.dataStart) return;
    const parser = this.conn._parser;
    if (!parser || !parser._dataMode) {
      // The final dot arrived: what follows is the server's turn, then commands again.
      this.dataStart = 0;
      return;
    }
    const stream = parser._dataStream;
    if (stream && stream.writableNeedDrain) {
      // The reader of the message is behind and the parser waits for it, not for the client.
      this.dataStart += RECHECK_MS;
      return this.armData(RECHECK_MS);
    }
    const deadline = this.dataStart + this.opts.commandTimeoutMs + (parser.dataBytes * 1000) / this.opts.minDataRate;
    const left = deadline - Date.now();
    if (left > 0) return this.armData(Math.max(10, left));
    this.refuse(reply.dataTooSlow());
    if (stream && !stream.destroyed && !stream.writableEnded) {
      // The same error smtp-server gives the message stream when the client disconnects.
      const err = Object.assign(new Error('Connection closed before the message was received in full'), { code: 'ECONNECTION' });
      stream.destroy(stream.listenerCount('error') ? err : undefined);
    }
    this.opts.onDeadline?.('data');
  }

  private refuse(r: SmtpReply): void {
    this.stop();
    // A 421 makes smtp-server close the connection after the reply.
    this.conn.send(r.responseCode, r.message);
  }
}
