// Reading an uploaded key without trusting it: the armor lines, the packet framing and the
// number of subkeys, user IDs and signatures are checked before and after openpgp parses it.
// Only KeyErrors come out; openpgp's own messages (which may quote the input) never do.
import { readKeys, unarmor } from 'openpgp';
import type { Key } from 'openpgp';
import { refuse } from './key-refusals.js';
import { MAX_KEY_BYTES, MAX_SIGNATURES, MAX_SUBKEYS, MAX_USER_IDS, PGP_CONFIG } from './settings.js';

const ARMOR_BEGIN = /-----BEGIN PGP ([A-Z ,/0-9]+)-----/g;

/** Parses without trusting the input; only KeyErrors come out. */
export async function parse(input: string | Uint8Array): Promise<Key[]> {
  const size = typeof input === 'string' ? Buffer.byteLength(input, 'utf8') : input.byteLength;
  if (size > MAX_KEY_BYTES) throw refuse('too-large');
  if (size === 0) throw refuse('unparseable');

  // An upload may be armored text in bytes.
  let text: string | null = null;
  if (typeof input === 'string') text = input;
  else {
    const head = Buffer.from(input.subarray(0, 256)).toString('latin1');
    if (/^\s*-----BEGIN PGP /.test(head) || head.includes('-----BEGIN PGP ')) text = Buffer.from(input).toString('utf8');
  }

  if (text !== null) {
    const blocks = [...text.matchAll(ARMOR_BEGIN)].map((m) => m[1]!);
    // Decided on the armor line alone, so that even a secret key openpgp cannot read is named.
    if (blocks.some((b) => b.includes('PRIVATE KEY') || b.includes('SECRET KEY'))) throw refuse('secret');
    if (blocks.length === 0) throw refuse('unparseable');
    if (blocks.length > 1) throw refuse('multiple', { count: blocks.length });
    if (blocks[0] !== 'PUBLIC KEY BLOCK') throw refuse('unparseable');
  }

  let binary: Uint8Array;
  if (text !== null) {
    try {
      const { data } = await unarmor(text, PGP_CONFIG);
      if (!(data instanceof Uint8Array)) throw new Error('streamed');
      binary = data;
    } catch {
      throw refuse('unparseable');
    }
  } else binary = input as Uint8Array;

  // Counted on the packet headers alone, before openpgp parses anything.
  const counted = countPackets(binary);
  if (counted) {
    if (counted.keys > 1) throw refuse('multiple', { count: counted.keys });
    checkBounds(counted);
  }

  let keys: Key[];
  try {
    keys = await readKeys({ binaryKeys: binary, config: PGP_CONFIG });
  } catch {
    // openpgp's message may quote the input: never pass it on.
    throw refuse('unparseable');
  }
  if (keys.some((k) => k.isPrivate())) throw refuse('secret');
  if (keys.length === 0) throw refuse('unparseable');
  if (keys.length > 1) throw refuse('multiple', { count: keys.length });
  // And on what openpgp read, whatever the packet walk made of the input.
  const k = keys[0]!;
  checkBounds({
    keys: 1,
    subkeys: k.subkeys.length,
    userIds: k.users.length,
    signatures:
      ((k as unknown as { directSignatures?: unknown[] }).directSignatures?.length ?? 0) +
      k.revocationSignatures.length +
      k.users.reduce((n, u) => n + u.selfCertifications.length + u.otherCertifications.length + u.revocationSignatures.length, 0) +
      k.subkeys.reduce((n, sk) => n + sk.bindingSignatures.length + sk.revocationSignatures.length, 0),
  });
  return keys;
}

interface PacketCounts {
  keys: number;
  subkeys: number;
  userIds: number;
  signatures: number;
}

function checkBounds(c: PacketCounts): void {
  if (c.subkeys > MAX_SUBKEYS) throw refuse('too-many-packets', { count: c.subkeys, what: 'subkeys', max: MAX_SUBKEYS });
  if (c.userIds > MAX_USER_IDS) throw refuse('too-many-packets', { count: c.userIds, what: 'user IDs', max: MAX_USER_IDS });
  if (c.signatures > MAX_SIGNATURES) throw refuse('too-many-packets', { count: c.signatures, what: 'signatures', max: MAX_SIGNATURES });
}

/**
 * Counts primary keys, subkeys, user IDs (and attributes) and signatures by walking the
 * OpenPGP packet headers (RFC 9580 section 4.2) without parsing any packet body. null when
 * the framing is not that of a transferable key (a partial or indeterminate length, a
 * packet running past the end): openpgp then decides, and the counts are checked again on
 * what it read.
 */
function countPackets(bytes: Uint8Array): PacketCounts | null {
  const c: PacketCounts = { keys: 0, subkeys: 0, userIds: 0, signatures: 0 };
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const head = bytes[i++]!;
    if (!(head & 0x80)) return null;
    let tag: number;
    let len: number;
    if (head & 0x40) {
      tag = head & 0x3f;
      if (i >= n) return null;
      const o = bytes[i++]!;
      if (o < 192) len = o;
      else if (o < 224) {
        if (i >= n) return null;
        len = ((o - 192) << 8) + bytes[i++]! + 192;
      } else if (o === 255) {
        if (i + 4 > n) return null;
        len = ((bytes[i]! << 24) >>> 0) + (bytes[i + 1]! << 16) + (bytes[i + 2]! << 8) + bytes[i + 3]!;
        i += 4;
      } else return null; // a partial body length never frames a key packet
    } else {
      tag = (head >> 2) & 0x0f;
      const type = head & 0x03;
      if (type === 3) return null; // indeterminate length
      const size = type === 0 ? 1 : type === 1 ? 2 : 4;
      if (i + size > n) return null;
      len = 0;
      for (let j = 0; j < size; j++) len = len * 256 + bytes[i++]!;
    }
    i += len;
    if (i > n) return null;
    if (tag === 6 || tag === 5) c.keys++;
    else if (tag === 14 || tag === 7) c.subkeys++;
    else if (tag === 13 || tag === 17) c.userIds++;
    else if (tag === 2) c.signatures++;
  }
  return c;
}
