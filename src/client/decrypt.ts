// The --decrypt step: the armored part of a downloaded PGP/MIME file (RFC 3156) goes to gpg
// as it arrives, and gpg's output is turned back into the original message (the protected
// headers wrapper off, CRLF -> LF unless --crlf), in bounded memory, with no plaintext on disk.
import { restoreOriginal } from '../pgp/protected.js';
import { watch, type Chunks } from './deliver.js';
import { ClientError, DeliveryError } from './errors.js';
import type { Gnupg } from './gnupg.js';

/** The ASCII-armored OpenPGP message inside a PGP/MIME file (RFC 3156). */
export function armoredPart(file: Buffer): Buffer | null {
  const text = file.toString('latin1');
  const m = /-----BEGIN PGP MESSAGE-----\r?\n[\s\S]*?\r?\n-----END PGP MESSAGE-----/.exec(text);
  return m ? Buffer.from(m[0] + '\n', 'latin1') : null;
}

const BEGIN = Buffer.from('-----BEGIN PGP MESSAGE-----');
const END = Buffer.from('-----END PGP MESSAGE-----');
/** A longer line cannot be one of the two marker lines (they may carry trailing blanks). */
const MARKER_LINE_MAX = 1024;

/**
 * armoredPart() on a stream: from the line "-----BEGIN PGP MESSAGE-----" to the line
 * "-----END PGP MESSAGE-----", whatever lies around it (the PGP/MIME header and parts)
 * dropped, in bounded memory (a line is kept only while it may be a marker line).
 * Hand-written: MIME stream parsers (mailsplit, mailparser) would also do it, but hold
 * each part, and this needs only two marker lines.
 */
export async function* armoredStream(file: Chunks, id: string): AsyncGenerator<Buffer> {
  let inside = false;
  let line: Buffer[] = [];
  let lineLength = 0;
  const out: Buffer[] = [];
  /** At the end of a line: true when it was the END line. */
  const endOfLine = (): boolean => {
    const kept = lineLength <= MARKER_LINE_MAX ? Buffer.concat(line) : null;
    line = [];
    lineLength = 0;
    if (!kept) return false;
    const bare = trimEol(kept);
    if (!inside && bare.equals(BEGIN)) {
      inside = true;
      out.push(kept);
      return false;
    }
    return inside && bare.equals(END);
  };
  for await (const chunk of file) {
    let at = 0;
    while (at < chunk.length) {
      const nl = chunk.indexOf(0x0a, at);
      const piece = chunk.subarray(at, nl < 0 ? chunk.length : nl + 1);
      at += piece.length;
      if (inside) out.push(piece);
      lineLength += piece.length;
      if (lineLength <= MARKER_LINE_MAX) line.push(piece);
      else line = [];
      if (nl >= 0 && endOfLine()) {
        yield Buffer.concat(out);
        return; // the rest of the file is not read
      }
    }
    if (out.length) {
      yield Buffer.concat(out);
      out.length = 0;
    }
  }
  if (lineLength > 0) endOfLine();
  if (out.length) yield Buffer.concat(out);
  // An armor without its end line goes to gpg all the same: gpg says what is wrong.
  if (!inside) throw new DeliveryError(`Message ${id} is not a PGP/MIME message; it was not decrypted.`);
}

function trimEol(b: Buffer): Buffer {
  let end = b.length;
  while (end > 0 && (b[end - 1] === 0x0a || b[end - 1] === 0x0d || b[end - 1] === 0x20 || b[end - 1] === 0x09)) end--;
  return b.subarray(0, end);
}

/**
 * CRLF -> LF, as getmail and fetchmail hand mail to Unix tools; a lone CR stays. Streaming:
 * a CR at the end of a chunk waits for the next. Hand-written (a dozen lines): the
 * libraries for it work on whole strings.
 */
export async function* crlfToLf(chunks: Chunks): AsyncGenerator<Buffer> {
  let heldCr = false;
  for await (const chunk of chunks) {
    if (chunk.length === 0) continue;
    const parts: Buffer[] = [];
    let from = 0;
    if (heldCr) {
      if (chunk[0] !== 0x0a) parts.push(Buffer.from([0x0d]));
      heldCr = false;
    }
    for (let cr = chunk.indexOf(0x0d, from); cr >= 0; cr = chunk.indexOf(0x0d, from)) {
      if (cr === chunk.length - 1) {
        parts.push(chunk.subarray(from, cr));
        heldCr = true;
        from = chunk.length;
        break;
      }
      if (chunk[cr + 1] === 0x0a) {
        parts.push(chunk.subarray(from, cr));
        from = cr + 1; // the LF is kept
      } else {
        parts.push(chunk.subarray(from, cr + 1));
        from = cr + 1;
      }
    }
    if (from < chunk.length) parts.push(chunk.subarray(from));
    const out = Buffer.concat(parts);
    chunk.fill(0);
    if (out.length) yield out;
  }
  if (heldCr) yield Buffer.from([0x0d]);
}

/**
 * A downloaded PGP/MIME file as the original message, decrypted by gpg as it arrives:
 * the armored part goes to gpg, gpg's output through restoreOriginal() and, unless
 * `crlf`, CRLF -> LF. Never whole in memory; no plaintext on disk. Throws, after the last
 * chunk at the latest, a DeliveryError when gpg fails (the message stays on the server), or
 * the download's own error when it breaks.
 */
export function decryptedMessage(gpg: Gnupg, file: Chunks, id: string, crlf: boolean): Chunks {
  const armored = watch(armoredStream(file, id));
  async function* plaintext(): AsyncGenerator<Buffer> {
    try {
      yield* gpg.decryptStream(armored.chunks, `message ${id}`);
    } catch (err) {
      // gpg's failure is this message's (it stays on the server); the download's is its own.
      if (!armored.failure() && err instanceof ClientError && !(err instanceof DeliveryError)) {
        throw new DeliveryError(err.message, err.exitCode);
      }
      throw err;
    }
  }
  // The protected-headers wrapper the server put in front (src/pgp/protected.ts) comes off,
  // byte for byte, before the line ending conversion.
  const original = restoreOriginal(plaintext());
  return crlf ? original : crlfToLf(original);
}
