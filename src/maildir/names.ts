// Maildir file names per qmail's maildir(5): making unique names, checking ids and
// reading what a name tells (receipt time, size). Part of kzymy's own Maildir code;
// there is no `maildir-tools` package on npm.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

/** Usernames are folder names under the Maildir root. */
export const USERNAME_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** Characters an id may hold: unique names, `,S=` and `:2,FLAGS` suffixes, `\ooo` escapes. */
const ID_CHARS_RE = /^[A-Za-z0-9._,=\-:\\]+$/;

export function isValidUsername(user: string): boolean {
  return typeof user === 'string' && USERNAME_RE.test(user);
}

/**
 * True when `id` can safely name a file inside new/ or cur/: 1 to 255 characters from
 * the set above, no leading dot (maildir(5) ignores dot files, and this also rules out
 * `.` and `..`) and no `..` anywhere. `/` and NUL fall outside the character set.
 */
export function isValidId(id: string): boolean {
  return (
    typeof id === 'string' &&
    id.length > 0 &&
    id.length <= 255 &&
    ID_CHARS_RE.test(id) &&
    !id.startsWith('.') &&
    !id.includes('..')
  );
}

/**
 * The host part of a unique name. maildir(5) asks for `/` as `\057` and `:` as `\072`;
 * we encode every byte outside `[A-Za-z0-9.-]` the same way (three octal digits), so
 * that `,` cannot be mistaken for the `,S=` field and the result always passes isValidId.
 */
export function encodeHostname(host: string): string {
  let out = '';
  for (const byte of Buffer.from(host, 'utf8')) {
    const ch = String.fromCharCode(byte);
    out += /[A-Za-z0-9.-]/.test(ch) ? ch : '\\' + byte.toString(8).padStart(3, '0');
  }
  // Leading dots would make a hidden file or trip the `..` rule; an empty host is odd.
  out = out.replace(/\.{2,}/g, '.').replace(/^\.+/, '');
  return out.length > 0 ? out.slice(0, 100) : 'localhost';
}

/** This host's name as it stands in the names this process writes. */
export const HOST = encodeHostname(hostname());
let counter = 0;

/**
 * Now in ms since the epoch by the wall clock, with a sub-millisecond part for the name's
 * microseconds. Not performance.timeOrigin + performance.now(): that runs on the monotonic
 * clock from the process's start, and drifts from the wall clock whenever the system clock is
 * stepped or slewed (seconds within minutes on a virtual machine), while receipt times drive
 * retention and must be the wall clock's.
 */
export function wallClockMs(): number {
  return Date.now() + (performance.now() % 1);
}

/**
 * `SECONDS.M<usec>P<pid>Q<counter>R<random hex>.<hostname>` (maildir(5) "modern" form).
 * The per-process counter alone makes names unique within this process; pid, time and
 * 64 random bits make them unique across processes and restarts.
 */
export function uniqueName(nowMs: number = wallClockMs()): string {
  const seconds = Math.floor(nowMs / 1000);
  const usec = Math.floor((nowMs - seconds * 1000) * 1000);
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER;
  return `${seconds}.M${usec}P${process.pid}Q${counter}R${randomBytes(8).toString('hex')}.${HOST}`;
}

/** The writer of a name made by uniqueName (any kzymy process): its pid and host, or null for another form. */
export function writerOf(name: string): { pid: number; host: string } | null {
  const m = /^\d+\.M\d+P(\d+)Q\d+R[0-9a-f]+\.([^,:/]+)/.exec(name);
  return m ? { pid: Number(m[1]), host: m[2]! } : null;
}

/** The name a delivered file gets in new/: the unique name plus `,S=<size>`. */
export function nameWithSize(unique: string, size: number): string {
  return `${unique},S=${size}`;
}

/** The part before any `:2,FLAGS` info; stays the same when a MUA moves new/ -> cur/. */
export function baseOf(id: string): string {
  const colon = id.indexOf(':');
  return colon === -1 ? id : id.slice(0, colon);
}

/** The `,S=<size>` field of a name, or null when it has none. */
export function sizeFromName(id: string): number | null {
  const m = /,S=(\d{1,15})(?=[,]|$)/.exec(baseOf(id));
  return m ? Number(m[1]) : null;
}

/**
 * Receipt time in ms from the name's leading `SECONDS.` (and `M<usec>` when present),
 * or null when the name does not start that way (then the caller uses the mtime).
 */
export function timeFromName(id: string): number | null {
  const m = /^(\d{1,11})\.(?:M(\d{1,6})(?=[A-Z.]))?/.exec(id);
  if (!m) return null;
  return Number(m[1]) * 1000 + (m[2] ? Math.floor(Number(m[2]) / 1000) : 0);
}
