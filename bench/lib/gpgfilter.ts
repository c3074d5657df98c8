// The third contestant of bench/intake.ts: the design of gpg-lacre and zeyple, where the MTA
// hands each message to a program that runs `gpg --encrypt` once for it. Here the private
// Postfix (bench/lib/postfix.ts) routes a second domain to a pipe(8) transport that runs
// deliver.sh once per message, as nobody: gpg writes the ASCII-armored OpenPGP message (the
// whole message, headers included, encrypted as one; no PGP/MIME framing) into Maildir/tmp,
// the file is fsynced, renamed into new/, and new/ is fsynced, as kzymy does before its 250.
import { chmod, chown, mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gpg } from '../../test/helpers/gpg.js';
import { runOk } from './util.js';

const NOBODY = 65534;
const NOGROUP = 65534;

export interface GpgFilter {
  /** The GnuPG home deliver.sh uses (the user's public key only), owned by nobody. */
  gnupghome: string;
  /** The Maildir (tmp/, new/, cur/), owned by nobody. */
  maildir: string;
  maildirNew: string;
  /** pipe(8)'s argv (the queue id is passed as the first argument). */
  argv: string[];
  /** Runs `gpgconf --kill all` for the home (gpg starts no agent to encrypt; in case). */
  stop(): Promise<void>;
}

async function which(cmd: string): Promise<string> {
  return (await runOk('sh', ['-c', `command -v ${cmd}`])).stdout.trim();
}

/** A home with `publicArmored` imported, a Maildir and deliver.sh, all under `dir` (a new folder). */
export async function setupGpgFilter(dir: string, publicArmored: string, fingerprint: string): Promise<GpgFilter> {
  const gnupghome = path.join(dir, 'gnupg');
  const maildir = path.join(dir, 'Maildir');
  await mkdir(dir, { recursive: true });
  await chmod(dir, 0o755);
  await mkdir(gnupghome, { mode: 0o700 });
  await gpg(gnupghome, ['--import'], publicArmored);
  for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(maildir, sub), { recursive: true });
  const [gpgBin, syncBin, mvBin, rmBin] = await Promise.all(['gpg', 'sync', 'mv', 'rm'].map(which));
  // pipe(8) runs commands with a minimal environment: every program by its full path.
  const script = `#!/bin/sh
# One message on stdin, from Postfix's pipe(8), run as nobody; $1 is the queue id.
# Exit 75 (EX_TEMPFAIL) on any failure, so Postfix keeps the message and retries.
umask 077
name="$1.$$.gpgfilter"
tmp="${maildir}/tmp/$name"
${gpgBin} --homedir "${gnupghome}" --batch --no-tty --quiet --trust-model always --armor --encrypt -r "${fingerprint}" --output "$tmp" || { ${rmBin} -f "$tmp"; exit 75; }
${syncBin} "$tmp" || exit 75
${mvBin} "$tmp" "${maildir}/new/$name" || exit 75
${syncBin} "${maildir}/new" || exit 75
exit 0
`;
  const scriptFile = path.join(dir, 'deliver.sh');
  await writeFile(scriptFile, script, { mode: 0o755 });
  // Everything deliver.sh writes belongs to nobody (gpg keeps its trustdb and locks in the home).
  await runOk('chown', ['-R', `${NOBODY}:${NOGROUP}`, gnupghome, maildir]);
  await chown(dir, 0, 0);
  const shBin = await which('sh');
  const filter: GpgFilter = {
    gnupghome,
    maildir,
    maildirNew: path.join(maildir, 'new'),
    argv: [shBin, scriptFile, '${queue_id}'],
    async stop() {
      await runOk('gpgconf', ['--homedir', gnupghome, '--kill', 'all']).catch(() => undefined);
    },
  };
  // One delivery by hand, as nobody, before Postfix runs it: gpg's first run in a home makes
  // its trustdb, and a failure here is clearer than a deferred message.
  await runOk('runuser', ['-u', 'nobody', '--', shBin, scriptFile, 'selftest'], { timeoutMs: 30_000 }).catch(async (err: Error) => {
    throw new Error(`the gpg filter's deliver.sh failed as nobody: ${err.message}`);
  });
  const files = await readdir(filter.maildirNew);
  if (files.length !== 1) throw new Error(`the gpg filter's self-test left ${files.length} files in new/`);
  await runOk('rm', ['-f', path.join(filter.maildirNew, files[0]!)]);
  return filter;
}
