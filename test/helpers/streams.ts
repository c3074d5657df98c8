// Byte streams for tests: everything a stream (or async iterable) gives, and a buffer cut into chunks.

/** Every chunk of `it`, concatenated. */
export async function collect(it: AsyncIterable<Uint8Array | string>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

/** `b` in chunks of the sizes given, repeated in turn. */
export async function* chunked(b: Buffer, sizes: number[]): AsyncGenerator<Buffer> {
  let o = 0;
  for (let i = 0; o < b.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield b.subarray(o, o + n);
    o += n;
  }
}
