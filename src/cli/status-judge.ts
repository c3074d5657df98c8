// The checks of `kzymy-server status`: one ok / problem / unknown line for each part of
// the running server's status document. The listeners are tried for real from here.
import type { StatusDocument } from './status.js';
import { statusLines, type StatusLine } from './status-lines.js';
import { judgeTor, type DirectTor } from './status-tor.js';
import { tcpError } from './probe.js';

/** A certificate that ends sooner than this is reported as a problem. */
const CERT_WARN_DAYS = 14;
const DAY = 86_400_000;

function mib(n: number): string {
  return `${(n / 1048576).toFixed(n < 10 * 1048576 ? 1 : 0)} MiB`;
}

function age(ms: number): string {
  const min = Math.max(0, Math.floor(ms / 60_000));
  if (min < 60) return `${min} min`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h ${min % 60} min`;
  return `${Math.floor(h / 24)} days`;
}

/** The ok / problem lines of a status document (the listeners are tried for real). */
export async function judge(doc: StatusDocument, direct: DirectTor | null = null): Promise<StatusLine[]> {
  const now = Date.parse(doc.now);
  const { lines, add } = statusLines();

  add('ok', 'server', `kzymy-server ${doc.version} up since ${doc.startedAt} (${age(now - Date.parse(doc.startedAt))}, pid ${doc.pid}).`);
  const [smtpErr, webErr] = await Promise.all([tcpError(doc.smtp.host, doc.smtp.port, 3_000), tcpError(doc.web.host, doc.web.port, 3_000)]);
  add(smtpErr ? 'problem' : 'ok', 'smtp', smtpErr ? `SMTP on ${doc.smtp.host}:${doc.smtp.port} does not accept connections (${smtpErr}).` : `SMTP listens on ${doc.smtp.host}:${doc.smtp.port}.`);
  add(webErr ? 'problem' : 'ok', 'web', webErr ? `The web listener ${doc.web.host}:${doc.web.port} does not accept connections (${webErr}).` : `The web listener is on ${doc.web.host}:${doc.web.port} (loopback; tor publishes it).`);

  lines.push(...judgeTor(doc.tor, direct));

  if ('error' in doc.disk) add('problem', 'disk', `The free space of ${doc.maildirRoot} cannot be read (${doc.disk.error}).`);
  else if (doc.disk.free < doc.disk.floor) add('problem', 'disk', `${mib(doc.disk.free)} free under ${doc.maildirRoot}, under the floor of ${mib(doc.disk.floor)} (limits.minFreeBytes): SMTP answers 452 4.3.1 until space is freed.`);
  else add('ok', 'disk', `${mib(doc.disk.free)} free under ${doc.maildirRoot} (floor ${mib(doc.disk.floor)}).`);

  add('ok', 'users', `${doc.users.total} user${doc.users.total === 1 ? '' : 's'} (${doc.users.disabled} disabled).`);
  const m = doc.mail;
  if (m.waiting === 0) add('ok', 'mail', 'No mail is waiting to be fetched.');
  else {
    const oldAge = m.oldest ? now - Date.parse(m.oldest) : 0;
    const text = `${m.waiting} message${m.waiting === 1 ? '' : 's'} (${mib(m.bytes)}) waiting; the oldest arrived ${age(oldAge)} ago.`;
    if (oldAge > (m.retentionDays + 1) * DAY) add('problem', 'mail', `${text} That is past the retention of ${m.retentionDays} days: the purge is not running.`);
    else add('ok', 'mail', text);
  }

  const codes = Object.entries(doc.replies);
  const total = codes.reduce((n, [, c]) => n + c, 0);
  const localErrors = codes.filter(([k]) => k.startsWith('451 4.3.0') || k.startsWith('452 4.3.1')).reduce((n, [, c]) => n + c, 0);
  const list = codes.map(([k, c]) => `${k} x${c}`).join(', ');
  if (total === 0) add('ok', 'smtp hour', 'No SMTP replies in the last hour.');
  else if (localErrors) add('problem', 'smtp hour', `${total} replies in the last hour: ${list}; ${localErrors} deferred for a local reason (storage or disk): the log says which.`);
  else add('ok', 'smtp hour', `${total} replies in the last hour: ${list}.`);

  if ('error' in doc.tls) add('problem', 'tls', `No STARTTLS certificate at ${doc.tls.file} (${doc.tls.error}): run "kzymy-server init" and restart.`);
  else {
    const left = Date.parse(doc.tls.validTo) - now;
    const day = doc.tls.validTo.slice(0, 10);
    if (left < 0) add('problem', 'tls', `The STARTTLS certificate ${doc.tls.file} expired on ${day}: move it away, run "kzymy-server init" and restart.`);
    else if (left < CERT_WARN_DAYS * DAY) add('problem', 'tls', `The STARTTLS certificate ${doc.tls.file} expires on ${day}, in ${Math.floor(left / DAY)} days: replace it soon.`);
    else add('ok', 'tls', `The STARTTLS certificate is valid until ${day}.`);
  }
  return lines;
}
