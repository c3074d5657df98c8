// Connections counted per source, for smtp.maxClientsPerAddress. smtp-server's maxClients
// counts all connections together, so one source could take every slot.
import { isIPv4, isIPv6 } from 'node:net';

export class SourceCounter {
  /** Open connections per source (sourceKey). */
  private readonly open = new Map<string, number>();
  /** The source of every connection that was admitted, by connection id. */
  private readonly admitted = new Map<string, string>();

  constructor(private readonly perSource: number) {}

  /** Counts the connection `id` from `address` in, or answers false if its source is full. */
  admit(id: string, address: string): boolean {
    const source = sourceKey(address);
    const n = this.open.get(source) ?? 0;
    if (n >= this.perSource) return false;
    this.open.set(source, n + 1);
    this.admitted.set(id, source);
    return true;
  }

  /** The connection `id` closed; one that was never admitted changes nothing. */
  release(id: string): void {
    const source = this.admitted.get(id);
    if (source === undefined) return;
    this.admitted.delete(id);
    const n = (this.open.get(source) ?? 1) - 1;
    if (n > 0) this.open.set(source, n);
    else this.open.delete(source);
  }

  /** Open connections from the source of `address`. */
  count(address: string): number {
    return this.open.get(sourceKey(address)) ?? 0;
  }
}

/**
 * The source a connection is counted against: an IPv4 address (also when a dual-stack
 * listener reports it IPv4-mapped), or the /64 of an IPv6 address, the smallest block
 * an IPv6 site is given, so that one host cannot count as 2^64 sources.
 */
export function sourceKey(address: string): string {
  const a = address.trim().toLowerCase();
  if (isIPv4(a) || !isIPv6(a.replace(/%.*$/, ''))) return a;
  const g = expandIPv6(a);
  if (!g) return a;
  if (g.slice(0, 5).every((x) => x === '0') && g[5] === 'ffff') {
    const hi = parseInt(g[6]!, 16);
    const lo = parseInt(g[7]!, 16);
    return [hi >> 8, hi & 255, lo >> 8, lo & 255].join('.');
  }
  return `${g.slice(0, 4).join(':')}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, as numbers in hex without leading zeros. */
function expandIPv6(a: string): string[] | null {
  let text = a.replace(/%.*$/, '');
  const v4 = /(\d{1,3}(?:\.\d{1,3}){3})$/.exec(text);
  if (v4) {
    const o = v4[1]!.split('.').map(Number);
    text = text.slice(0, -v4[1]!.length) + `${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const fill = halves.length === 2 ? 8 - head.length - tail.length : 0;
  const groups = [...head, ...Array<string>(Math.max(0, fill)).fill('0'), ...tail];
  if (groups.length !== 8) return null;
  return groups.map((g) => parseInt(g, 16).toString(16));
}
