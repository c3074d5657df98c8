// Local delivery: into a Maildir per qmail's maildir(5), or to an MDA command
// like getmail's MDA_external; and the --decrypt step that opens a PGP/MIME file.
import { spawn } from 'node:child_process';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { fsyncPath } from '../maildir/index.js';
import { nameWithSize, uniqueName } from '../maildir/names.js';
import { restoreBuffer } from '../pgp/protected.js';
import { ClientError, DeliveryError, EXIT_TEMPFAIL } from './errors.js';
import type { Gnupg } from './gnupg.js';

/** Exit status an MDA uses for "try again later" (sysexits EX_TEMPFAIL). */
export const MDA_TEMPFAIL = 75;

export interface DeliveryInfo {
  /** The server's message id. */
  id: string;
  /** Return-Path and Delivered-To of the decrypted message, when known. */
  sender?: string;
  recipient?: string;
}

export interface Destination {
  /** Delivers one message; resolves once it is durable (Maildir) or accepted (MDA). */
  deliver(message: Buffer, info: DeliveryInfo): Promise<void>;
  describe(): string;
}


/** DIR is the Maildir itself: DIR/{tmp,new,cur}, folders 0700, files 0600. */
export class MaildirDestination implements Destination {
  private ready = false;

  constructor(readonly dir: string) {}

  describe(): string {
    return this.dir;
  }

  private async prepare(): Promise<void> {
    if (this.ready) return;
    try {
      const made = await mkdir(this.dir, { recursive: true, mode: 0o700 });
      for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(this.dir, sub), { recursive: true, mode: 0o700 });
      if (made) {
        await fsyncPath(this.dir);
        await fsyncPath(path.dirname(path.resolve(this.dir)));
      }
    } catch (err) {
      throw new ClientError(`Cannot create the Maildir ${this.dir}: ${reason(err)}.`);
    }
    this.ready = true;
  }

  /** tmp/NAME (exclusive, 0600), fsync, rename to new/NAME,S=SIZE, fsync new/. */
  async deliver(message: Buffer): Promise<void> {
    await this.prepare();
    const unique = uniqueName();
    const tmp = path.join(this.dir, 'tmp', unique);
    const dest = path.join(this.dir, 'new', nameWithSize(unique, message.length));
    let written = false;
    try {
      const fh = await open(tmp, 'wx', 0o600);
      written = true;
      try {
        await fh.writeFile(message);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, dest);
      written = false;
      await fsyncPath(path.join(this.dir, 'new'));
    } catch (err) {
      if (written) await unlink(tmp).catch(() => undefined);
      const code = (err as NodeJS.ErrnoException).code;
      const temporary = code === 'ENOSPC' || code === 'EDQUOT' || code === 'EIO';
      throw new DeliveryError(`Cannot write to the Maildir ${this.dir}: ${reason(err)}.`, temporary ? EXIT_TEMPFAIL : 1);
    }
  }
}

/**
 * `/bin/sh -c COMMAND` with the message on stdin: exit 0 and nothing on stderr means
 * delivered; exit 75 means try again later; anything else is not delivered.
 */
export class MdaDestination implements Destination {
  constructor(readonly command: string) {}

  describe(): string {
    return `the MDA "${this.command}"`;
  }

  deliver(message: Buffer, info: DeliveryInfo): Promise<void> {
    const env: NodeJS.ProcessEnv = { ...process.env, KZYMY_MESSAGE_ID: info.id };
    if (info.sender !== undefined) env.SENDER = info.sender;
    if (info.recipient !== undefined) env.RECIPIENT = info.recipient;
    return new Promise((resolve, reject) => {
      const child = spawn('/bin/sh', ['-c', this.command], { stdio: ['pipe', 'ignore', 'pipe'], env });
      const err: Buffer[] = [];
      child.stderr.on('data', (c: Buffer) => err.push(c));
      child.stdin.on('error', () => {}); // an MDA that stops reading early: its exit status tells
      child.on('error', (e) => reject(new DeliveryError(`Cannot run the MDA: ${e.message}.`)));
      child.on('close', (code, signal) => {
        const stderr = Buffer.concat(err).toString('utf8').trim();
        const said = stderr ? `: ${firstLine(stderr)}` : '';
        if (code === 0 && !stderr) resolve();
        else if (code === 0) reject(new DeliveryError(`The MDA exited 0 but wrote to stderr, so the message counts as not delivered${said}.`));
        else if (code === MDA_TEMPFAIL) reject(new DeliveryError(`The MDA asked to try again later (exit 75)${said}.`, EXIT_TEMPFAIL));
        else if (signal) reject(new DeliveryError(`The MDA was killed by ${signal}; the message was not delivered.`));
        else reject(new DeliveryError(`The MDA exited ${code}; the message was not delivered${said}.`));
      });
      child.stdin.end(message);
    });
  }
}

function firstLine(s: string): string {
  const line = s.split('\n')[0]!.trim();
  return line.length > 200 ? line.slice(0, 200) + '...' : line;
}

function reason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e.code) {
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ENOSPC':
      return 'the disk is full';
    case 'EDQUOT':
      return 'the disk quota is exhausted';
    case 'ENOTDIR':
      return 'a part of the path is not a folder';
    case 'EROFS':
      return 'the file system is read-only';
    default:
      return e.code ?? e.message ?? String(err);
  }
}

/** The ASCII-armored OpenPGP message inside a PGP/MIME file (RFC 3156). */
export function armoredPart(file: Buffer): Buffer | null {
  const text = file.toString('latin1');
  const m = /-----BEGIN PGP MESSAGE-----\r?\n[\s\S]*?\r?\n-----END PGP MESSAGE-----/.exec(text);
  return m ? Buffer.from(m[0] + '\n', 'latin1') : null;
}

/** Opens a PGP/MIME file with gpg: the original message with its delivery headers. */
export async function decryptPgpMime(gpg: Gnupg, file: Buffer, id: string): Promise<Buffer> {
  const armored = armoredPart(file);
  if (!armored) throw new DeliveryError(`Message ${id} is not a PGP/MIME message; it was not decrypted.`);
  try {
    // The protected-headers wrapper comes off again: the plaintext exactly as it arrived.
    return restoreBuffer(await gpg.decrypt(armored, `message ${id}`));
  } catch (err) {
    if (err instanceof ClientError && !(err instanceof DeliveryError)) throw new DeliveryError(err.message, err.exitCode);
    throw err;
  }
}

/** Return-Path and Delivered-To from the top of a decrypted message (for the MDA's env). */
export function envelopeOf(message: Buffer): { sender?: string; recipient?: string } {
  const head = message.subarray(0, 8192).toString('latin1');
  const end = head.search(/\r?\n\r?\n/);
  const header = end >= 0 ? head.slice(0, end) : head;
  const sender = /^Return-Path:[ \t]*<?([^>\r\n]*)>?/im.exec(header)?.[1];
  const recipient = /^Delivered-To:[ \t]*<?([^>\r\n]*)>?/im.exec(header)?.[1];
  return { sender: sender?.trim(), recipient: recipient?.trim() };
}
