// tor's control port (control-spec.txt), used read-only: how far tor has bootstrapped, and
// when the onion service's descriptor has been uploaded to the directories ("published").
// Hand-written: the npm tor-control clients are unmaintained, and kzymy needs only
// PROTOCOLINFO, AUTHENTICATE (cookie), GETINFO and SETEVENTS over a unix socket.
import type { Logger } from '../config/log.js';
import { UserError } from '../config/index.js';
import { authenticate, ControlConnection, ControlRefusal, parseBootstrap, parseKeywords } from './control-connection.js';

export { parseBootstrap, parseKeywords };

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
        if (!(err instanceof ControlRefusal && (err.status === 551 || err.status === 552))) throw err;
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
