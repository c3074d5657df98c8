// Three narrow adjustments to smtp-server 3.x that its options do not offer. Hand-written
// because no option exists; guarded so that an incompatible smtp-server fails loudly at
// start instead of misbehaving.
//
// 1. The greeting pause. smtp-server waits a hard-coded 100 ms before "220" to catch
//    clients that talk before the greeting ("early talkers"). kzymy makes the pause
//    configurable (smtp.greetingDelayMs, default 0; see docs/threat-model.md): mail is
//    only accepted for random per-user subdomains, so the pause buys little, and it caps
//    one-message-per-connection intake at sessions / 0.1 s.
// 2. Enhanced status codes. smtp-server prefixes every reply with an enhanced code looked
//    up from the basic code alone (550 -> 5.1.1), so "550 5.7.1 relay denied" would come
//    out as "550 5.1.1 5.7.1 ...". A reply text that already starts with an enhanced code
//    is sent as it is, and an over-long command line is reported as such.
// 3. Deadlines a trickle cannot stretch. smtp-server's only timer is the idle timeout,
//    which every received byte restarts, and no option bounds how long a command line or
//    a message may take. Each connection's command parser reports to a
//    ConnectionDeadlines (deadlines.ts, which explains the rules): bytes arriving, a
//    partial line kept, a whole line, the start of DATA; the connection's end stops it.
//    Active when the server options carry commandTimeoutMs and minDataRate.
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { ConnectionDeadlines, type ConnectionState, type DeadlineOptions, type ParserState } from './deadlines.js';

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;
let applied = false;

interface ConnectionInternals extends ConnectionState {
  _server: {
    options: { maxClients?: number; greetingDelayMs?: number } & Partial<DeadlineOptions>;
    connections: Set<unknown>;
  };
  name: string;
  _setListeners(cb: () => void): void;
  connectionReady(): void;
  _createParser(): ParserInternals;
  _onCommand(command: Buffer, callback?: () => void): void;
  _onClose(): void;
  close(): void;
  /** Set by patch 3. */
  kzymyDeadlines?: ConnectionDeadlines;
}

type WriteCallback = (err?: Error | null) => void;

interface ParserInternals extends ParserState {
  _write(chunk: Buffer, encoding: string, next: WriteCallback): void;
  startDataMode(maxBytes?: number): unknown;
}

/** The watcher of a connection, made on first use; none unless both deadline options are set. */
function deadlinesOf(conn: ConnectionInternals): ConnectionDeadlines | undefined {
  if (conn.kzymyDeadlines) return conn.kzymyDeadlines;
  const { commandTimeoutMs, minDataRate, onDeadline } = conn._server.options;
  if (!commandTimeoutMs || !minDataRate) return undefined;
  return (conn.kzymyDeadlines = new ConnectionDeadlines(conn, { commandTimeoutMs, minDataRate, onDeadline }));
}

/** Fails at start if the command parser no longer has the fields patch 3 reads. */
function checkParser(): void {
  const stream = new SMTPStream({});
  const probe = stream as unknown as ParserInternals;
  const ok =
    typeof probe._write === 'function' &&
    typeof probe.startDataMode === 'function' &&
    typeof probe._dataMode === 'boolean' &&
    typeof probe._remainder === 'string' &&
    typeof probe.dataBytes === 'number' &&
    '_dataStream' in probe;
  stream.destroy();
  if (!ok) throw new Error("This version of smtp-server's SMTPStream differs from the one kzymy's deadline patch was written for; the patch needs review.");
}

export function applySmtpServerPatches(): void {
  if (applied) return;
  const proto = SMTPConnection.prototype as unknown as ConnectionInternals & Record<string, unknown>;
  for (const name of ['init', 'send', '_setListeners', 'connectionReady', '_createParser', '_onCommand', '_onClose', 'close']) {
    if (typeof proto[name] !== 'function') {
      throw new Error(`This version of smtp-server lacks SMTPConnection.${name}; kzymy's patches need review.`);
    }
  }
  checkParser();

  proto.init = function init(this: ConnectionInternals) {
    this._setListeners(() => {
      const opts = this._server.options;
      if (opts.maxClients && this._server.connections.size > opts.maxClients) {
        return this.send(421, '4.7.0 ' + this.name + ' Too many connected clients, try again in a moment');
      }
      const delay = opts.greetingDelayMs ?? 100;
      if (delay <= 0) return setImmediate(() => this.connectionReady());
      setTimeout(() => this.connectionReady(), delay).unref();
    });
  };

  const send = proto.send;
  proto.send = function patchedSend(this: ConnectionInternals, code: number, data?: unknown, context?: unknown) {
    // An over-long command line ends the session with 421; its generic 4.4.2 ("timeout")
    // would mislead the client, so say what happened: a syntax problem (X.5.0).
    if (code === 421 && data === 'Error: Command line too long') data = '4.5.0 Command line too long; closing connection';
    if (typeof data === 'string' && ENHANCED.test(data)) context = false;
    return send.call(this, code, data, context);
  };

  const createParser = proto._createParser;
  proto._createParser = function patchedCreateParser(this: ConnectionInternals) {
    const parser = createParser.call(this);
    const deadlines = deadlinesOf(this);
    if (!deadlines) return parser;
    // Own properties win over the prototype's, for Writable's calls and the parser's own.
    const write = parser._write;
    parser._write = function timedWrite(this: ParserInternals, chunk, encoding, next) {
      if (!chunk || !chunk.length) return write.call(this, chunk, encoding, next);
      const at = Date.now();
      deadlines.input(parser, at);
      return write.call(this, chunk, encoding, (err) => {
        deadlines.inputDone(parser, at);
        next(err);
      });
    };
    const startDataMode = parser.startDataMode;
    parser.startDataMode = function timedDataMode(this: ParserInternals, maxBytes?: number) {
      const stream = startDataMode.call(this, maxBytes);
      deadlines.dataBegins();
      return stream;
    };
    return parser;
  };

  const onCommand = proto._onCommand;
  proto._onCommand = function patchedOnCommand(this: ConnectionInternals, command: Buffer, callback?: () => void) {
    this.kzymyDeadlines?.lineComplete();
    return onCommand.call(this, command, callback);
  };
  const close = proto.close;
  proto.close = function patchedClose(this: ConnectionInternals) {
    this.kzymyDeadlines?.stop();
    return close.call(this);
  };
  const onClose = proto._onClose;
  proto._onClose = function patchedOnClose(this: ConnectionInternals) {
    this.kzymyDeadlines?.stop();
    return onClose.call(this);
  };
  applied = true;
}
