// `kzymy-server status --dns`: the DNS records senders use, asked for real and compared
// with this machine's addresses.
import net from 'node:net';
import os from 'node:os';
import { Resolver } from 'node:dns/promises';
import { statusLines, type StatusLine } from './status-lines.js';

/** Addresses of this machine: its interfaces, and the SMTP host when it is a specific one. */
function ownAddresses(smtpHost: string): Set<string> {
  const own = new Set<string>();
  for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) own.add(a.address);
  if (net.isIP(smtpHost) && smtpHost !== '0.0.0.0' && smtpHost !== '::') own.add(smtpHost);
  return own;
}

/**
 * The DNS records senders use: the MX of a user's domain (the wildcard) and of the
 * domain, the A/AAAA of the MX hosts (this machine?), and the SPF TXT records. Every
 * query times out; a resolver that cannot be reached is a problem, said once.
 */
export async function judgeDns(domain: string, smtpHost: string, resolver = new Resolver({ timeout: 2_000, tries: 2 })): Promise<StatusLine[]> {
  const { lines, add } = statusLines();
  const probe = `status-check.${domain}`;
  const unreachable = (e: NodeJS.ErrnoException): boolean => ['ETIMEOUT', 'ECONNREFUSED', 'ESERVFAIL', 'EREFUSED', 'ECONNRESET', 'ETIMEDOUT'].includes(e.code ?? '');
  const ask = async <T>(q: () => Promise<T>): Promise<{ v: T | null; err: NodeJS.ErrnoException | null }> => {
    try {
      return { v: await q(), err: null };
    } catch (e) {
      return { v: null, err: e as NodeJS.ErrnoException };
    }
  };

  const wild = await ask(() => resolver.resolveMx(probe));
  if (wild.err && unreachable(wild.err)) {
    add('problem', 'dns', `DNS cannot be asked (${wild.err.code} from ${resolver.getServers().join(', ') || 'no resolver'}): the MX, A and SPF records of ${domain} are not checked.`);
    return lines;
  }
  const apex = await ask(() => resolver.resolveMx(domain));
  const hosts = new Set<string>();
  if (!wild.v?.length) add('problem', 'dns mx', `No MX record for *.${domain} (asked ${probe}, ${wild.err?.code ?? 'empty'}): senders cannot find the server for users' addresses; see "DNS" in docs/operator.md.`);
  else {
    for (const r of wild.v) hosts.add(r.exchange);
    add('ok', 'dns mx', `*.${domain} has MX ${wild.v.map((r) => r.exchange).join(', ')}.`);
  }
  if (apex.v?.length) for (const r of apex.v) hosts.add(r.exchange);

  const own = ownAddresses(smtpHost);
  for (const host of hosts) {
    const [a, aaaa] = await Promise.all([ask(() => resolver.resolve4(host)), ask(() => resolver.resolve6(host))]);
    const addrs = [...(a.v ?? []), ...(aaaa.v ?? [])];
    if (!addrs.length) add('problem', 'dns a', `The MX host ${host} has no A or AAAA record: senders cannot reach it.`);
    else if (addrs.some((x) => own.has(x))) add('ok', 'dns a', `${host} resolves to ${addrs.join(', ')}, an address of this machine.`);
    else add('problem', 'dns a', `${host} resolves to ${addrs.join(', ')}, none of which is an address of this machine (behind NAT, check that it forwards port 25 here).`);
  }

  for (const name of [domain, probe]) {
    const txt = await ask(() => resolver.resolveTxt(name));
    const spf = (txt.v ?? []).map((r) => r.join('')).filter((r) => /^v=spf1\b/i.test(r));
    const shown = name === probe ? `*.${domain}` : domain;
    if (spf.length) add('ok', 'dns spf', `${shown} has SPF "${spf[0]}".`);
    else add('problem', 'dns spf', `${shown} has no SPF record: add TXT "v=spf1 -all" so that nobody passes mail off as coming from it.`);
  }
  return lines;
}
