// What every command needs: the profile merged with the command line (given values are
// saved back once the command succeeded), the transport (checked before any network
// I/O), gpg and a session.
import path from 'node:path';
import { usageError } from './errors.js';
import { Session } from './api.js';
import type { Destination } from './deliver.js';
import { MaildirDestination } from './maildir-destination.js';
import { MdaDestination } from './mda.js';
import { Gnupg } from './gnupg.js';
import { defaultProfilePath, ProfileStore, type Profile } from './state.js';
import { DEFAULT_PROXY, resolveTarget, type Target } from './target.js';
import { Transport } from './transport.js';

/** The command line's global options: the profile's settings, plus what is per run. */
export interface GlobalOptions extends Profile {
  config?: string;
  watch?: number;
  quiet?: boolean;
}

export type Output = (line: string) => void;

export class Context {
  private transportInstance: Transport | null = null;
  private sessionInstance: Session | null = null;

  private constructor(
    readonly store: ProfileStore,
    readonly profile: Profile,
    readonly opts: GlobalOptions,
    readonly out: Output,
    /** Values the command line changed, saved by commit() once the command succeeded. */
    private readonly given: Profile = {},
    private changed = false,
  ) {}

  /**
   * Loads the profile, applies the command line and refuses a server it must not talk to
   * (before any network I/O). Nothing is saved yet: see commit().
   */
  static async open(opts: GlobalOptions, out: Output): Promise<Context> {
    if (opts.maildir !== undefined && opts.mda !== undefined) {
      throw usageError('Give either --maildir or --mda, not both: each message is delivered one way.');
    }
    const store = new ProfileStore(path.resolve(opts.config ?? defaultProfilePath()));
    const saved = await store.load();
    const given: Profile = {};
    if (opts.server !== undefined) given.server = opts.server;
    if (opts.username !== undefined) given.username = opts.username.trim().toLowerCase();
    if (opts.key !== undefined) given.key = opts.key;
    if (opts.gnupghome !== undefined) given.gnupghome = path.resolve(opts.gnupghome);
    if (opts.proxy !== undefined) given.proxy = opts.proxy;
    if (opts.tor !== undefined) given.tor = opts.tor;
    if (opts.maildir !== undefined) given.maildir = path.resolve(opts.maildir);
    if (opts.mda !== undefined) given.mda = opts.mda;
    if (opts.decrypt !== undefined) given.decrypt = opts.decrypt;
    if (opts.crlf !== undefined) given.crlf = opts.crlf;
    const profile: Profile = { ...saved, ...given };
    if (given.maildir !== undefined) delete profile.mda;
    if (given.mda !== undefined) delete profile.maildir;
    const changed = (Object.keys(given) as Array<keyof Profile>).some((k) => saved[k] !== given[k]) ||
      (given.maildir !== undefined && saved.mda !== undefined) ||
      (given.mda !== undefined && saved.maildir !== undefined);
    const ctx = new Context(store, profile, opts, out, given, changed);
    if (profile.server !== undefined) ctx.target(); // refusals happen here, before anything is sent
    return ctx;
  }

  /**
   * After the command succeeded: saves the values given on its command line, so that a
   * mistyped option of a failed run never becomes the default of the next. A --key that
   * is not in the keyring is refused, not saved.
   */
  async commit(): Promise<void> {
    if (!this.changed) return;
    if (this.given.key !== undefined) await this.gpg().secretKey(this.given.key);
    await this.store.save(this.profile);
    this.changed = false;
  }

  get quiet(): boolean {
    return Boolean(this.opts.quiet);
  }

  say(line: string): void {
    if (!this.quiet) this.out(line);
  }

  target(): Target {
    if (!this.profile.server) {
      throw usageError(`No server: give --server http://....onion (it is then saved in ${this.store.file}).`);
    }
    return resolveTarget(this.profile.server, { tor: this.profile.tor !== false, proxy: this.profile.proxy ?? DEFAULT_PROXY });
  }

  transport(): Transport {
    this.transportInstance ??= new Transport(this.target());
    return this.transportInstance;
  }

  gpg(): Gnupg {
    return new Gnupg({ homedir: this.profile.gnupghome, interactive: Boolean(process.stdin.isTTY) });
  }

  username(): string {
    if (!this.profile.username) {
      throw usageError(`No username: give --username (shown after signup), or run "kzymy-client signup" first.`);
    }
    return this.profile.username;
  }

  keyId(): string {
    if (!this.profile.key) throw usageError('No key: give --key with the fingerprint of your key (gpg --list-secret-keys).');
    return this.profile.key;
  }

  session(): Session {
    this.sessionInstance ??= new Session(this.transport(), this.gpg(), this.username(), () => this.keyId(), this.store.tokens(this.username()));
    return this.sessionInstance;
  }

  destination(): Destination {
    if (this.profile.mda) return new MdaDestination(this.profile.mda);
    if (this.profile.maildir) return new MaildirDestination(this.profile.maildir);
    throw usageError('Nowhere to deliver: give --maildir DIR or --mda "COMMAND" (it is then saved in the profile).');
  }

  async save(): Promise<void> {
    await this.store.save(this.profile);
    this.changed = false;
  }

  async close(): Promise<void> {
    await this.sessionInstance?.end();
    this.transportInstance?.close();
  }
}
