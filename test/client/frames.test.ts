// The batch download's frames as a hostile or broken server might send them: readFrames
// hands on a message only when it came whole, under the id asked for, at the size listed.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { readFrames, type Framed, type Wanted } from '../../src/client/frames.js';
import { chunked } from '../helpers/streams.js';

class Hostile extends Error {}
class Broke extends Error {}
const fail = { hostile: (why: string) => new Hostile(why), broke: () => new Broke('cut') };

async function read(bytes: Buffer, wanted: Wanted[], sizes?: number[]): Promise<{ got: Framed[]; err: unknown }> {
  const got: Framed[] = [];
  try {
    for await (const f of readFrames(chunked(bytes, sizes ?? [bytes.length || 1]), wanted, fail)) got.push(f);
    return { got, err: null };
  } catch (err) {
    return { got, err };
  }
}

function frame(id: string, body: Buffer | null, size = body?.length): Buffer {
  return body === null ? Buffer.from(`${id} -\n`) : Buffer.concat([Buffer.from(`${id} ${size}\n`), body]);
}

describe('client: batch download frames', () => {
  const a = randomBytes(5000);
  const b = randomBytes(1);
  const empty = Buffer.alloc(0);
  const wanted = [
    { id: '1.M1P1Q1.h,S=5000', listed: 5000 },
    { id: 'gone', listed: 7 },
    { id: '2.M2P2Q2.h,S=1', listed: 1 },
    { id: '3.M3P3Q3.h,S=0', listed: 0 },
  ];
  const good = Buffer.concat([frame(wanted[0]!.id, a), frame('gone', null), frame(wanted[2]!.id, b), frame(wanted[3]!.id, empty)]);

  it('gives each message whole, in order, whatever the chunking', async () => {
    for (let round = 0; round < 50; round++) {
      const sizes = Array.from({ length: 20 }, () => 1 + Math.floor(Math.random() * 700));
      const { got, err } = await read(good, wanted, sizes);
      expect(err).to.equal(null);
      expect(got.map((f) => f.id)).to.deep.equal(wanted.map((w) => w.id));
      expect(got[0]!.bytes!.equals(a)).to.equal(true);
      expect(got[1]!.bytes).to.equal(null);
      expect(got[2]!.bytes!.equals(b)).to.equal(true);
      expect(got[3]!.bytes!.length).to.equal(0);
    }
  });

  it('refuses another id, another order, another size, or a head that is not "ID SIZE", before handing on that message', async () => {
    const cases: Array<[Buffer, RegExp, number]> = [
      [Buffer.concat([frame('other', a)]), /other messages than those asked for/, 0],
      [Buffer.concat([frame(wanted[0]!.id, a), frame(wanted[2]!.id, b)]), /other messages than those asked for/, 1],
      [frame(wanted[0]!.id, randomBytes(6000)), /sent a message of 6000 bytes that it listed as 5000 bytes/, 0],
      [Buffer.concat([Buffer.from(`${wanted[0]!.id} 5e3\n`), a]), /not "ID SIZE"/, 0],
      [Buffer.concat([Buffer.from(`${wanted[0]!.id}\n`), a]), /other messages than those asked for/, 0],
      [Buffer.alloc(400, 'x'), /not "ID SIZE"/, 0],
      [Buffer.concat([Buffer.alloc(400, 'x'), Buffer.from('\n')]), /not "ID SIZE"/, 0],
    ];
    for (const [bytes, why, before] of cases) {
      const { got, err } = await read(bytes, wanted);
      expect(err, String(why)).to.be.instanceOf(Hostile);
      expect((err as Error).message).to.match(why);
      expect(got, `messages handed on before the bad frame (${String(why)})`).to.have.length(before);
    }
  });

  it('refuses bytes after the last frame', async () => {
    const { got, err } = await read(Buffer.concat([good, Buffer.from('x')]), wanted);
    expect(err).to.be.instanceOf(Hostile);
    expect((err as Error).message).to.match(/more than the messages asked for/);
    expect(got).to.have.length(4);
  });

  it('a transfer cut anywhere hands on only the messages that came whole', async () => {
    for (let cut = 0; cut < good.length; cut += 97) {
      const { got, err } = await read(good.subarray(0, cut), wanted);
      expect(err, `cut at ${cut}`).to.be.instanceOf(Broke);
      for (const f of got) {
        const w = wanted.find((x) => x.id === f.id)!;
        if (f.bytes !== null) expect(f.bytes.length).to.equal(w.listed);
      }
      expect(got.length).to.be.below(wanted.length);
    }
  });
});
