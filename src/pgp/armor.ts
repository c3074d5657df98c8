// ASCII armor of binary OpenPGP messages, whole or chunk by chunk, with its CRC-24 footer.
// Node's crypto and buffers only (no openpgp): the streamed encryption armors every chunk here.

/**
 * ASCII armor (RFC 9580 section 6.2) of a binary OpenPGP message, written here rather than by
 * openpgp: openpgp's armor concatenates every chunk with the previous remainder and cuts the
 * base64 text into lines through several stream stages, which made the armored stream 2.3x slower
 * than the binary one. Here each chunk is one native base64 call, cut into 64-character lines.
 * The CRC-24 footer is kept although RFC 9580 makes it optional: GnuPG 2.2 reads the END line as
 * base64 when the last line has no "=" padding and no CRC line follows.
 */
const ARMOR_BEGIN = Buffer.from('-----BEGIN PGP MESSAGE-----\n\n', 'ascii');
const ARMOR_END = Buffer.from('-----END PGP MESSAGE-----\n', 'ascii');
/** Bytes per armor line: 48 bytes are 64 base64 characters. */
const LINE_BYTES = 48;
const LINE_CHARS = 64;

function asBuffer(c: Uint8Array): Buffer {
  return Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
}

/**
 * CRC-24 of RFC 9580 section 6.1.1, byte-reflected and eight bytes at a time ("slicing by 8":
 * eight tables, two 32-bit words a step), as openpgp computes it, whose armor() it must match.
 * Hand-written: Node has no CRC-24 and openpgp does not export its own.
 */
const CRC_TABLES = Array.from({ length: 8 }, () => new Int32Array(256));
{
  const t0 = CRC_TABLES[0]!;
  for (let i = 0; i < 256; i++) {
    let crc = i << 16;
    for (let j = 0; j < 8; j++) crc = (crc << 1) ^ ((crc & 0x800000) !== 0 ? 0x864cfb : 0);
    t0[i] = ((crc & 0xff0000) >> 16) | (crc & 0x00ff00) | ((crc & 0x0000ff) << 16);
  }
  for (let k = 1; k < 8; k++) {
    const prev = CRC_TABLES[k - 1]!;
    const t = CRC_TABLES[k]!;
    for (let i = 0; i < 256; i++) t[i] = (prev[i]! >> 8) ^ t0[prev[i]! & 0xff]!;
  }
}
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export class Crc24 {
  private crc = 0xce04b7;
  update(b: Uint8Array): void {
    const [t0, t1, t2, t3, t4, t5, t6, t7] = CRC_TABLES as [Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array];
    let crc = this.crc;
    let i = 0;
    const len = b.length;
    if (LITTLE_ENDIAN) {
      for (; i < len && ((b.byteOffset + i) & 3) !== 0; i++) crc = (crc >> 8) ^ t0[(crc ^ b[i]!) & 0xff]!;
      const pairs = (len - i) >> 3;
      const w = pairs > 0 ? new Int32Array(b.buffer, b.byteOffset + i, pairs * 2) : new Int32Array(0);
      for (let k = 0; k < pairs * 2; k += 2) {
        const a = crc ^ w[k]!;
        const c = w[k + 1]!;
        crc =
          t7[a & 0xff]! ^ t6[(a >>> 8) & 0xff]! ^ t5[(a >>> 16) & 0xff]! ^ t4[a >>> 24]! ^
          t3[c & 0xff]! ^ t2[(c >>> 8) & 0xff]! ^ t1[(c >>> 16) & 0xff]! ^ t0[c >>> 24]!;
      }
      i += pairs * 8;
    }
    for (; i < len; i++) crc = (crc >> 8) ^ t0[(crc ^ b[i]!) & 0xff]!;
    this.crc = crc;
  }
  /** The armor's checksum line: "=" and the CRC's base64, LF. */
  line(): Buffer {
    const c = this.crc;
    return Buffer.from(`=${Buffer.from([c & 0xff, (c >> 8) & 0xff, (c >> 16) & 0xff]).toString('base64')}\n`, 'ascii');
  }
}

/** Base64 text of a chunk, as bytes at a 4-aligned offset (reused: armorLines copies out of it). */
let scratch = new Int32Array(0);

/** `bytes` as armor lines (LF after each); every line but the last of a message holds LINE_BYTES. */
export function armorLines(bytes: Uint8Array): Buffer {
  // One native base64 call for the whole chunk; the text is then spread into 65-byte lines
  // (64 characters and LF) four lines at a time: 256 bytes in are 64 whole 32-bit words and
  // 260 bytes out are 65, each made of two neighbouring input words shifted by the line's index.
  // Hand-written because Node has no line-wrapping base64 encoder; one native call per line
  // (toString('base64', start, end)) or substrings joined cost 3 to 5 times more.
  const text = asBuffer(bytes).toString('base64');
  const fullLines = Math.floor(text.length / LINE_CHARS);
  const restChars = text.length - fullLines * LINE_CHARS;
  const out = Buffer.allocUnsafeSlow(fullLines * (LINE_CHARS + 1) + (restChars ? restChars + 1 : 0));
  const groups = LITTLE_ENDIAN ? Math.floor(fullLines / 4) : 0;
  if (scratch.length * 4 < text.length) scratch = new Int32Array(Math.ceil(text.length / 4));
  const src = Buffer.from(scratch.buffer, 0, text.length);
  src.write(text, 0, 'latin1');
  if (groups > 0) {
    const s32 = scratch;
    const o32 = new Int32Array(out.buffer, out.byteOffset, groups * 65);
    const NL = 0x0a;
    for (let g = 0, si = 0, oi = 0; g < groups; g++, si += 64, oi += 65) {
      for (let k = 0; k < 16; k++) o32[oi + k] = s32[si + k]!;
      o32[oi + 16] = NL | (s32[si + 16]! << 8);
      for (let k = 17; k < 32; k++) o32[oi + k] = (s32[si + k]! << 8) | (s32[si + k - 1]! >>> 24);
      o32[oi + 32] = (s32[si + 31]! >>> 24) | (NL << 8) | ((s32[si + 32]! & 0xffff) << 16);
      for (let k = 33; k < 48; k++) o32[oi + k] = (s32[si + k]! << 16) | (s32[si + k - 1]! >>> 16);
      o32[oi + 48] = (s32[si + 47]! >>> 16) | (NL << 16) | ((s32[si + 48]! & 0xff) << 24);
      for (let k = 49; k < 64; k++) o32[oi + k] = (s32[si + k]! << 24) | (s32[si + k - 1]! >>> 8);
      o32[oi + 64] = (s32[si + 63]! >>> 8) | (NL << 24);
    }
  }
  let o = groups * 4 * (LINE_CHARS + 1);
  for (let i = groups * 4 * LINE_CHARS; i < text.length; i += LINE_CHARS) {
    const end = Math.min(text.length, i + LINE_CHARS);
    o += src.copy(out, o, i, end);
    out[o++] = 0x0a;
  }
  return out;
}

/** A whole binary OpenPGP message as armor. */
export function armorMessage(binary: Uint8Array): Buffer {
  const crc = new Crc24();
  crc.update(binary);
  return Buffer.concat([ARMOR_BEGIN, armorLines(binary), crc.line(), ARMOR_END]);
}

/** A binary OpenPGP message, chunk by chunk, as armor: one output chunk per input chunk. */
export async function* armorStream(binary: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  yield ARMOR_BEGIN;
  const crc = new Crc24();
  // Fewer than LINE_BYTES bytes left over from the previous chunk (a copy: they are few).
  let carry = Buffer.alloc(0);
  for await (const chunk of binary) {
    let b = asBuffer(chunk);
    crc.update(b);
    let first: Buffer | null = null;
    if (carry.length) {
      const take = Math.min(LINE_BYTES - carry.length, b.length);
      carry = Buffer.concat([carry, b.subarray(0, take)]);
      b = b.subarray(take);
      if (carry.length < LINE_BYTES) continue;
      first = armorLines(carry);
    }
    const whole = b.length - (b.length % LINE_BYTES);
    const body = whole ? armorLines(b.subarray(0, whole)) : null;
    if (first && body) yield Buffer.concat([first, body], first.length + body.length);
    else if (first ?? body) yield (first ?? body)!;
    carry = Buffer.from(b.subarray(whole));
  }
  if (carry.length) yield armorLines(carry);
  yield crc.line();
  yield ARMOR_END;
}
