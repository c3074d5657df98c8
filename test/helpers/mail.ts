// Test mail: raw RFC 5322 messages with a unique marker, and reading what landed.
import type { DeliveryInfo } from '../../src/pgp/index.js';
import { readdir, readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';

export function marker(): string {
  return `KZYMYMARK${randomBytes(8).toString('hex').toUpperCase()}`;
}

/** A CRLF message with the marker in Subject and body, 8-bit bytes included. */
export function rawMessage(mark: string, opts: { to?: string; bodyBytes?: number; from?: string } = {}): Buffer {
  const head = [
    `From: Sender <${opts.from ?? 'sender@example.org'}>`,
    `To: ${opts.to ?? 'someone@example.net'}`,
    `Subject: Secret subject ${mark}`,
    `Date: ${new Date().toUTCString()}`,
    `Message-ID: <${randomBytes(6).toString('hex')}@example.org>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
  ].join('\r\n');
  let body = `Hello, this is the body ${mark}.\r\nGrüße, ünïcödé — 8 bit.\r\n.leading dot line\r\n`;
  if (opts.bodyBytes) {
    const line = 'x'.repeat(76) + '\r\n';
    body += line.repeat(Math.ceil(opts.bodyBytes / line.length));
  }
  return Buffer.from(head + '\r\n\r\n' + body, 'utf8');
}

/** Files in maildirRoot/user/new (full paths). */
export async function newFiles(maildirRoot: string, user: string): Promise<string[]> {
  const dir = path.join(maildirRoot, user, 'new');
  try {
    return (await readdir(dir)).map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

/** Recursively: every path (folders and files) under `dir`, except those `skip` refuses. */
export async function pathsUnder(dir: string, skip: (p: string) => boolean = () => false): Promise<Array<{ path: string; file: boolean }>> {
  const found: Array<{ path: string; file: boolean }> = [];
  async function walk(d: string): Promise<void> {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (skip(p)) continue;
      found.push({ path: p, file: e.isFile() });
      if (e.isDirectory()) await walk(p);
    }
  }
  await walk(dir);
  return found;
}

/** Recursively: the paths of files under `dir` that contain `needle`. */
export async function filesContaining(dir: string, needle: string, skip: (p: string) => boolean = () => false): Promise<string[]> {
  const n = Buffer.from(needle);
  const hits: string[] = [];
  for (const { path: p, file } of await pathsUnder(dir, skip)) {
    if (!file) continue;
    try {
      if ((await readFile(p)).includes(n)) hits.push(p);
    } catch {
      // vanished or unreadable
    }
  }
  return hits;
}

/** The envelope of a sample delivery, for the tests of what is encrypted. */
export const SAMPLE_DELIVERY: DeliveryInfo = {
  mailFrom: 'bounce@sender.example',
  rcptTo: 'shop@abc123.kzymy.localhost',
  heloName: 'mx.sender.example',
  remoteAddress: '192.0.2.7',
  receivedBy: 'kzymy.localhost',
  id: 'A1b2C3',
  date: new Date('2026-03-04T05:06:07Z'),
  tls: true,
};
