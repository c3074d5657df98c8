// Many users for a benchmark: N GnuPG keys (Ed25519 with a Cv25519 encryption subkey) made
// in one GnuPG home by one gpg run, each registered with `kzymy-server users add --key`.
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gpg } from '../../test/helpers/gpg.js';
import { kzymyCli } from './kzymy.js';

export interface BenchUser {
  username: string;
  fingerprint: string;
}

export interface BenchUsers {
  /** GnuPG home holding every secret key (gpg --decrypt there opens any user's mail). */
  gnupghome: string;
  users: BenchUser[];
  /** Stops the gpg-agent of the home. */
  stop(): void;
}

/** Makes `n` keys in `dir` (a new folder) and registers each through the server CLI. */
export async function makeUsers(dir: string, configFile: string, n: number): Promise<BenchUsers> {
  const gnupghome = path.join(dir, 'gnupg');
  await mkdir(gnupghome, { recursive: true });
  await chmod(gnupghome, 0o700);
  const stop = () => void spawnSync('gpgconf', ['--homedir', gnupghome, '--kill', 'gpg-agent'], { stdio: 'ignore' });
  try {
    const block = (i: number) =>
      [
        'Key-Type: eddsa',
        'Key-Curve: ed25519',
        'Key-Usage: sign',
        'Subkey-Type: ecdh',
        'Subkey-Curve: cv25519',
        'Subkey-Usage: encrypt',
        'Expire-Date: 0',
        `Name-Real: Bench ${i}`,
        `Name-Email: bench${i}@example.invalid`,
        '%commit',
      ].join('\n');
    const batch = ['%no-protection', ...Array.from({ length: n }, (_, i) => block(i)), ''].join('\n');
    await gpg(gnupghome, ['--gen-key'], batch);
    const colons = (await gpg(gnupghome, ['--with-colons', '--fingerprint', '--list-secret-keys'])).toString('utf8').split('\n');
    const fingerprints: string[] = [];
    for (let i = 0; i < colons.length; i++) {
      if (!colons[i]!.startsWith('sec:')) continue;
      const fpr = colons.slice(i + 1).find((l) => l.startsWith('fpr:'));
      if (fpr) fingerprints.push(fpr.split(':')[9]!.toUpperCase());
    }
    if (fingerprints.length !== n) throw new Error(`gpg made ${fingerprints.length} keys, not ${n}`);
    const users: BenchUser[] = [];
    for (const fingerprint of fingerprints) {
      const file = path.join(dir, `${fingerprint}.asc`);
      await writeFile(file, await gpg(gnupghome, ['--armor', '--export', fingerprint]));
      // One at a time: each `users add` is a registry write of its own.
      const username = (await kzymyCli(configFile, 'users', 'add', '--key', file)).trim().split('\n').pop()!.trim();
      if (!/^[a-z0-9-]+$/.test(username)) throw new Error(`users add printed no username: ${JSON.stringify(username)}`);
      users.push({ username, fingerprint });
    }
    return { gnupghome, users, stop };
  } catch (err) {
    stop();
    throw err;
  }
}
