// The spool of a large message, seen as by someone who reads the disk while it is in use: the
// file has no name, and its bytes are not the message.
import { expect } from 'chai';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { Spool } from '../../src/smtp/spool.js';
import { tempDir } from '../helpers/env.js';
import { marker, rawMessage } from '../helpers/mail.js';
import { collect } from '../helpers/streams.js';

/** The open descriptors of this process that point at a deleted file under `dir`. */
async function deletedFilesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target.startsWith(dir + '/') && target.endsWith(' (deleted)')) out.push(`/proc/self/fd/${fd}`);
  }
  return out;
}

describe('smtp spool: a large message on disk, never as plaintext', function () {
  it('has no name, holds no plaintext byte run, reads back exactly (twice at once), and is gone once closed', async function () {
    const dir = await tempDir('kzymy-spool-');
    try {
      const mark = marker();
      const msg = rawMessage(mark, { bodyBytes: 300_000 });
      const spool = await Spool.create(dir.dir);
      for (let o = 0; o < msg.length; o += 10_000) await spool.write(msg.subarray(o, o + 10_000));
      expect(await readdir(dir.dir), 'no name in the folder').to.deep.equal([]);
      const open = await deletedFilesUnder(dir.dir);
      expect(open).to.have.length(1);
      const onDisk = await readFile(open[0]!);
      expect(onDisk.length).to.equal(msg.length);
      expect(onDisk.includes(Buffer.from(mark)), 'the marker').to.equal(false);
      expect(onDisk.includes(Buffer.from('x'.repeat(76))), 'the body lines').to.equal(false);
      const [a, b] = await Promise.all([collect(spool.read()), collect(spool.read(4096))]);
      expect(a.equals(msg)).to.equal(true);
      expect(b.equals(msg)).to.equal(true);
      await spool.close();
      expect(await deletedFilesUnder(dir.dir)).to.deep.equal([]);
    } finally {
      await dir.cleanup();
    }
  });
});
