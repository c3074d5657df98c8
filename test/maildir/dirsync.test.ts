// Group commit of directory fsyncs (src/maildir/dirsync.ts), on real folders.
import { expect } from 'chai';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { DirSyncer } from '../../src/maildir/dirsync.js';
import { tempDir } from '../helpers/env.js';

describe('DirSyncer', () => {
  it('settles every caller, also when many arrive during a running fsync', async () => {
    const { dir, cleanup } = await tempDir('kzymy-dirsync-');
    try {
      const syncer = new DirSyncer(dir);
      await Promise.all(Array.from({ length: 500 }, () => syncer.sync()));
      await syncer.sync();
    } finally {
      await cleanup();
    }
  });

  it('rejects while the folder is missing and works again once it is back', async () => {
    const { dir, cleanup } = await tempDir('kzymy-dirsync-');
    try {
      const target = path.join(dir, 'new');
      const syncer = new DirSyncer(target);
      const results = await Promise.allSettled([syncer.sync(), syncer.sync(), syncer.sync()]);
      expect(results.map((r) => r.status)).to.deep.equal(['rejected', 'rejected', 'rejected']);
      await mkdir(target);
      await syncer.sync();
      await rm(target, { recursive: true });
    } finally {
      await cleanup();
    }
  });
});
