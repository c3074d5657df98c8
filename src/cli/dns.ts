// `kzymy-server dns`: the DNS records the domain needs, from the configuration, at any time.
// kzymy receives and never sends, so besides the MX records it recommends SPF records that
// say "no machine sends mail for these names".
import net from 'node:net';
import type { Config } from '../config/index.js';

export interface DnsRecord {
  name: string;
  type: 'MX' | 'A' | 'AAAA' | 'TXT';
  value: string;
  /** Why the record is there, one short phrase. */
  why: string;
}

export interface DnsPlan {
  records: DnsRecord[];
  /** Sentences for the operator: placeholders to fill, what DNS cannot say. */
  notes: string[];
}

export const SPF_NONE = 'v=spf1 -all';
export const ADDRESS_PLACEHOLDER = { A: 'PUBLIC-IPV4', AAAA: 'PUBLIC-IPV6' } as const;

/** The records to create for config.domain, in zone-file order. */
export function dnsPlan(config: Config): DnsPlan {
  const domain = config.domain;
  const mx = config.dns.mxHost;
  const records: DnsRecord[] = [
    { name: `*.${domain}.`, type: 'MX', value: `10 ${mx}.`, why: 'every USERNAME.' + domain + ' receives here' },
  ];
  const notes: string[] = [];
  if (config.postmaster) {
    records.push({ name: `${domain}.`, type: 'MX', value: `10 ${mx}.`, why: `postmaster@${domain} reaches ${config.postmaster}` });
  } else {
    records.push({ name: `${domain}.`, type: 'MX', value: '0 .', why: 'null MX (RFC 7505): the bare domain takes no mail' });
    notes.push(
      `postmaster is not set, so the bare domain ${domain} takes no mail; the null MX above tells senders at once. ` +
        `To receive postmaster@${domain}, set "postmaster" to a username and use "${domain}. IN MX 10 ${mx}." instead.`,
    );
  }
  const v4 = config.dns.addresses.filter((a) => net.isIPv4(a));
  const v6 = config.dns.addresses.filter((a) => net.isIPv6(a));
  for (const a of v4.length ? v4 : [ADDRESS_PLACEHOLDER.A]) records.push({ name: `${mx}.`, type: 'A', value: a, why: 'the address that reaches port 25' });
  for (const a of v6) records.push({ name: `${mx}.`, type: 'AAAA', value: a, why: 'the IPv6 address that reaches port 25' });
  if (!v4.length) {
    notes.push(
      `${ADDRESS_PLACEHOLDER.A} stands for the public IPv4 address that reaches port 25 of this machine (behind NAT, not the address it sees itself as); ` +
        'set "dns.addresses" (or KZYMY_PUBLIC_IP) to print it, and add IPv6 addresses there for AAAA records.',
    );
  }
  for (const name of [`*.${domain}.`, `${domain}.`, `${mx}.`]) {
    records.push({ name, type: 'TXT', value: `"${SPF_NONE}"`, why: 'SPF: no machine sends mail as this name' });
  }
  notes.push(
    `A wildcard covers neither ${domain} itself nor a name with records of its own (such as ${mx}), hence their own records.`,
    `Ask whoever runs the addresses for a PTR record naming ${mx}; it helps senders trust this MX.`,
    'The onion address needs no DNS: tor publishes it.',
  );
  return { records, notes };
}

/** Zone-file lines, aligned, each with its reason as a comment. */
export function formatPlan(plan: DnsPlan): string[] {
  const w = Math.max(...plan.records.map((r) => r.name.length));
  const v = Math.max(...plan.records.map((r) => r.value.length));
  const lines = plan.records.map((r) => `${r.name.padEnd(w)}  IN ${r.type.padEnd(4)} ${r.value.padEnd(v)}  ; ${r.why}`);
  return [...lines, '', ...plan.notes.map((n) => `; ${n}`)];
}
