// kzymy-client's local state: the profile (JSON, mode 0600) and, next to it, the record of
// message ids delivered but perhaps not yet acknowledged, so that a crash between the two
// never delivers a message twice.
import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { fsyncPath, writeDurable } from '../config/durable.js';
import { errnoPhrase } from '../config/errno.js';
import { ClientError } from './errors.js';

export interface Profile {
  server?: string;
  username?: string;
  /** Fingerprint (or id) of the user's key in her GnuPG keyring. */
  key?: string;
  gnupghome?: string;
  proxy?: string;
  /** false: --no-tor (loopback development server). */
  tor?: boolean;
  maildir?: string;
  mda?: string;
  decrypt?: boolean;
  /** With decrypt: deliver CRLF line ends as on the wire (default: LF). */
  crlf?: boolean;
}

const PROFILE_KEYS: Array<keyof Profile> = ['server', 'username', 'key', 'gnupghome', 'proxy', 'tor', 'maildir', 'mda', 'decrypt', 'crlf'];

/** $XDG_CONFIG_HOME/kzymy/client.json, else ~/.config/kzymy/client.json. */
export function defaultProfilePath(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg && path.isAbsolute(xdg) ? xdg : path.join(env.HOME || homedir(), '.config');
  return path.join(base, 'kzymy', 'client.json');
}


export class ProfileStore {
  constructor(readonly file: string) {}

  async load(): Promise<Profile> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw new ClientError(`Cannot read the profile ${this.file}: ${errnoPhrase(err) ?? String(err)}.`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new ClientError(`The profile ${this.file} is not valid JSON; fix it or remove it.`);
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new ClientError(`The profile ${this.file} is not a JSON object; fix it or remove it.`);
    }
    const out: Profile = {};
    for (const k of PROFILE_KEYS) {
      const v = (parsed as Record<string, unknown>)[k];
      if (v === undefined || v === null) continue;
      const boolKey = k === 'tor' || k === 'decrypt' || k === 'crlf';
      if (boolKey ? typeof v !== 'boolean' : typeof v !== 'string') {
        throw new ClientError(`The profile ${this.file} has a bad "${k}" (expected ${boolKey ? 'true or false' : 'a string'}).`);
      }
      (out as Record<string, unknown>)[k] = v;
    }
    return out;
  }

  async save(profile: Profile): Promise<void> {
    const clean: Record<string, unknown> = {};
    for (const k of PROFILE_KEYS) if (profile[k] !== undefined) clean[k] = profile[k];
    try {
      await writeDurable(this.file, JSON.stringify(clean, null, 2) + '\n', { mkdir: true });
    } catch (err) {
      throw new ClientError(`Cannot write the profile ${this.file}: ${errnoPhrase(err) ?? String(err)}.`);
    }
  }

  /** Where the login token of `username` is kept between runs, in the profile's folder. */
  tokens(username: string): TokenStore {
    const base = path.basename(this.file).replace(/\.json$/i, '');
    return new TokenStore(path.join(path.dirname(this.file), `${base}.${username}.token`));
  }

  /** The delivery record of `username`, in the profile's folder. */
  record(username: string): DeliveredRecord {
    const base = path.basename(this.file).replace(/\.json$/i, '');
    return new DeliveredRecord(path.join(path.dirname(this.file), `${base}.${username}.delivered`));
  }
}

/**
 * Ids delivered locally, one per line, appended and fsynced before the server is asked to
 * delete the message. An id found here on a later run is acknowledged without delivering
 * it again. Ids the server no longer lists are dropped (ids are never reused).
 *
 * For a Maildir, a line `? ID NAME` is written (and fsynced) before the message's file is
 * renamed into new/NAME: a run killed between that rename and the line `ID` leaves the
 * next run a name to look for, so that it acknowledges a message already in the Maildir
 * instead of delivering it twice. Appends from deliveries in flight share one fsync.
 */
export class DeliveredRecord {
  private ids: Set<string> | null = null;
  private intents = new Map<string, string>();
  private queue: Array<{ line: string; done: (err: unknown) => void }> = [];
  private writing: Promise<void> | null = null;

  constructor(readonly file: string) {}

  async load(): Promise<Set<string>> {
    if (this.ids) return this.ids;
    const ids = new Set<string>();
    try {
      const text = await readFile(this.file, 'utf8');
      // A torn last line (crash mid-append) lacks its newline: it was never fsynced as done.
      const lines = text.split('\n');
      lines.pop();
      for (const l of lines) {
        const intent = /^\? (\S+) (\S+)$/.exec(l);
        if (intent) this.intents.set(intent[1]!, intent[2]!);
        else if (l.length > 0) ids.add(l);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new ClientError(`Cannot read the delivery record ${this.file}: ${errnoPhrase(err) ?? String(err)}.`);
      }
    }
    this.ids = ids;
    return ids;
  }

  async has(id: string): Promise<boolean> {
    return (await this.load()).has(id);
  }

  /** The Maildir name an earlier run was about to give `id` (see the class comment), if any. */
  async intended(id: string): Promise<string | undefined> {
    await this.load();
    return this.intents.get(id);
  }

  /** Appends LINES and fsyncs, sharing the write with every append queued meanwhile. */
  private append(lines: string[]): Promise<void> {
    const done = Promise.all(
      lines.map((line) => new Promise<void>((resolve, reject) => this.queue.push({ line, done: (err) => (err ? reject(err) : resolve()) }))),
    ).then(() => undefined);
    this.writing ??= this.drain().finally(() => {
      this.writing = null;
    });
    return done;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0);
      let failure: unknown = null;
      try {
        await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
        const fh = await open(this.file, 'a', 0o600);
        let created = false;
        try {
          created = (await fh.stat()).size === 0;
          await fh.appendFile(batch.map((b) => b.line + '\n').join(''));
          await fh.sync();
        } finally {
          await fh.close();
        }
        if (created) await fsyncPath(path.dirname(this.file));
      } catch (err) {
        failure = err ?? new Error('write failed');
      }
      for (const b of batch) b.done(failure);
    }
  }

  /** Appends `id` and fsyncs; resolves once the record is durable. */
  async add(id: string): Promise<void> {
    return this.addMany([id]);
  }

  /** add() of several ids with one append and one fsync. */
  async addMany(list: readonly string[]): Promise<void> {
    if (list.length === 0) return;
    const ids = await this.load();
    try {
      await this.append([...list]);
    } catch (err) {
      throw new ClientError(
        `Cannot write the delivery record ${this.file} (${errnoPhrase(err) ?? String(err)}); ${list.length === 1 ? 'the message was delivered but stays' : `${list.length} delivered messages stay`} on the server.`,
      );
    }
    for (const id of list) ids.add(id);
  }

  /** Records that `id` is about to become the Maildir file `name`; resolves once durable. */
  async intend(id: string, name: string): Promise<void> {
    await this.load();
    try {
      await this.append([`? ${id} ${name}`]);
    } catch (err) {
      throw new ClientError(`Cannot write the delivery record ${this.file} (${errnoPhrase(err) ?? String(err)}); the message stays on the server.`);
    }
    this.intents.set(id, name);
  }

  /** Keeps only the ids (and intents) the server still lists. */
  async retainOnly(listed: Set<string>): Promise<void> {
    const ids = await this.load();
    const keep = [...ids].filter((id) => listed.has(id));
    const intents = [...this.intents].filter(([id]) => listed.has(id) && !ids.has(id));
    if (keep.length === ids.size && intents.length === this.intents.size) return;
    const lines = [...intents.map(([id, name]) => `? ${id} ${name}`), ...keep];
    if (lines.length === 0) await unlink(this.file).catch(() => undefined);
    else await writeDurable(this.file, lines.map((l) => l + '\n').join(''), { mkdir: true });
    this.ids = new Set(keep);
    this.intents = new Map(intents);
  }

  async remove(): Promise<void> {
    await unlink(this.file).catch(() => undefined);
    this.ids = new Set();
    this.intents = new Map();
  }
}

/** A bearer token the server issued, for whom, and until when. */
export interface SavedToken {
  server: string;
  username: string;
  fingerprint: string;
  token: string;
  /** ISO date the server gave as its end. */
  expiresAt: string;
}

/**
 * The login token between runs, so that scripted use does not log in for every command:
 * a 0600 file beside the profile (as safe as the profile, which already names the
 * account), used only for the same server, username and key, and only until it expires.
 * `kzymy-client logout` ends it on the server and removes the file.
 */
export class TokenStore {
  constructor(readonly file: string) {}

  /** The saved token if it is still good for at least `marginMs` and was issued to this identity. */
  async load(who: { server: string; username: string; fingerprint: string }, now = Date.now(), marginMs = 30_000): Promise<string | null> {
    let t: Partial<SavedToken>;
    try {
      t = JSON.parse(await readFile(this.file, 'utf8')) as Partial<SavedToken>;
    } catch {
      return null; // none, or unreadable: log in
    }
    if (t.server !== who.server || t.username !== who.username || t.fingerprint !== who.fingerprint) return null;
    if (typeof t.token !== 'string' || typeof t.expiresAt !== 'string') return null;
    const until = Date.parse(t.expiresAt);
    return Number.isFinite(until) && until - marginMs > now ? t.token : null;
  }

  async save(t: SavedToken): Promise<void> {
    // Not keeping it only costs a login next time: a failure here is not the run's.
    await writeDurable(this.file, JSON.stringify(t) + '\n', { mkdir: true }).catch(() => undefined);
  }

  async clear(): Promise<void> {
    await unlink(this.file).catch(() => undefined);
  }
}
