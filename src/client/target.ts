// Where kzymy-client may connect, decided before any network I/O:
// an onion address through Tor's SOCKS5 port (socks5h: tor resolves the name, never local
// DNS), or, for development and tests only, a loopback URL with --no-tor.
import { createHash } from 'node:crypto';
import { isLoopbackHost } from '../config/hosts.js';
import { usageError } from './errors.js';

export { isLoopbackHost };

export const DEFAULT_PROXY = 'socks5h://127.0.0.1:9050';

export interface Target {
  /** Base URL of the server, without a trailing slash. */
  server: URL;
  /** null: connect directly (loopback, --no-tor). */
  proxy: URL | null;
}

const ONION_RE = /(^|\.)[a-z2-7]{56}\.onion$/;

export function isOnionHost(host: string): boolean {
  return ONION_RE.test(host.toLowerCase());
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/**
 * RFC 4648 base32 (lower case, no padding), decoded by hand: five bits per character, a
 * byte out whenever eight have gathered. A few lines, so no dependency for it.
 */
function base32Decode(text: string): Buffer | null {
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const ch of text) {
    const v = BASE32.indexOf(ch);
    if (v < 0) return null;
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

/** The two checksum bytes of a v3 onion address (rend-spec-v3): SHA3-256(".onion checksum" || pubkey || 0x03)[:2]. */
export function onionChecksum(pubkey: Buffer): Buffer {
  return createHash('sha3-256').update('.onion checksum').update(pubkey).update(Buffer.from([3])).digest().subarray(0, 2);
}

/**
 * Whether the 56 characters before ".onion" are a v3 address whose checksum holds: 35 bytes,
 * the ed25519 public key (32), the checksum (2) and the version (3). A mistyped character
 * breaks the checksum (two bytes: all but 1 in 65536 typos are caught).
 */
export function onionChecksumHolds(host: string): boolean {
  const label = /([a-z2-7]{56})\.onion$/.exec(host.toLowerCase())?.[1];
  if (!label) return false;
  const bytes = base32Decode(label);
  if (!bytes || bytes.length !== 35 || bytes[34] !== 3) return false;
  return onionChecksum(bytes.subarray(0, 32)).equals(bytes.subarray(32, 34));
}

/** Parses --server: an http:// URL; "abc...xyz.onion" alone is taken as http://abc...xyz.onion. */
export function parseServerUrl(raw: string): URL {
  const text = raw.trim();
  let url: URL;
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    throw usageError(`The server address "${raw}" is not a URL; give it like http://abc...xyz.onion.`);
  }
  if (url.protocol !== 'http:') {
    throw usageError(
      `The server address must start with http:// (the onion service itself encrypts and authenticates), not ${url.protocol}//.`,
    );
  }
  if (url.username || url.password || url.search || url.hash) {
    throw usageError('The server address must not carry a user name, password, query or fragment.');
  }
  url.pathname = url.pathname.replace(/\/+$/, '');
  return url;
}

/** Parses --proxy: only socks5h:// (the onion name is resolved by tor, never by local DNS). */
export function parseProxyUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw usageError(`The proxy address "${raw}" is not a URL; give it like ${DEFAULT_PROXY}.`);
  }
  if (url.protocol !== 'socks5h:') {
    throw usageError(
      `The proxy must be a socks5h:// URL, so that tor resolves the onion name (never local DNS); got ${url.protocol}//.`,
    );
  }
  if (!url.hostname || !url.port) {
    throw usageError(`The proxy address needs a host and a port, like ${DEFAULT_PROXY}.`);
  }
  return url;
}

/** Decides how to reach `server`; throws a UsageError sentence when the combination is refused. */
export function resolveTarget(serverRaw: string, opts: { tor: boolean; proxy: string }): Target {
  const server = parseServerUrl(serverRaw);
  const host = server.hostname;
  if (/\.onion$/i.test(host) && (!isOnionHost(host) || !onionChecksumHolds(host))) {
    throw usageError(
      `The onion address ${host} has a typo: ${isOnionHost(host) ? 'its built-in checksum does not match' : 'a v3 onion address has 56 characters a-z and 2-7 before .onion'}; copy it again from the server's page.`,
    );
  }
  if (opts.tor) {
    if (isOnionHost(host)) return { server, proxy: parseProxyUrl(opts.proxy) };
    if (isLoopbackHost(host)) {
      throw usageError(
        `${server.origin} is a loopback address, which Tor cannot reach; add --no-tor to connect to a local development server directly.`,
      );
    }
    throw usageError(
      `${server.origin} is not an onion address: kzymy-client talks to a kzymy server only as an onion service through Tor (http://....onion), so that nothing outside Tor learns who fetches the mail.`,
    );
  }
  if (isLoopbackHost(host)) return { server, proxy: null };
  throw usageError(
    `--no-tor is only for a server on this machine (127.0.0.1, ::1, localhost); ${server.origin} must be reached through Tor, so leave --no-tor out.`,
  );
}
