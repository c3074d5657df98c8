// Account deletion. The durable part (registry, then Maildir) is shared by the API and the
// operator's `kzymy-server users delete`; the web's in-memory state of an account (sessions,
// login state, pending key rotations, the parsed key) is forgotten in one place, whenever
// the registry no longer has the user: at once after an API deletion, and within a sweep
// interval after another process (the operator's CLI) deleted her.
import type { MaildirStore } from '../maildir/index.js';
import { REFRESH_MS, type Registry } from '../registry/index.js';
import type { Web } from './context.js';
import { endSessions, forgetLogins } from './sessions.js';

/** Deletes an account for good: its registry record and key first, then its Maildir. */
export async function removeAccount(stores: { registry: Registry; maildir: MaildirStore }, username: string): Promise<void> {
  await stores.registry.remove(username);
  await stores.maildir.removeUser(username);
}

/** Forgets everything this process holds in memory for an account that is gone. */
export function forgetAccount(web: Web, username: string, fingerprints: Iterable<string>): void {
  const fprs = [...fingerprints];
  endSessions(web, username);
  forgetLogins(web, username, ...fprs);
  web.rotations.deleteWhere((r) => r.username === username);
  for (const fingerprint of fprs) web.deps.keys.delete(fingerprint);
}

/**
 * Finds, in the web's memory, the accounts the registry no longer has, and forgets them.
 * Costs one registry lookup per entry held (sessions, rotations, login state). Returns how
 * many accounts were forgotten.
 */
export function forgetRemovedAccounts(web: Web): number {
  const { registry } = web.deps;
  const gone = new Map<string, Set<string>>();
  const note = (username: string, fingerprint?: string): void => {
    if (registry.get(username)) return;
    const fprs = gone.get(username) ?? new Set<string>();
    if (fingerprint) fprs.add(fingerprint);
    gone.set(username, fprs);
  };
  for (const [, s] of web.sessions.entries()) note(s.username, s.fingerprint);
  for (const [, r] of web.rotations.entries()) note(r.username);
  for (const [slot, list] of web.fallbacks.entries()) for (const f of list) note(slot.slice(0, slot.indexOf('\n')), f.fingerprint);
  for (const [username, fprs] of gone) forgetAccount(web, username, fprs);
  // Login state kept by fingerprint alone, for keys no account has any more.
  for (const fingerprint of web.signable.keys()) {
    if (registry.findByFingerprint(fingerprint)) continue;
    web.signable.delete(fingerprint);
    web.deps.keys.delete(fingerprint);
  }
  return gone.size;
}

/** Sweeps for removed accounts every `everyMs` (the registry's own refresh bound by default) until stopped. */
export function followRemovedAccounts(web: Web, everyMs = REFRESH_MS): { stop(): void } {
  const timer = setInterval(() => {
    try {
      const n = forgetRemovedAccounts(web);
      if (n > 0) web.deps.logger.info({ evt: 'accounts-forgotten', count: n }, 'account');
    } catch (err) {
      web.deps.logger.warn({ evt: 'account-sweep-failed', err: err as { name?: string; code?: string } }, 'account');
    }
  }, everyMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
