// An smtp-server connection over a stub socket, to see what it writes without a network:
// patches.ts runs its start-up checks of the patched connection through it.
import { PassThrough } from 'node:stream';
import type { ConnectionInternals } from './patches.js';

/** The server a probed connection belongs to, named "self-check", already one connection over maxClients. */
function stubServer() {
  return {
    options: { name: 'self-check', maxClients: 1, disableReverseLookup: true, greetingDelayMs: 0 },
    connections: new Set<unknown>(['one', 'two']),
    logger: { info: () => undefined, debug: () => undefined, error: () => undefined },
  };
}

/**
 * Makes a connection of class `Connection` on a stub socket, runs `run` on it, and returns
 * what it wrote (one reply line, without its CRLF). Its timers, parser and socket are gone
 * afterwards.
 */
export function probeConnection(Connection: new (...args: never[]) => object, run: (c: ConnectionInternals) => void): string {
  const written: string[] = [];
  const socket = Object.assign(new PassThrough(), {
    readyState: 'open',
    setNoDelay: () => undefined,
    setTimeout: () => undefined,
    write: (chunk: unknown) => written.push(String(chunk)) > 0,
  });
  const Make = Connection as unknown as new (server: unknown, socket: unknown, options: unknown) => ConnectionInternals;
  const conn = new Make(stubServer(), socket, { localAddress: '127.0.0.1', remoteAddress: '127.0.0.1' });
  try {
    run(conn);
  } finally {
    const c = conn as unknown as { _closeTimer?: NodeJS.Timeout; _parser?: { destroy(): void } | false };
    clearTimeout(c._closeTimer);
    if (c._parser) c._parser.destroy();
    socket.removeAllListeners();
    socket.destroy();
  }
  return written.join('').replace(/\r\n$/, '');
}
