// snapshot.json: the lowdb document holding the registry as of the start of journal N
// ({ version, generation, users }, one user a line). Its adapter writes like a mail server
// must (temporary file, fsync, rename, fsync of the folder) and in pieces, yielding
// between them, so that a 100,000-user snapshot never stalls the event loop.
import { Low, type Adapter } from 'lowdb';
import { open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as yieldNow } from 'node:timers/promises';
import type { User } from './types.js';
import { damaged, parseJson, readIfExists, writeRegistryFile } from './files.js';

export interface Snapshot {
  version: 2;
  generation: number;
  users: User[];
}

/** The journal that follows the snapshot of generation `gen`. */
export const journalName = (gen: number) => `journal.${gen}`;

const PIECE = 256 * 1024;

/** The text of snapshot.json in pieces of about PIECE characters: the header on lines of its own, one user a line. */
export function* snapshotPieces(data: Snapshot): Generator<string> {
  let piece = `{\n"version": ${data.version},\n"generation": ${data.generation},\n"users": [`;
  for (let i = 0; i < data.users.length; i++) {
    piece += `${i ? ',' : ''}\n${JSON.stringify(data.users[i])}`;
    if (piece.length >= PIECE) {
      yield piece;
      piece = '';
    }
  }
  yield piece + '\n]\n}\n';
}

/** lowdb adapter for snapshot.json; `bytes` is its size as last read or written. */
class SnapshotFile implements Adapter<Snapshot> {
  bytes = 0;
  constructor(readonly file: string) {}

  async read(): Promise<Snapshot | null> {
    const text = await readIfExists(this.file);
    if (text === null) return null;
    this.bytes = Buffer.byteLength(text);
    const d = parseJson(this.file, text) as Partial<Snapshot> | null;
    if (!d || d.version !== 2 || !Number.isSafeInteger(d.generation) || !Array.isArray(d.users)) {
      throw damaged(this.file, 'is not a kzymy registry snapshot');
    }
    return d as Snapshot;
  }

  async write(data: Snapshot): Promise<void> {
    let bytes = 0;
    await writeRegistryFile(this.file, async (fh) => {
      for (const piece of snapshotPieces(data)) {
        bytes += Buffer.byteLength(piece);
        await fh.write(piece);
        await yieldNow();
      }
    });
    this.bytes = bytes;
  }
}

/** Writes the snapshot.json of a registry folder being made. */
export async function writeSnapshot(file: string, generation: number, users: User[]): Promise<void> {
  await new Low<Snapshot>(new SnapshotFile(file), { version: 2, generation, users }).write();
}

/** The snapshot.json of the registry folder `dir`. */
export class SnapshotStore {
  readonly file: string;
  private readonly adapter: SnapshotFile;
  private readonly doc: Low<Snapshot>;

  constructor(readonly dir: string) {
    this.file = path.join(dir, 'snapshot.json');
    this.adapter = new SnapshotFile(this.file);
    this.doc = new Low<Snapshot>(this.adapter, { version: 2, generation: 0, users: [] });
  }

  /** The size of snapshot.json as last read or written, in bytes. */
  get bytes(): number {
    return this.adapter.bytes;
  }

  /** Reads snapshot.json; a folder without one is damaged. */
  async read(): Promise<Snapshot> {
    this.doc.data = { version: 2, generation: 0, users: [] };
    await this.doc.read();
    if (this.doc.data.generation === 0) {
      const names = await readdir(this.dir);
      if (names.some((n) => n.startsWith('journal.'))) throw damaged(this.file, 'is missing while journals exist');
      throw damaged(this.file, 'is missing');
    }
    return this.doc.data;
  }

  async write(generation: number, users: User[]): Promise<void> {
    this.doc.data = { version: 2, generation, users };
    await this.doc.write();
  }

  /** The generation of snapshot.json, from its first line alone (as written here); 0 if there is none. */
  async generation(): Promise<number> {
    const fh = await open(this.file, 'r').catch(() => null);
    if (!fh) return 0;
    try {
      const head = Buffer.alloc(128);
      const { bytesRead } = await fh.read(head, 0, head.length, 0);
      const m = /^\{\n"version": 2,\n"generation": (\d+),/.exec(head.toString('utf8', 0, bytesRead));
      if (m) return Number(m[1]);
    } finally {
      await fh.close();
    }
    return (await new SnapshotFile(this.file).read())?.generation ?? 0;
  }
}
