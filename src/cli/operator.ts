// The operator's commands of kzymy-server: init, check, users, stats, purge.
// They print what they did; they never show message contents.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { access, chmod, constants, mkdir, readFile, statfs } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import path from 'node:path';
import { UserError, type Config } from '../config/index.js';
import { checkPublicKey, keyRecord } from '../pgp/index.js';
import { readOnionAddress } from '../tor/index.js';
import { removeAccount } from '../web/index.js';
import { openStores, purge } from './server-app.js';
import type { User } from '../registry/index.js';

const run = promisify(execFile);
type Out = (line: string) => void;

export async function init(config: Config, out: Out): Promise<void> {
  for (const dir of [config.dataDir, config.maildirRoot, path.dirname(config.smtp.tlsKeyFile)]) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    out(`folder       ${dir}`);
  }
  const { registry } = await openStores(config);
  out(`registry     ${registry.location} (${registry.count()} users)`);
  const exists = await access(config.smtp.tlsCertFile).then(
    () => true,
    () => false,
  );
  if (exists) {
    out(`certificate  ${config.smtp.tlsCertFile} (kept)`);
    return;
  }
  // A self-signed certificate for STARTTLS: sending MTAs encrypt opportunistically and do
  // not verify it, which is what port 25 does everywhere.
  try {
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '3650',
      '-subj', `/CN=${config.domain}`, '-addext', `subjectAltName=DNS:${config.domain},DNS:*.${config.domain}`,
      '-keyout', config.smtp.tlsKeyFile, '-out', config.smtp.tlsCertFile,
    ]);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new UserError('openssl is needed to make the STARTTLS certificate: install it (apt-get install openssl) and run init again.');
    throw new UserError(`openssl could not make the certificate: ${String((err as { stderr?: string }).stderr ?? e.message).trim()}`);
  }

  await chmod(config.smtp.tlsKeyFile, 0o600);
  out(`certificate  ${config.smtp.tlsCertFile} (new, self-signed, 10 years)`);
  out(`private key  ${config.smtp.tlsKeyFile}`);
}

/** Returns the problems found; prints the settings. */
export async function check(config: Config, out: Out): Promise<string[]> {
  const problems: string[] = [];
  out(`configuration  ${config.source.file ?? '(built-in defaults and environment)'}`);
  out(`mail domain    ${config.domain} (addresses: anything@USERNAME.${config.domain})`);
  out(`smtp           ${config.smtp.host}:${config.smtp.port}${config.smtp.port === 0 ? ' (any free port)' : ''}`);
  out(`web            ${config.web.host}:${config.web.port} (loopback; published by tor)`);
  out(`data           ${config.dataDir}`);
  out(`maildirs       ${config.maildirRoot}`);
  for (const dir of [config.dataDir, config.maildirRoot]) {
    try {
      await access(dir, constants.W_OK);
    } catch {
      problems.push(`${dir} does not exist or is not writable: run "kzymy-server init".`);
    }
  }
  try {
    const cert = new X509Certificate(await readFile(config.smtp.tlsCertFile));
    const until = new Date(cert.validTo);
    out(`starttls       ${config.smtp.tlsCertFile} (valid until ${until.toISOString().slice(0, 10)})`);
    if (until.getTime() < Date.now()) problems.push(`The STARTTLS certificate ${config.smtp.tlsCertFile} has expired.`);
  } catch {
    out('starttls       off (no certificate)');
    problems.push(`No STARTTLS certificate at ${config.smtp.tlsCertFile}: run "kzymy-server init".`);
  }
  try {
    const s = await statfs(config.maildirRoot);
    const free = s.bavail * s.bsize;
    out(`free disk      ${mib(free)} (floor ${mib(config.limits.minFreeBytes)})`);
    if (free < config.limits.minFreeBytes) problems.push(`Free disk space (${mib(free)}) is under the floor of ${mib(config.limits.minFreeBytes)}: SMTP will answer 452 4.3.1.`);
  } catch {
    // reported above as a missing folder
  }
  out(`tor            ${config.tor.manage ? `managed (${config.tor.binary}, data ${config.tor.dataDir})` : 'system tor'}`);
  const onion = await readOnionAddress(config.tor.hostnameFile).catch(() => null);
  out(`onion          ${onion ? `http://${onion}/` : `not known yet (${config.tor.hostnameFile})`}`);
  if (config.tor.frontendOnion) out(`frontend       http://${config.tor.frontendOnion}/ (Onionbalance: the onion above is one of its instances)`);
  if (!onion && !config.tor.manage) problems.push(`tor has not written the onion hostname at ${config.tor.hostnameFile}: is the tor service running with the project's torrc?`);
  out(`limits         message ${mib(config.limits.maxMessageBytes)}, quota ${mib(config.limits.quotaBytes)}/user, retention ${config.limits.retentionDays} days`);
  return problems;
}

function mib(n: number): string {
  return `${(n / 1048576).toFixed(n < 10 * 1048576 ? 1 : 0)} MiB`;
}

function userLine(u: User, waiting: number): string {
  return [u.username.padEnd(14), (u.disabled ? 'disabled' : 'active').padEnd(9), u.createdAt.slice(0, 10), u.fingerprint.slice(-16), String(waiting).padStart(6)].join('  ');
}

export async function usersList(config: Config, out: Out, json: boolean): Promise<void> {
  const { registry, maildir } = await openStores(config);
  const rows = await Promise.all(registry.list().map(async (u) => ({ u, usage: await maildir.usage(u.username) })));
  if (json) {
    out(JSON.stringify(rows.map(({ u, usage }) => ({ username: u.username, disabled: u.disabled, createdAt: u.createdAt, fingerprint: u.fingerprint, waiting: usage.count, bytes: usage.bytes }))));
    return;
  }
  out(['USERNAME'.padEnd(14), 'STATE'.padEnd(9), 'CREATED   ', 'KEY (last 16)   ', 'WAITING'].join('  '));
  for (const { u, usage } of rows) out(userLine(u, usage.count));
  out(`${rows.length} user${rows.length === 1 ? '' : 's'}`);
}

export async function usersShow(config: Config, username: string, out: Out): Promise<void> {
  const { registry, maildir } = await openStores(config);
  const u = registry.get(username);
  if (!u) throw new UserError(`There is no user "${username}". "kzymy-server users list" shows them all.`);
  const usage = await maildir.usage(u.username);
  out(`username     ${u.username}`);
  out(`addresses    anything@${u.username}.${config.domain}`);
  out(`state        ${u.disabled ? 'disabled' : 'active'}`);
  out(`created      ${u.createdAt}`);
  out(`key          ${u.fingerprint}`);
  out(`key expires  ${u.keyExpiresAt ?? 'never'}`);
  out(`catch-all    ${u.catchAll ? 'on' : 'off'}`);
  out(`aliases      ${u.aliases.join(', ') || '-'}`);
  out(`blocked      ${u.blocked.join(', ') || '-'}`);
  out(`waiting      ${usage.count} messages, ${mib(usage.bytes)}${usage.oldest ? `, oldest ${usage.oldest.toISOString()}` : ''}`);
}

export async function usersAdd(config: Config, keyFile: string): Promise<string> {
  let input: Buffer;
  try {
    input = await readFile(keyFile);
  } catch (err) {
    throw new UserError(`Cannot read the key file ${keyFile} (${(err as NodeJS.ErrnoException).code ?? 'error'}).`);
  }
  const key = await checkPublicKey(input);
  const { registry, maildir } = await openStores(config);
  const user = await registry.add(keyRecord(key));
  await maildir.ensureUser(user.username);
  return user.username;
}

export async function usersSetDisabled(config: Config, username: string, disabled: boolean): Promise<void> {
  const { registry } = await openStores(config);
  if (!registry.get(username)) throw new UserError(`There is no user "${username}".`);
  await registry.setDisabled(username, disabled);
}

export async function usersDelete(config: Config, username: string): Promise<void> {
  const { registry, maildir } = await openStores(config);
  if (!registry.get(username)) throw new UserError(`There is no user "${username}".`);
  // A running server forgets her sessions and login state when its registry no longer has her.
  await removeAccount({ registry, maildir }, username);
}

export async function stats(config: Config): Promise<{ users: number; active: number; disabled: number; waiting: number; bytes: number; oldestAgeSeconds: number | null }> {
  const { registry, maildir } = await openStores(config);
  const users = registry.list();
  let waiting = 0;
  let bytes = 0;
  let oldest: Date | null = null;
  for (const name of await maildir.listUsers()) {
    const u = await maildir.usage(name);
    waiting += u.count;
    bytes += u.bytes;
    if (u.oldest && (!oldest || u.oldest < oldest)) oldest = u.oldest;
  }
  const disabled = users.filter((u) => u.disabled).length;
  return { users: users.length, active: users.length - disabled, disabled, waiting, bytes, oldestAgeSeconds: oldest ? Math.round((Date.now() - oldest.getTime()) / 1000) : null };
}

export async function purgeNow(config: Config): Promise<{ count: number; bytes: number }> {
  const { maildir } = await openStores(config);
  return purge(config, maildir);
}

