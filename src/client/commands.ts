// The account commands of kzymy-client: signup, status, address policy, key
// update and account deletion. `fetch` lives in fetch.ts.
import { createInterface } from 'node:readline/promises';
import type { Policy } from './api.js';
import { expectFingerprint, signup } from './auth.js';
import type { Context } from './context.js';
import { ClientError, printable, usageError } from './errors.js';
import { humanBytes } from './format.js';

export async function runSignup(ctx: Context): Promise<void> {
  if (!ctx.profile.server) throw usageError('signup needs --server http://....onion (the address of the kzymy server).');
  if (!ctx.profile.key) throw usageError('signup needs --key KEYID: the key in your GnuPG keyring to sign up with (gpg --list-secret-keys).');
  const existing = await ctx.store.load();
  if (existing.username) {
    throw new ClientError(
      `The profile ${ctx.store.file} already belongs to the account ${existing.username}; give another --config FILE for a new account (one key and one profile per identity).`,
    );
  }
  const gpg = ctx.gpg();
  const key = await gpg.secretKey(ctx.profile.key); // before any network I/O
  const publicKey = await gpg.exportPublic(key.fingerprint);
  const t = ctx.transport();
  const done = await signup(t, gpg, publicKey, key.fingerprint);
  ctx.profile.username = done.username;
  // The key the user named, as gpg reports it; signup() refused any other the server named.
  ctx.profile.key = key.fingerprint;
  await ctx.save();
  ctx.out(`Signed up: your username is ${done.username}.`);
  ctx.out(`Every address at ${printable(done.mailDomain)} reaches you, e.g. ${printable(done.exampleAddress)}.`);
  ctx.out(`Key: ${ctx.profile.key}`);
  ctx.out(`Profile saved in ${ctx.store.file}. A welcome message is waiting; fetch it with:`);
  ctx.out(`  kzymy-client${ctx.opts.config ? ` --config ${ctx.store.file}` : ''} fetch --maildir ~/Maildir --decrypt`);
}

export async function runStatus(ctx: Context): Promise<void> {
  const a = await ctx.session().account();
  const m = a.messages ?? { count: 0, bytes: 0, oldest: null };
  // Every value below came from the server: printable() keeps control characters off the terminal.
  ctx.out(printable(`account    ${a.username} (mail to anything@${a.mailDomain})`));
  ctx.out(printable(`waiting    ${m.count} message${m.count === 1 ? '' : 's'}, ${humanBytes(m.bytes)}${m.oldest ? ` (oldest received ${m.oldest})` : ''}`));
  if (typeof a.quotaBytes === 'number') ctx.out(`quota      ${humanBytes(a.quotaBytes)}`);
  ctx.out(printable(`key        ${a.fingerprint}${a.keyExpiresAt ? ` (expires ${a.keyExpiresAt})` : ' (no expiry)'}`));
  printPolicy(ctx, a);
}

function list(values: unknown): string {
  return Array.isArray(values) && values.length ? printable(values.map(String).join(' ')) : '-';
}

function printPolicy(ctx: Context, p: Policy): void {
  ctx.out(`catch-all  ${p.catchAll ? 'on: every local part arrives except blocked ones' : 'off: only aliases arrive'}`);
  ctx.out(`aliases    ${list(p.aliases)}`);
  ctx.out(`blocked    ${list(p.blocked)}`);
}

export async function runAliases(ctx: Context, action: 'list' | 'add' | 'remove' | 'block', localPart?: string): Promise<void> {
  const s = ctx.session();
  let p: Policy;
  if (action === 'list') p = await s.policy();
  else {
    const lp = (localPart ?? '').trim();
    if (!lp) throw usageError(`aliases ${action} needs a local part (the part before the @).`);
    if (lp.includes('@')) throw usageError(`Give only the local part (before the @), not "${lp}".`);
    p = action === 'add' ? await s.setPolicy('PUT', 'aliases', lp)
      : action === 'remove' ? await s.setPolicy('DELETE', 'aliases', lp)
      : await s.setPolicy('PUT', 'blocked', lp);
  }
  printPolicy(ctx, p);
}

export async function runCatchAll(ctx: Context, state: string): Promise<void> {
  if (state !== 'on' && state !== 'off') throw usageError(`catch-all takes "on" or "off", not "${state}".`);
  printPolicy(ctx, await ctx.session().catchAll(state === 'on'));
}

export async function runKeyUpdate(ctx: Context, newKeyId?: string): Promise<void> {
  const gpg = ctx.gpg();
  const current = await gpg.secretKey(ctx.keyId());
  const next = newKeyId !== undefined ? await gpg.secretKey(newKeyId) : current;
  const publicKey = await gpg.exportPublic(next.fingerprint);
  const s = ctx.session();
  const account = await s.account();
  if (newKeyId === undefined && account.fingerprint && String(account.fingerprint).toUpperCase() !== current.fingerprint) {
    throw new ClientError(
      `The account uses the key ${printable(String(account.fingerprint))}, but --key names ${current.fingerprint}; to move the account to that key run "kzymy-client key update --new-key ${current.fingerprint}".`,
    );
  }
  const t = ctx.transport();
  const r = await s.updateKey(publicKey);
  if (r.status === 'updated') {
    expectFingerprint(t, r.fingerprint, next.fingerprint, 'answered the key update but');
    ctx.profile.key = next.fingerprint;
    await ctx.save();
    ctx.out(printable(`The server now has the current version of the key ${next.fingerprint} (${r.keyExpiresAt ? `expires ${r.keyExpiresAt}` : 'no expiry'}).`));
    return;
  }
  if (r.status !== 'confirm') throw new ClientError(`${t.describe()} answered the key update in a way this client does not know.`);
  expectFingerprint(t, r.fingerprint, next.fingerprint, 'asked to confirm the key update but');
  const code = await s.rotationCode(r.challenge, next.fingerprint);
  const done = await s.confirmKey(r.rotationId, code);
  expectFingerprint(t, done.fingerprint, next.fingerprint, 'confirmed the key update but');
  ctx.profile.key = next.fingerprint;
  await ctx.save();
  ctx.out(`The account now uses the key ${next.fingerprint}: new mail is encrypted to it.`);
  ctx.out(printable(`Mail that was already waiting stays encrypted to ${account.fingerprint}; keep that secret key until you have fetched it.`));
}

export async function runDeleteAccount(ctx: Context, yes: boolean): Promise<void> {
  const username = ctx.username();
  if (!yes) {
    if (!process.stdin.isTTY) {
      throw usageError(`delete-account removes ${username} and all its waiting mail for good; not on a terminal, add --yes to confirm.`);
    }
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    try {
      const answer = await rl.question(
        `This deletes the account ${username} on ${ctx.transport().describe()} with all its waiting mail, for good.\nType the username to confirm: `,
      );
      if (answer.trim().toLowerCase() !== username) throw new ClientError('Nothing was deleted (the answer was not the username).');
    } finally {
      rl.close();
    }
  }
  await ctx.session().deleteAccount();
  await ctx.store.record(username).remove();
  delete ctx.profile.username;
  await ctx.save();
  ctx.out(`The account ${username} is deleted: its mail and settings are gone from the server.`);
}
