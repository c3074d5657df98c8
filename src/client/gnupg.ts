// The user's keys stay in her GnuPG keyring: kzymy-client runs the `gpg` binary to export
// the public key and to decrypt challenges and mail, so the secret key is never exported.
// gpg's own words never reach the user raw: they become one sentence (gpg-output.ts).
import { spawn } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { watch } from './deliver.js';
import { ClientError } from './errors.js';
import { decryptFailure, DECRYPTION_OKAY, parseColons, signFailure, spawnError, type Keyring, type SecretKey } from './gpg-output.js';

export interface GnupgOptions {
  /** --homedir for gpg; else gpg's default ($GNUPGHOME or ~/.gnupg). */
  homedir?: string;
  /**
   * True when a person sits at the terminal: gpg-agent may then ask for a passphrase with
   * its pinentry. False (automation): a locked key fails at once with a sentence.
   */
  interactive?: boolean;
}

interface GpgRun {
  code: number;
  stdout: Buffer;
  stderr: string;
  /** True when gpg was stopped because its output passed the cap given to run(). */
  overflow: boolean;
}

/** How much of gpg's stderr (status lines) decryptStream() keeps: the end tells the outcome. */
const STATUS_KEEP = 64 * 1024;

export class Gnupg {
  constructor(readonly opts: GnupgOptions = {}) {}

  private where(): string {
    return this.keyring().where;
  }

  private keyring(): Keyring {
    const named = Boolean(this.opts.homedir);
    return { where: named ? `the GnuPG keyring in ${this.opts.homedir}` : 'your GnuPG keyring', named };
  }

  /** gpg's command line and environment for `args`: batch, status on fd 2, no pinentry off a terminal. */
  private command(args: string[]): { argv: string[]; env: NodeJS.ProcessEnv } {
    const base = ['--batch', '--no-tty', '--status-fd', '2'];
    if (this.opts.homedir) base.push('--homedir', this.opts.homedir);
    if (!this.opts.interactive) base.push('--pinentry-mode', 'error');
    const env = { ...process.env };
    if (this.opts.interactive && !env.GPG_TTY) {
      try {
        // pinentry-curses needs to know the terminal; `tty` would print the same.
        env.GPG_TTY = readlinkSync('/proc/self/fd/0');
      } catch {
        // not Linux, or no terminal: gpg-agent uses what it has
      }
    }
    return { argv: [...base, ...args], env };
  }

  private run(args: string[], input?: Buffer | string, maxStdout = Infinity): Promise<GpgRun> {
    const { argv, env } = this.command(args);
    return new Promise((resolve, reject) => {
      const child = spawn('gpg', argv, { stdio: ['pipe', 'pipe', 'pipe'], env });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let size = 0;
      let overflow = false;
      child.stdout.on('data', (c: Buffer) => {
        if (overflow) return c.fill(0);
        size += c.length;
        if (size > maxStdout) {
          // More than any answer may hold: stop gpg and forget what it wrote.
          overflow = true;
          c.fill(0);
          for (const o of out) o.fill(0);
          out.length = 0;
          child.kill('SIGKILL');
          return;
        }
        out.push(c);
      });
      child.stderr.on('data', (c: Buffer) => err.push(c));
      child.on('error', (e: NodeJS.ErrnoException) => reject(spawnError(e)));
      child.stdin.on('error', () => {}); // gpg may exit before reading everything; its status tells
      child.on('close', (code) =>
        resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8'), overflow }),
      );
      child.stdin.end(input ?? '');
    });
  }

  /** The one secret key `keyid` names (fingerprint, key id, or user id); a sentence otherwise. */
  async secretKey(keyid: string): Promise<SecretKey> {
    const spec = keyid.trim().replace(/^0x/i, '').replace(/\s+/g, '');
    if (!spec) throw new ClientError('The key id is empty; give --key with a fingerprint (gpg --list-secret-keys shows yours).');
    const r = await this.run(['--with-colons', '--fixed-list-mode', '--list-secret-keys', '--', spec]);
    const keys = parseColons(r.stdout.toString('utf8'), 'sec');
    if (keys.length === 0) {
      const pub = await this.run(['--with-colons', '--fixed-list-mode', '--list-keys', '--', spec]);
      if (parseColons(pub.stdout.toString('utf8'), 'pub').length > 0) {
        throw new ClientError(
          `${this.where()} has the public key ${keyid} but not its secret half, which kzymy-client needs to answer the server's challenges; import the secret key, or give --gnupghome.`,
        );
      }
      throw new ClientError(
        `There is no secret key ${keyid} in ${this.where()}; list yours with "gpg --list-secret-keys"${this.opts.homedir ? '' : ', or give --gnupghome'}.`,
      );
    }
    if (keys.length > 1) {
      throw new ClientError(
        `${keyid} names ${keys.length} secret keys in ${this.where()}; give the full fingerprint with --key.`,
      );
    }
    return keys[0]!;
  }

  /** The public key (ASCII-armored), exported by fingerprint; the secret key stays put. */
  async exportPublic(fingerprint: string): Promise<string> {
    const r = await this.run(['--armor', '--export-options', 'export-minimal', '--export', '--', fingerprint]);
    const text = r.stdout.toString('utf8');
    if (r.code !== 0 || !text.includes('-----BEGIN PGP PUBLIC KEY BLOCK-----')) {
      throw new ClientError(`gpg could not export the public key ${fingerprint} from ${this.where()}.`);
    }
    return text;
  }

  /**
   * Decrypts an OpenPGP message; `what` names it in sentences ("the server's challenge").
   * With `maxBytes`, a plaintext longer than that is never returned: gpg is stopped, what it
   * wrote is zeroed, and the answer is null.
   */
  async decrypt(data: Buffer | string, what: string): Promise<Buffer>;
  async decrypt(data: Buffer | string, what: string, maxBytes: number): Promise<Buffer | null>;
  async decrypt(data: Buffer | string, what: string, maxBytes = Infinity): Promise<Buffer | null> {
    const r = await this.run(['--decrypt'], data, maxBytes);
    if (r.overflow) {
      r.stdout.fill(0);
      return null;
    }
    if (r.code === 0 && DECRYPTION_OKAY.test(r.stderr)) return r.stdout;
    r.stdout.fill(0);
    throw decryptFailure(r.stderr, what, this.keyring());
  }

  /**
   * Decrypts an OpenPGP message read from `input` while it arrives, yielding gpg's output
   * in chunks as gpg writes it (never held whole; with backpressure: gpg waits while the
   * consumer does). Only a run that ends with gpg's exit 0 and DECRYPTION_OKAY completes:
   * otherwise the iteration throws after the last chunk, with decrypt()'s sentences, so a
   * consumer must treat what it got as void until then (gpg writes a tampered message's
   * plaintext before it finds the damage). An error of `input` (a broken download) stops
   * gpg and is thrown as it is. Stopping the iteration early kills gpg.
   */
  async *decryptStream(input: AsyncIterable<Buffer>, what: string): AsyncGenerator<Buffer> {
    const { argv, env } = this.command(['--decrypt']);
    const child = spawn('gpg', argv, { stdio: ['pipe', 'pipe', 'pipe'], env });
    const spawned = new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (e: NodeJS.ErrnoException) => reject(spawnError(e)));
    });
    const closed = new Promise<number>((resolve) => child.once('close', (code) => resolve(code ?? -1)));
    // gpg's status lines: small, but a hostile message could make gpg say a lot; the end is kept.
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (t: string) => {
      stderr = (stderr + t).slice(-STATUS_KEEP);
    });
    const source = watch(input);
    // gpg may exit before reading all of its input (bad data); its status then tells.
    const feeding = pipeline(source.chunks, child.stdin).catch(() => {
      if (source.failure()) child.kill('SIGKILL');
    });
    let done = false;
    try {
      await spawned;
      for await (const chunk of child.stdout as AsyncIterable<Buffer>) yield chunk;
      const code = await closed;
      await feeding;
      const inputError = source.failure();
      if (inputError) throw inputError.err;
      if (code !== 0 || !DECRYPTION_OKAY.test(stderr)) throw decryptFailure(stderr, what, this.keyring());
      done = true;
    } finally {
      if (!done) {
        child.kill('SIGKILL');
        await closed; // also emitted after a failed spawn
      }
    }
  }

  /**
   * Decrypts several files with one gpg (`--decrypt-files`): gpg writes the plaintext of
   * FILE.gpg to FILE beside it. Per file (in order), null when it decrypted (exit status
   * aside, the file's own status block holds DECRYPTION_OKAY and no failure), else
   * decrypt()'s sentence, `what(i)` naming it. gpg goes on after a file that fails; what it
   * wrote for that one must be treated as void. Rejects only when gpg cannot run.
   */
  async decryptFiles(files: readonly string[], what: (i: number) => string): Promise<Array<ClientError | null>> {
    for (const f of files) if (!f.endsWith('.gpg')) throw new Error(`decryptFiles: ${f} does not end in .gpg`);
    const { argv, env } = this.command(['--yes', '--decrypt-files', '--', ...files]);
    const blocks: string[] = files.map(() => '');
    const index = new Map(files.map((f, i) => [f, i]));
    await new Promise<void>((resolve, reject) => {
      const child = spawn('gpg', argv, { stdio: ['ignore', 'ignore', 'pipe'], env });
      let current = -1;
      let rest = '';
      const line = (l: string): void => {
        const start = /^\[GNUPG:\] FILE_START \d+ (.*)$/.exec(l);
        if (start) {
          current = index.get(start[1]!) ?? -1;
          return;
        }
        if (/^\[GNUPG:\] FILE_DONE/.test(l)) {
          current = -1;
          return;
        }
        // Status lines of one file are few; a hostile message could make gpg say a lot.
        if (current >= 0 && blocks[current]!.length < STATUS_KEEP) blocks[current] += l + '\n';
      };
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (t: string) => {
        const lines = (rest + t).split('\n');
        rest = lines.pop()!.slice(-STATUS_KEEP);
        for (const l of lines) line(l);
      });
      child.once('error', (e: NodeJS.ErrnoException) => reject(spawnError(e)));
      child.once('close', () => {
        if (rest) line(rest);
        resolve();
      });
    });
    return blocks.map((b, i) =>
      DECRYPTION_OKAY.test(b) && !/\[GNUPG:\] (DECRYPTION_FAILED|BADMDC)/.test(b) ? null : decryptFailure(b, what(i), this.keyring()),
    );
  }

  /**
   * A detached, ASCII-armored signature by the key `fingerprint` over exactly the bytes of
   * `statement` (binary mode: no line-ending conversion); `what` names it in sentences.
   */
  async sign(statement: string, fingerprint: string, what = 'the login statement'): Promise<string> {
    const r = await this.run(['--armor', '--detach-sign', '--local-user', fingerprint], Buffer.from(statement, 'utf8'));
    const signature = r.stdout.toString('utf8');
    if (r.code === 0 && /\[GNUPG:\] SIG_CREATED /.test(r.stderr) && signature.includes('-----BEGIN PGP SIGNATURE-----')) {
      return signature;
    }
    throw signFailure(r.stderr, fingerprint, what, this.keyring());
  }
}

