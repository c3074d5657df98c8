// Which hosts are this machine: the one definition the web listener check, the
// configuration and kzymy-client's --no-tor rule share.
import net from 'node:net';

/** 127.0.0.0/8, ::1 (also in brackets, as in a URL) and the name localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost') return true;
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (net.isIPv6(h)) return h === '::1' || h === '0:0:0:0:0:0:0:1';
  return false;
}
