// writeAhead: several positioned writes in flight, gathered into writev, against real files.
// The bytes land exactly, the hooks see every chunk before it is written and every write once
// it has landed, no more than the limit is held at once, and a failure (a write the file
// refuses, a hook that throws, a source that breaks) ends it only after every write in flight.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { open, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { WRITE_AHEAD_BYTES, writeAhead } from '../../src/maildir/write-ahead.js';
import { tempDir } from '../helpers/env.js';

describe('maildir: writeAhead', () => {
  let dir: { dir: string; cleanup: () => Promise<void> };
  beforeEach(async () => {
    dir = await tempDir('kzymy-write-ahead-');
  });
  afterEach(async () => {
    await dir.cleanup();
  });

  function pieces(total: number): Buffer[] {
    const out: Buffer[] = [];
    for (let at = 0; at < total; ) {
      const n = Math.min(total - at, 1 + Math.floor(Math.random() * 200_000));
      out.push(randomBytes(n));
      at += n;
    }
    return out;
  }

  it('writes every byte in place, whatever the chunk sizes, holding at most the limit', async () => {
    const parts = pieces(6 * 1024 * 1024 + 17);
    const file = path.join(dir.dir, 'out');
    const fh = await open(file, 'wx', 0o600);
    let announced = 0;
    let landed = 0;
    let most = 0;
    const size = await writeAhead(fh, (async function* () { yield* parts; })(), {
      beforeWrite: (n) => {
        announced += n;
        most = Math.max(most, announced - landed);
      },
      afterWrite: (n) => {
        landed += n;
      },
    });
    await fh.close();
    const whole = Buffer.concat(parts);
    expect(size).to.equal(whole.length);
    expect(announced).to.equal(whole.length);
    expect(landed, 'every write reported once it landed').to.equal(whole.length);
    expect(most, 'bytes announced and not landed, at most').to.be.at.most(WRITE_AHEAD_BYTES + 200_000);
    expect((await readFile(file)).equals(whole)).to.equal(true);
  });

  it('a write the file refuses (opened read-only: EBADF) ends it, with no write left in flight and none reported', async () => {
    const file = path.join(dir.dir, 'ro');
    await writeFile(file, '');
    const fh = await open(file, 'r');
    let landed = 0;
    let err: unknown = null;
    await writeAhead(fh, (async function* () { yield* pieces(3 * 1024 * 1024); })(), { afterWrite: (n) => (landed += n) }).catch((e: unknown) => (err = e));
    expect((err as NodeJS.ErrnoException)?.code).to.equal('EBADF');
    expect(landed).to.equal(0);
    await fh.close(); // nothing is still writing into it
  });

  it('a hook or a source that throws ends it after the writes in flight have ended', async () => {
    for (const where of ['hook', 'source'] as const) {
      const file = path.join(dir.dir, `stop-${where}`);
      const fh = await open(file, 'wx', 0o600);
      let announced = 0;
      let landed = 0;
      const source = (async function* () {
        for (const p of pieces(4 * 1024 * 1024)) {
          if (where === 'source' && announced > 2 * 1024 * 1024) throw new Error('source broke');
          yield p;
        }
      })();
      const err = await writeAhead(fh, source, {
        beforeWrite: (n) => {
          if (where === 'hook' && announced > 2 * 1024 * 1024) throw new Error('refused');
          announced += n;
        },
        afterWrite: (n) => (landed += n),
      }).then(
        () => null,
        (e: unknown) => e as Error,
      );
      expect(err?.message).to.equal(where === 'hook' ? 'refused' : 'source broke');
      // Every announced byte was either written and reported, or is still part of the last, unissued batch.
      expect(landed).to.be.at.most(announced);
      const settled = landed;
      await new Promise((r) => setTimeout(r, 50));
      expect(landed, 'no write lands after the end').to.equal(settled);
      await fh.close();
    }
  });
});
