// tor's control port (control-spec.txt), used read-only: how far tor has bootstrapped, and
// when the onion service's descriptor has been uploaded to the directories ("published").
// Hand-written: the npm tor-control clients are unmaintained, and kzymy needs only
// PROTOCOLINFO, AUTHENTICATE (cookie), GETINFO and SETEVENTS over a unix socket.
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import type { Logger } from '../config/log.js';
import { UserError } from '../config/index.js';

export interface TorBootstrap {
  percent: number;
  tag: string;
  summary: string;
}

export interface TorState {
  /** The control socket asked, or null when there is none. */
  socket: string | null;
  /** `connected` while kzymy follows tor's events; else why not, as a sentence. */
  control: 'connected' | 'connecting' | 'unreachable';
  reason: string | null;
  bootstrap: TorBootstrap | null;
  /** When tor last reported the descriptor of kzymy's onion as uploaded (ISO time). */
  publishedAt: string | null;
  /** How many directories accepted it since kzymy started. */
  uploads: number;
}

export interface TorWatch {
  state(): TorState;
  close(): void;
}

export interface WatchTorOptions {
  socket: string;
  logger: Logger;
  /** The onion address kzymy serves (with ".onion"), once known. */
  onion: () => string | null;
  /** Wait before connecting again after the socket closed or could not be reached. */
  retryMs?: number;
  /** Log an unreachable socket at info (system tor) or at debug only. */
  quietUnreachable?: boolean;
  /** How long connecting and authenticating may take (default 10 s). */
  handshakeMs?: number;
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
class ControlConnection {
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

  async command(cmd: string): Promise<string[]> {
    const reply = new Promise<string[]>((resolve, reject) => this.pending.push({ resolve, reject }));
    this.sock.write(`${cmd}\r\n`);
    const lines = await reply;
    const last = lines[lines.length - 1] ?? '';
    if (!last.startsWith('250')) throw new UserError(`tor refused ${cmd.split(' ')[0]}: ${last}`);
    return lines;
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Authenticates with the cookie tor names in PROTOCOLINFO (or none if tor asks none). */
async function authenticate(c: ControlConnection): Promise<void> {
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

/**
 * Follows tor through its control socket: bootstrap progress and descriptor uploads of
 * kzymy's onion, logged at info as they happen. Connects again after tor restarts.
 */
export function watchTor(opts: WatchTorOptions): TorWatch {
  const { socket, logger } = opts;
  const retryMs = opts.retryMs ?? 5_000;
  const state: TorState = { socket, control: 'connecting', reason: null, bootstrap: null, publishedAt: null, uploads: 0 };
  let conn: ControlConnection | null = null;
  let timer: NodeJS.Timeout | null = null;
  let closed = false;
  let saidUnreachable = false;

  const setBootstrap = (b: TorBootstrap | null): void => {
    if (!b || (state.bootstrap && state.bootstrap.percent === b.percent && state.bootstrap.tag === b.tag)) return;
    state.bootstrap = b;
    // tor's summary is its own fixed text (no mail data, no addresses).
    logger.info({ evt: 'tor-bootstrap', percent: b.percent, tag: b.tag }, `tor bootstrapped ${b.percent}%: ${b.summary}`);
  };

  const onEvent = (text: string): void => {
    const line = text.replace(/^650[ -]/, '');
    if (line.startsWith('STATUS_CLIENT')) return setBootstrap(parseBootstrap(line));
    if (!line.startsWith('HS_DESC ')) return;
    // HS_DESC Action HSAddress AuthType HsDir ...
    const [, action, address] = line.split(' ');
    const ours = opts.onion()?.replace(/\.onion$/, '');
    if (!ours || address !== ours) return;
    if (action === 'UPLOADED') {
      state.uploads++;
      const first = state.publishedAt === null;
      state.publishedAt = new Date().toISOString();
      if (first) logger.info({ evt: 'onion-published' }, 'onion service descriptor published: the onion is reachable over Tor');
      else logger.debug({ evt: 'onion-published', uploads: state.uploads }, 'onion service descriptor uploaded again');
    } else if (action === 'FAILED') {
      logger.debug({ evt: 'onion-upload-failed', reason: parseKeywords(line).REASON ?? '' }, 'a directory did not take the descriptor');
    }
  };

  const retry = (): void => {
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = null;
      connect();
    }, retryMs);
    timer.unref();
  };

  const unreachable = (reason: string): void => {
    state.control = 'unreachable';
    state.reason = reason;
    const quiet = opts.quietUnreachable || saidUnreachable;
    saidUnreachable = true;
    logger[quiet ? 'debug' : 'info']({ evt: 'tor-control-unreachable', socket }, `tor's control socket cannot be used (${reason}): tor's bootstrap and publication are unknown`);
  };

  const connect = (): void => {
    if (closed) return;
    state.control = 'connecting';
    const c = new ControlConnection(socket, onEvent, (err) => {
      if (conn !== c) return;
      conn = null;
      if (closed) return;
      if (state.control === 'connected') unreachable(err ? `${(err as NodeJS.ErrnoException).code ?? err.message}` : 'tor closed the connection');
      retry();
    });
    conn = c;
    let timedOut = false;
    const handshake = setTimeout(() => {
      timedOut = true;
      c.close();
    }, opts.handshakeMs ?? 10_000);
    handshake.unref();
    void (async () => {
      try {
        await c.ready();
        await authenticate(c);
        // The phase now, then every change: tor sends events only after SETEVENTS.
        setBootstrap(parseBootstrap((await c.command('GETINFO status/bootstrap-phase')).join(' ')));
        await c.command('SETEVENTS STATUS_CLIENT HS_DESC');
        clearTimeout(handshake);
        state.control = 'connected';
        state.reason = null;
        saidUnreachable = false;
        logger.debug({ evt: 'tor-control', socket }, "following tor's events on its control socket");
      } catch (err) {
        clearTimeout(handshake);
        const e = err as NodeJS.ErrnoException;
        unreachable(timedOut ? `no answer within ${Math.round((opts.handshakeMs ?? 10_000) / 1000)} s` : (e.code ?? e.message));
        if (conn === c) conn = null;
        c.close();
        retry();
      }
    })();
  };

  connect();
  return {
    state: () => ({ ...state, bootstrap: state.bootstrap && { ...state.bootstrap } }),
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      conn?.close();
      conn = null;
    },
  };
}

/** What `askTor` learns from tor in one visit. */
export interface TorAnswer {
  bootstrap: TorBootstrap | null;
  /**
   * The onion service's current descriptor as tor holds it (GETINFO hs/service/desc/id/ADDR),
   * or null when tor has built none yet. tor builds it once it has a consensus and uploads it
   * to the directories when its introduction points are up; the control port does not say
   * afterwards which directories accepted it (only HS_DESC events, live, do).
   */
  descriptor: { revision: number | null; lifetimeMinutes: number | null } | null;
}

/**
 * One visit to tor's control socket, for a command run by the operator: authenticates as
 * `watchTor` does, asks the bootstrap phase and the onion's current descriptor, and leaves.
 * Throws (with the errno code where there is one) when the socket cannot be used.
 */
export async function askTor(socket: string, onion: string | null, timeoutMs = 10_000): Promise<TorAnswer> {
  const c = new ControlConnection(socket, () => undefined, () => undefined);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    c.close();
  }, timeoutMs);
  timer.unref();
  try {
    await c.ready();
    await authenticate(c);
    const bootstrap = parseBootstrap((await c.command('GETINFO status/bootstrap-phase')).join(' '));
    let descriptor: TorAnswer['descriptor'] = null;
    const address = onion?.replace(/\.onion$/, '');
    if (address && /^[a-z2-7]{56}$/.test(address)) {
      try {
        const lines = await c.command(`GETINFO hs/service/desc/id/${address}`);
        const field = (name: string): number | null => {
          const m = lines.map((l) => new RegExp(`^${name} (\\d+)$`).exec(l)).find(Boolean);
          return m ? Number(m[1]) : null;
        };
        if (lines.some((l) => /^hs-descriptor 3$/.test(l))) descriptor = { revision: field('revision-counter'), lifetimeMinutes: field('descriptor-lifetime') };
      } catch (err) {
        // 551/552: tor has no descriptor for the address (not built yet, or not its service).
        if (!/: 55[12] /.test((err as Error).message)) throw err;
      }
    }
    return { bootstrap, descriptor };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw timedOut ? new UserError(`no answer within ${Math.round(timeoutMs / 1000)} s`) : e;
  } finally {
    clearTimeout(timer);
    c.close();
  }
}
