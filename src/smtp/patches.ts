// Four narrow adjustments to smtp-server that its options do not offer (3.21.6 has no option
// for a greeting pause, for a reply's own enhanced code, for the over-long line's reply, for a
// deadline on a line or a message, or for the DATA parser). package.json pins the exact
// smtp-server version they were reviewed against. At start (and in test/smtp/patches.test.ts)
// the source of every method they replace or wrap is compared with the reviewed one, and once
// applied, the patched connection is run over a stub socket and what it writes is compared
// with what the patches promise: another smtp-server refuses to start, naming what changed,
// instead of misbehaving.
//
// 1. The greeting pause. smtp-server waits a hard-coded 100 ms before "220" to catch
//    clients that talk before the greeting ("early talkers"). kzymy makes the pause
//    configurable (smtp.greetingDelayMs, default 0; see docs/threat-model.md): mail is
//    only accepted for random per-user subdomains, so the pause buys little, and it caps
//    one-message-per-connection intake at sessions / 0.1 s.
// 2. Enhanced status codes. smtp-server prefixes every reply with an enhanced code looked
//    up from the basic code alone (550 -> 5.1.1), so "550 5.7.1 relay denied" would come
//    out as "550 5.1.1 5.7.1 ...". A reply text that already starts with an enhanced code
//    is sent as it is, and an over-long command line is reported as such. (Its option
//    hideENHANCEDSTATUSCODES is no substitute: it drops the codes from smtp-server's own
//    replies and the ENHANCEDSTATUSCODES keyword from EHLO.)
// 3. Deadlines a trickle cannot stretch. smtp-server's only timer is the idle timeout,
//    which every received byte restarts, and no option bounds how long a command line or
//    a message may take. Each connection's command parser reports to a
//    ConnectionDeadlines (deadlines.ts, which explains the rules): bytes arriving, a
//    partial line kept, a whole line, the start of DATA; the connection's end stops it.
//    Active when the server options carry commandTimeoutMs and minDataRate.
// 4. A faster DATA parser. smtp-server's looks at every byte of a message in a JavaScript
//    loop and copies every chunk to put the bytes it held back in front; for a large
//    message it cost more CPU than the encryption. data-stream.ts does the same with
//    Buffer.indexOf and views of the received chunks, byte for byte the same output,
//    count and leftover (test/smtp/data-stream.test.ts compares the two on random input).
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { UserError } from '../config/index.js';
import { feedDataStream } from './data-stream.js';
import { probeConnection } from './patch-probe.js';
import { ConnectionDeadlines, type ConnectionState, type DeadlineOptions, type ParserState } from './deadlines.js';

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;
let applied = false;
/** Set when the patched connection failed its check: the patches stay refused. */
let refusal: UserError | null = null;

/** The smtp-server release the patches were reviewed against (pinned in package.json). */
export const REVIEWED_VERSION = '3.21.6';

/**
 * SHA-256 (first 16 hex digits) of the source text of each method the patches replace,
 * wrap or rely on, as in REVIEWED_VERSION: its ESM build, and its CommonJS build where
 * that differs (test runners may load either). `init` is replaced by a copy, so any change
 * to it matters; the others are wrapped, and their contract (arguments, fields) is what counts.
 */
const REVIEWED: Record<string, readonly string[]> = {
  'SMTPConnection.init': ['1265a7d7ca8f5510'],
  'SMTPConnection.send': ['c33568c0111a58b2'],
  'SMTPConnection._getEnhancedStatusCode': ['c0488b13c4262983'],
  'SMTPConnection._setListeners': ['cf07ab6f47db09ac'],
  'SMTPConnection.connectionReady': ['361a2b1de88fbf67', '62c0ab75022331de'],
  'SMTPConnection._createParser': ['15ca8c360137e06a', '64259b0d868642ea'],
  'SMTPConnection._onCommand': ['41c8a1b7a32aa314'],
  'SMTPConnection._onClose': ['097b8d221da5c5ad'],
  'SMTPConnection.close': ['4b80aaabd134a732', '8b9a23413167403a'],
  'SMTPStream._write': ['a72635ce53e24b3a'],
  'SMTPStream.startDataMode': ['d007d5db8cb9dad7', '2f010f22ffb8d449'],
  'SMTPStream._feedDataStream': ['9d8b903f9a3a6354'],
  'SMTPStream._countDataBytes': ['4b938ebe6c9971eb'],
  'SMTPStream._endDataMode': ['7de0cf3d06716328'],
};

/** The installed smtp-server's version, from its package.json. */
export function installedSmtpServerVersion(): string {
  const require = createRequire(import.meta.url);
  return (require('smtp-server/package.json') as { version: string }).version;
}

/** The methods named in REVIEWED as the given prototypes define them. */
export function methodsOf(protos: { SMTPConnection: object; SMTPStream: object }): Record<string, unknown> {
  return Object.fromEntries(
    Object.keys(REVIEWED).map((name) => {
      const [cls, method] = name.split('.') as [string, string];
      return [name, (protos[cls as keyof typeof protos] as Record<string, unknown>)[method]];
    }),
  );
}

/** smtp-server's own methods, as loaded: this module is the only one that patches them. */
const ORIGINALS: Readonly<Record<string, unknown>> = Object.freeze(methodsOf({ SMTPConnection: SMTPConnection.prototype, SMTPStream: SMTPStream.prototype }));

/** smtp-server's unpatched methods by name, e.g. "SMTPStream.startDataMode". */
export function originalMethods(): Record<string, unknown> {
  return { ...ORIGINALS };
}

/** The methods whose source differs from the reviewed one (empty: the patches apply as reviewed). */
export function reviewedDifferences(methods: Record<string, unknown> = ORIGINALS): string[] {
  const changed: string[] = [];
  for (const [name, digest] of Object.entries(REVIEWED)) {
    const fn = methods[name];
    const now = typeof fn === 'function' ? createHash('sha256').update(fn.toString()).digest('hex').slice(0, 16) : 'missing';
    if (!digest.includes(now)) changed.push(name);
  }
  return changed;
}

/** Throws the UserError that names every reviewed method whose source changed. */
export function checkReviewed(methods: Record<string, unknown> = ORIGINALS): void {
  const changed = reviewedDifferences(methods);
  if (!changed.length) return;
  const version = installedSmtpServerVersion();
  const which = version === REVIEWED_VERSION ? `The installed smtp-server ${version} differs from` : `smtp-server ${version} is not`;
  throw new UserError(
    `${which} the ${REVIEWED_VERSION} that kzymy's patches (src/smtp/patches.ts) were reviewed against: ` +
      `${changed.join(', ')} changed. Install smtp-server ${REVIEWED_VERSION} (npm ci), or review the patches for this version.`,
  );
}

/** What a patched connection must write: one probe per promise the patches make. */
const PROBES: ReadonlyArray<{ what: string; run: (c: ConnectionInternals) => void; line: string }> = [
  { what: 'a reply with its own enhanced code', run: (c) => c.send(550, '5.7.1 Relaying denied'), line: '550 5.7.1 Relaying denied' },
  { what: 'a reply without one', run: (c) => c.send(550, 'No such mailbox here'), line: '550 5.1.1 No such mailbox here' },
  { what: 'an over-long command line', run: (c) => c.send(421, 'Error: Command line too long'), line: '421 4.5.0 Command line too long; closing connection' },
  { what: 'a connection over maxClients', run: (c) => c.init(), line: '421 4.7.0 self-check Too many connected clients, try again in a moment' },
];

/**
 * Proves the patches on a connection made by `Connection` (smtp-server's, once patched): each
 * probe must write exactly its line. Throws a UserError naming the first that does not.
 */
export function checkPatchedConnection(Connection: new (...args: never[]) => object = SMTPConnection as never): void {
  for (const p of PROBES) {
    let got: string;
    try {
      got = probeConnection(Connection, p.run);
    } catch (err) {
      got = `nothing: it threw ${String(err)}`;
    }
    if (got === p.line) continue;
    throw new UserError(
      `smtp-server's connection does not behave as kzymy's patches (src/smtp/patches.ts) expect: for ${p.what} it wrote ${JSON.stringify(got)} instead of "${p.line}". ` +
        `Install smtp-server ${REVIEWED_VERSION} (npm ci), or review the patches for this version.`,
    );
  }
}

export interface ConnectionInternals extends ConnectionState {
  _server: {
    options: { maxClients?: number; greetingDelayMs?: number } & Partial<DeadlineOptions>;
    connections: Set<unknown>;
  };
  name: string;
  init(): void;
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
  _lastBytes?: Buffer | false;
  _atDataStart?: boolean;
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

/** Fails at start if the command parser no longer has the fields patches 3 and 4 read. */
function checkParser(): void {
  const stream = new SMTPStream({});
  const probe = stream as unknown as ParserInternals;
  const ok =
    typeof probe._write === 'function' &&
    typeof probe.startDataMode === 'function' &&
    typeof probe._dataMode === 'boolean' &&
    typeof probe._remainder === 'string' &&
    typeof probe.dataBytes === 'number' &&
    probe._lastBytes === false &&
    typeof probe._atDataStart === 'boolean' &&
    '_dataStream' in probe;
  stream.destroy();
  if (!ok) throw new UserError("This version of smtp-server's SMTPStream differs from the one kzymy's deadline patch was written for; the patch needs review.");
}

export function applySmtpServerPatches(): void {
  if (refusal) throw refusal;
  if (applied) return;
  checkReviewed();
  const proto = SMTPConnection.prototype as unknown as ConnectionInternals & Record<string, unknown>;
  checkParser();

  (SMTPStream.prototype as unknown as Record<string, unknown>)._feedDataStream = feedDataStream;

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
  // Either end of a connection stops its deadlines.
  for (const name of ['close', '_onClose'] as const) {
    const original = proto[name];
    proto[name] = function stopDeadlines(this: ConnectionInternals) {
      this.kzymyDeadlines?.stop();
      return original.call(this);
    };
  }
  applied = true;
  try {
    checkPatchedConnection();
  } catch (err) {
    if (err instanceof UserError) refusal = err;
    throw err;
  }
}
