// Key-expiry notices, a timer job of the server: 14 days and again 3 days before the user's
// key expires, an encrypted notice lands in her Maildir. Each is recorded in the user's
// `notices` (e.g. "14d:2027-01-01T00:00:00.000Z") so that it is sent once; a key update
// clears the list (Registry.setKey).
import type { User } from '../registry/index.js';
import { createWeb, type Web } from './context.js';
import { buildMail, deliverEncrypted } from './mail.js';
import type { WebDeps } from './types.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const STAGES = [
  { tag: '3d', days: 3 },
  { tag: '14d', days: 14 },
] as const;

function noticeMail(web: Web, user: User, expires: Date, now: Date): Buffer {
  const domain = web.deps.config.domain;
  const days = Math.max(0, Math.ceil((expires.getTime() - now.getTime()) / DAY));
  const when = expires.toISOString().slice(0, 10);
  const body = [
    `Your OpenPGP key ${user.fingerprint}`,
    `expires on ${when} (in ${days} day${days === 1 ? '' : 's'}).`,
    '',
    'After that, kzymy cannot encrypt mail to it: senders are asked to try again',
    'later, and their mail is lost if you do not act before they give up.',
    '',
    'Extend the expiry date of your key (gpg --quick-set-expire FINGERPRINT 1y, and the',
    'same for the encryption subkey), then send the updated key:',
    '',
    '  kzymy-client key update',
    '',
    'Or move to a new key with the same command; the old key stays in use until the',
    'new one has proved itself.',
  ].join('\n');
  return buildMail(domain, { to: `postmaster@${user.username}.${domain}`, subject: `Your kzymy key expires on ${when}`, body, date: now });
}

async function noticesFor(web: Web, user: User, now: Date): Promise<number> {
  if (user.disabled || !user.keyExpiresAt) return 0;
  const expires = new Date(user.keyExpiresAt);
  const left = expires.getTime() - now.getTime();
  if (!Number.isFinite(left) || left <= 0) return 0;
  // The most urgent stage that is due; earlier stages that were missed are not sent late.
  const due = STAGES.filter((s) => left <= s.days * DAY);
  if (due.length === 0) return 0;
  const tags = due.map((s) => `${s.tag}:${user.keyExpiresAt}`);
  if (user.notices.includes(tags[0]!)) return 0;
  await deliverEncrypted(web, user, noticeMail(web, user, expires, now), now);
  const keyAtSend = user.keyExpiresAt;
  // Kept only if the key did not change meanwhile (setKey clears the notices).
  await web.deps.registry.addNotices(user.username, tags, keyAtSend);
  return 1;
}

async function sendDue(web: Web, now: Date): Promise<number> {
  const { registry, logger } = web.deps;
  let sent = 0;
  for (const user of registry.list()) {
    try {
      sent += await noticesFor(web, user, now);
    } catch (err) {
      const e = err as { name?: string; code?: string };
      logger.warn({ evt: 'notice-failed', err: e }, 'notices');
    }
  }
  if (sent > 0) logger.info({ evt: 'expiry-notices', count: sent }, 'notices');
  return sent;
}

/** Sends the notices that are due at `now`; returns how many were delivered. */
export function sendExpiryNotices(deps: WebDeps, now: Date): Promise<number> {
  return sendDue(createWeb({ ...deps, now: () => now }), now);
}

/** The running job of key-expiry notices. */
export interface ExpiryNotices {
  /** Sends what is due now, after any run under way (the timer does the same); resolves to how many were delivered. */
  run(): Promise<number>;
  /** Ends the timer; a run under way finishes on its own. */
  stop(): void;
}

/** Sends the notices that are due at once, then every `everyMs` (6 hours), until stopped. */
export function startExpiryNotices(deps: WebDeps, everyMs = 6 * HOUR): ExpiryNotices {
  const web = createWeb(deps);
  // One run at a time: a notice is recorded only after its delivery, so two runs at once could both send it.
  let last: Promise<number> = Promise.resolve(0);
  const run = (): Promise<number> =>
    (last = last.then(() =>
      sendDue(web, web.date()).catch((err: unknown) => {
        deps.logger.error({ evt: 'expiry-notices-failed', err: err as { name?: string; code?: string } }, 'notices');
        return 0;
      }),
    ));
  const timer = setInterval(() => void run(), everyMs);
  timer.unref();
  void run();
  return { run, stop: () => clearInterval(timer) };
}
