import { expect } from 'chai';
import { Readable } from 'node:stream';
import { fanOut } from '../../src/smtp/fanout.js';

async function collect(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

describe('smtp fan-out of one plaintext stream to several encryptors', () => {
  it('gives every branch all bytes, reading the source no faster than the slowest branch', async () => {
    let produced = 0;
    async function* source() {
      for (let i = 0; i < 64; i++) {
        produced++;
        yield Buffer.alloc(64 * 1024, i);
      }
    }
    const [a, b] = fanOut(source(), 2, 64 * 1024);
    const fast = collect(a!);
    // b is not read yet: the source must stall within a few chunks.
    await new Promise((r) => setTimeout(r, 50));
    expect(produced).to.be.below(8);
    const [x, y] = await Promise.all([fast, collect(b!)]);
    expect(x.length).to.equal(64 * 64 * 1024);
    expect(Buffer.compare(x, y)).to.equal(0);
  });

  it('errors every branch when the source fails', async () => {
    async function* source() {
      yield Buffer.from('a');
      throw new Error('boom');
    }
    const outs = fanOut(source(), 3);
    for (const o of outs) {
      let err: Error | null = null;
      try {
        await collect(o);
      } catch (e) {
        err = e as Error;
      }
      expect(err?.message).to.equal('boom');
    }
  });
});
