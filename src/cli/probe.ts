// Whether something accepts connections: a TCP listener (status, restore) or a unix socket
// (the control socket). Each probe connects, then closes at once.
import net from 'node:net';

/** The loopback address a listener on a wildcard host can be reached at; any other host as it is. */
export function reachableHost(host: string): string {
  return host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
}

/**
 * Connects and closes again: null when the connection was made, else the error code
 * (ETIMEDOUT when `timeout` ms pass first; without `timeout` the system's own).
 */
export function connectError(target: net.NetConnectOpts): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.connect(target);
    s.once('connect', () => {
      s.destroy();
      resolve(null);
    });
    s.once('timeout', () => {
      s.destroy();
      resolve('ETIMEDOUT');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

/** Null when host:port (a wildcard host as its loopback) accepts a TCP connection within the time, else why not. */
export function tcpError(host: string, port: number, timeoutMs: number): Promise<string | null> {
  return connectError({ host: reachableHost(host), port, timeout: timeoutMs });
}
