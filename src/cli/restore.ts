// `kzymy-server restore FILE`: a backup (see backup-format.ts) onto an empty data folder and
// Maildir root, with the server stopped.
//
// Every file is verified against the manifest (restore-verify.ts), then extracted into a
// folder beside the target and verified again as written, before anything moves into place;
// the registry is placed last. A failed restore leaves the target as it found it.
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rm, rmdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { extract, type ReadEntry } from 'tar';
import type { Config } from '../config/index.js';
import { errnoCode, errnoPhrase } from '../config/errno.js';
import { openRegistry } from '../registry/index.js';
import { MaildirStore } from '../maildir/index.js';
import { BackupError, diskSentence } from './backup-format.js';
import { sha256File } from './backup-files.js';
import { asOwnerOf, ownerOf, resolveOwner, type Ids } from './backup-owners.js';
import { exists, fixTree, mkdirOwned, move } from './restore-place.js';
import { damaged, verifyArchive, whatBroke } from './restore-verify.js';
import { tcpError } from './probe.js';

type Out = (line: string) => void;

export interface RestoreOptions {
  /** USER[:GROUP] for the registry, Maildirs and TLS files (root only). */
  owner?: string;
  /** USER[:GROUP] for the onion service's keys (root only). */
  onionOwner?: string;
}

/** Whether something accepts connections on host:port (a running kzymy-server). */
async function listening(host: string, port: number): Promise<boolean> {
  if (!port) return false;
  return (await tcpError(host, port, 2000)) === null;
}

export async function restore(config: Config, source: string, opts: RestoreOptions, out: Out): Promise<void> {
  const file = path.resolve(source);
  const root = process.getuid?.() === 0;
  if ((opts.owner || opts.onionOwner) && !root) throw new BackupError('--owner and --onion-owner need root; without them the restored files belong to the user running restore.');
  const hsDir = path.dirname(config.tor.hostnameFile);

  // 1. The archive must be a file we can read.
  const st = await stat(file).catch((err: unknown) => {
    throw new BackupError(`Cannot read the backup ${file}: ${errnoPhrase(err) ?? String(err)}.`);
  });
  if (!st.isFile()) throw new BackupError(`${file} is not a file: give the archive that kzymy-server backup wrote.`);

  // 2. The server must not be running.
  for (const [what, host, port] of [['SMTP', config.smtp.host, config.smtp.port], ['web', config.web.host, config.web.port]] as const) {
    if (await listening(host, port)) {
      throw new BackupError(`Something listens on the ${what} port ${host}:${port} (a running kzymy-server?): stop it (systemctl stop kzymy) before restoring.`);
    }
  }

  // 3. The target must hold no users.
  const store = new MaildirStore(config.maildirRoot);
  const held = await store.listUsers();
  if (held.length) {
    throw new BackupError(`${config.maildirRoot} already holds the Maildirs of ${held.length} user${held.length === 1 ? '' : 's'}: restore onto an empty Maildir root (move this one aside first).`);
  }
  const regDir = path.join(config.dataDir, 'registry');
  if (await exists(path.join(config.dataDir, 'registry.json'))) throw new BackupError(`${config.dataDir} already holds a registry (registry.json): restore onto an empty data folder (move it aside first).`);
  if (await exists(regDir)) {
    let count: number;
    try {
      count = await asOwnerOf(regDir, async () => {
        const reg = await openRegistry({ dataDir: config.dataDir });
        const n = reg.count();
        await reg.close();
        return n;
      });
    } catch {
      throw new BackupError(`${regDir} holds a registry that cannot be read: move it aside (mv ${regDir} ${regDir}.damaged), then restore again.`);
    }
    if (count > 0) throw new BackupError(`${regDir} already holds a registry with ${count} user${count === 1 ? '' : 's'}: restore onto an empty data folder (move it aside first).`);
  }

  // 4. Who will own the files.
  let owner: Ids | null = null;
  let onionOwner: Ids | null = null;
  if (root) {
    // Default: whoever owns the data folder already (the appliance's provisioning makes it
    // for the kzymy user), else root itself.
    owner = opts.owner ? await resolveOwner(opts.owner) : await ownerOf(config.dataDir);
    onionOwner = opts.onionOwner ? await resolveOwner(opts.onionOwner) : ((await ownerOf(hsDir)) ?? (await ownerOf(path.dirname(hsDir))));
  }

  // 5. Read the whole archive and check it against its manifest, writing nothing.
  const { manifest, users } = await verifyArchive(file);

  // 6. Extract into a folder beside the data folder.
  let extracting = false;
  const made: string[] = [];
  await mkdirOwned(config.dataDir, owner, made);
  const stage = path.join(config.dataDir, `.restore-${randomBytes(6).toString('hex')}`);
  await mkdir(stage, { mode: 0o700 });
  await chmod(stage, 0o700);
  const undo: Array<() => Promise<void>> = [];
  const cleanups: string[] = [stage];
  try {
    try {
      await extract({ file, cwd: stage, strict: true, preserveOwner: false, noChmod: true, filter: (p, e) => (e as ReadEntry).type === 'File' && p in manifest.files });
    } catch (err) {
      // The archive was read whole a moment ago: this is the disk, or the file changed since.
      extracting = true;
      // node-tar wraps a failed write (ENOSPC) in an entry error that keeps the errno code.
      throw errnoCode(err) ? err : damaged(file, whatBroke(err));
    }
    // The same files again, as written to disk (the archive could have changed since).
    for (const [name, want] of Object.entries(manifest.files)) {
      const got = await sha256File(path.join(stage, name)).catch(() => null);
      if (!got || got.size !== want.size || got.sha256 !== want.sha256) throw damaged(file, `${name} changed while it was restored`);
    }

    // 7. Modes and owners, in the stage (nothing is in place yet).
    const maildirs = path.join(stage, 'maildirs');
    await mkdir(maildirs, { recursive: true });
    for (const u of users) for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(maildirs, u.username, sub), { recursive: true });
    await fixTree(path.join(stage, 'data'), owner);
    await fixTree(maildirs, owner);
    const hasTls = await exists(path.join(stage, 'tls/key.pem'));
    if (hasTls) await fixTree(path.join(stage, 'tls'), owner);
    const hasOnion = await exists(path.join(stage, 'onion/hs_ed25519_secret_key'));
    // The appliance's tor makes the hostname group-readable for kzymy: keep the folder's
    // group bits as tor left them on this machine; keys stay 0600.
    const oldHs = await stat(hsDir).catch(() => null);
    const hsDirMode = oldHs ? (oldHs.mode & 0o750) | 0o700 : 0o700;
    if (hasOnion) await fixTree(path.join(stage, 'onion'), onionOwner, hsDirMode, (rel) => (rel === 'hostname' && hsDirMode & 0o050 ? 0o640 : 0o600));

    // 8. Into place: Maildirs, TLS, onion keys, and the registry last (the server starts only
    // with a registry, so an interrupted restore never serves half the data).
    await mkdirOwned(config.maildirRoot, owner, made);
    for (const u of users) {
      const dest = path.join(config.maildirRoot, u.username);
      if (await exists(dest)) throw new BackupError(`${dest} appeared during the restore: nothing was restored.`);
      await move(path.join(maildirs, u.username), dest);
      undo.push(() => rm(dest, { recursive: true, force: true }));
    }
    const replaced: string[] = [];
    const putAside = async (target: string) => {
      if (!(await exists(target))) return;
      const aside = path.join(stage, `old-${replaced.length}`);
      await move(target, aside);
      undo.push(() => move(aside, target));
      replaced.push(target);
    };
    if (hasTls) {
      for (const [name, dest] of [['key.pem', config.smtp.tlsKeyFile], ['cert.pem', config.smtp.tlsCertFile]] as const) {
        await mkdirOwned(path.dirname(dest), owner, made);
        await putAside(dest);
        await move(path.join(stage, 'tls', name), dest);
        undo.push(() => unlink(dest));
      }
    }
    if (hasOnion) {
      await mkdirOwned(path.dirname(hsDir), onionOwner, made);
      await putAside(hsDir);
      await move(path.join(stage, 'onion'), hsDir);
      undo.push(() => rm(hsDir, { recursive: true, force: true }));
    }
    await putAside(regDir);
    await move(path.join(stage, 'data/registry'), regDir);
    undo.length = 0;
    made.length = 0;

    out(`restored     ${file} (made ${manifest.createdAt} by kzymy ${manifest.kzymy})`);
    out(`registry     ${regDir}: ${users.length} user${users.length === 1 ? '' : 's'}`);
    out(`maildirs     ${config.maildirRoot}: ${manifest.counts?.messages ?? 0} messages`);
    out(`tls          ${hasTls ? `${config.smtp.tlsKeyFile}, ${config.smtp.tlsCertFile}` : 'not in the backup (kzymy-server init makes a new certificate)'}`);
    out(`onion keys   ${hasOnion ? `${hsDir}${onionOwner ? ` (owner ${onionOwner.label})` : ''}: start tor again to publish the same address` : 'not in the backup: tor keeps its own keys (a different onion address)'}`);
    if (replaced.length) out(`replaced     ${replaced.join(', ')} (as made on this machine before the restore)`);
    out(`owner        ${owner ? owner.label : 'the user running restore'}; folders 0700, files 0600`);
  } catch (err) {
    for (const step of undo.reverse()) await step().catch(() => undefined);
    if (err instanceof BackupError) throw err;
    throw diskSentence(err, config.dataDir, 'nothing was restored');
  } finally {
    for (const dir of cleanups) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    // node-tar rejects at the first error while writes of entries already under way still
    // finish: wait for them, and remove what they left, until the stage stays gone.
    if (extracting) {
      for (let i = 0; i < 20; i++) {
        await delay(100);
        if (!(await exists(stage))) break;
        await rm(stage, { recursive: true, force: true }).catch(() => undefined);
      }
    }
    // A failed restore leaves no folder it made (rmdir: only empty ones go).
    for (const dir of made.reverse()) await rmdir(dir).catch(() => undefined);
  }
}
