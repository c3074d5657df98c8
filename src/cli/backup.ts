// `kzymy-server backup FILE`: a consistent archive (see backup-format.ts) of the registry,
// the Maildirs, the STARTTLS key and the onion keys, taken while the server runs and mail
// arrives.
// - The registry is read as `kzymy-server users list` reads it and written out as a new
//   snapshot (see src/registry/export.ts for why that state is consistent).
// - Maildirs are read after the registry (backup-maildirs.ts): a message acknowledged
//   before the backup began belongs to a user in that registry and is in new/ or cur/ when
//   its folder is read.
// The archive is written beside FILE and renamed into place once complete and synced.
import { open, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config/index.js';
import { fsyncPath } from '../config/durable.js';
import { errnoCode, errnoPhrase } from '../config/errno.js';
import { exportRegistry, RegistryError } from '../registry/index.js';
import { MaildirStore } from '../maildir/index.js';
import { ArchiveWriter } from './archive-writer.js';
import { archiveMaildirs } from './backup-maildirs.js';
import { asOwnerOf } from './backup-owners.js';
import { BACKUP_FORMAT, BackupError, diskSentence, FIRST, gzipped, MANIFEST, ONION_FILES, SNAPSHOT, type Manifest } from './backup-format.js';
import { version } from './version.js';

type Out = (line: string) => void;

export interface BackupOptions {
  onionKeys: boolean;
  /** Draw a progress bar on stderr (a terminal). */
  progress: boolean;
}

interface OnionRead {
  files: Map<string, Buffer>;
  note: string;
}

/** The onion service's key files, when all of them can be read. */
async function readOnion(hsDir: string, wanted: boolean): Promise<OnionRead> {
  const files = new Map<string, Buffer>();
  if (!wanted) return { files, note: 'not included (--no-onion-keys)' };
  for (const name of ONION_FILES) {
    try {
      files.set(name, await readFile(path.join(hsDir, name)));
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' && name === ONION_FILES[0] && !files.size) return { files: new Map(), note: `none (no onion service keys in ${hsDir})` };
      if (code === 'ENOENT' && name === 'hostname') continue; // tor writes it again from the keys
      if (code === 'EACCES' || code === 'EPERM') {
        return { files: new Map(), note: `not included: ${hsDir} is not readable by this user (run the backup as the owner of those keys, or as root)` };
      }
      return { files: new Map(), note: `not included: ${path.join(hsDir, name)} cannot be read (${errnoPhrase(err) ?? String(err)})` };
    }
  }
  return { files, note: `included (from ${hsDir})` };
}

export async function backup(config: Config, target: string, opts: BackupOptions, out: Out): Promise<void> {
  const file = path.resolve(target);
  const tmp = `${file}.tmp`;
  const createdAt = new Date();

  // 1. The registry, at one point in time (before the Maildirs: see the top of this file).
  const reg = await asOwnerOf(path.join(config.dataDir, 'registry'), () => exportRegistry(config.dataDir));

  let fh: FileHandle;
  try {
    fh = await open(tmp, 'w', 0o600);
    await fh.chmod(0o600);
  } catch (err) {
    throw diskSentence(err, tmp, 'no backup was written');
  }
  let placed = false;
  try {
    const w = new ArchiveWriter(fh, gzipped(file));
    await w.addBuffer(FIRST, Buffer.from(JSON.stringify({ format: BACKUP_FORMAT, kzymy: version(), createdAt: createdAt.toISOString() }) + '\n'));
    await w.addBuffer(SNAPSHOT, Buffer.from(reg.snapshot));
    await w.addBuffer('data/registry/journal.1', Buffer.alloc(0));
    for (const [keyId, armored] of reg.keys) await w.addBuffer(`data/registry/keys/${keyId}.asc`, Buffer.from(armored, 'utf8'));

    // 2. TLS key and certificate.
    let tls = true;
    const tlsNotes: string[] = [];
    for (const [name, src] of [['tls/key.pem', config.smtp.tlsKeyFile], ['tls/cert.pem', config.smtp.tlsCertFile]] as const) {
      try {
        await w.addBuffer(name, await readFile(src));
      } catch (err) {
        if (err instanceof BackupError) throw err;
        tls = false;
        tlsNotes.push(`${src}: ${errnoPhrase(err) ?? String(err)}`);
      }
    }

    // 3. The onion service's keys.
    const onion = await readOnion(path.dirname(config.tor.hostnameFile), opts.onionKeys);
    for (const [name, data] of onion.files) await w.addBuffer(`onion/${name}`, data);

    // 4. The Maildirs of the registry's users.
    const { messages, messageBytes } = await archiveMaildirs(w, new MaildirStore(config.maildirRoot), reg.users.map((u) => u.username), opts.progress);

    const manifest: Manifest = {
      format: BACKUP_FORMAT,
      kzymy: version(),
      createdAt: createdAt.toISOString(),
      finishedAt: new Date().toISOString(),
      counts: { users: reg.users.length, keys: reg.keys.size, messages, messageBytes, files: Object.keys(w.files).length },
      included: { tls, onionKeys: onion.files.size > 0 },
      files: w.files,
    };
    await w.addBuffer(MANIFEST, Buffer.from(JSON.stringify(manifest) + '\n'));
    await w.finish();
    await fh.sync();
    await fh.close();
    await rename(tmp, file);
    placed = true;
    await fsyncPath(path.dirname(file));

    out(`backup       ${file} (${gzipped(file) ? 'tar, gzip' : 'tar'}, mode 0600)`);
    out(`registry     ${reg.users.length} user${reg.users.length === 1 ? '' : 's'}, ${reg.keys.size} key${reg.keys.size === 1 ? '' : 's'}`);
    out(`maildirs     ${messages} message${messages === 1 ? '' : 's'}, ${messageBytes} bytes (ciphertext)`);
    out(`tls          ${tls ? 'key and certificate included' : `not included (${tlsNotes.join('; ')})`}`);
    out(`onion keys   ${onion.note}`);
    const secrets = [tls ? 'the STARTTLS private key' : '', onion.files.size ? "the onion service's secret key (whoever holds it can impersonate the service)" : ''].filter(Boolean);
    if (secrets.length) out(`secret       this file holds ${secrets.join(' and ')}: keep it encrypted and offline`);
  } catch (err) {
    await fh.close().catch(() => undefined);
    if (!placed) await unlink(tmp).catch(() => undefined);
    if (err instanceof BackupError || err instanceof RegistryError) throw err;
    throw diskSentence(err, file, 'no backup was written');
  }
}
