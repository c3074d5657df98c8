// Protected headers for the encrypted part of a stored file, and their exact removal.
//
// The outer header of a stored file says nothing (Subject "...", no From or To), so a mail
// client shows the original's Subject, From and To only if the decrypted part tells it where
// they are. kzymy wraps the plaintext (delivery headers + original message) as a
// message/rfc822 entity marked `protected-headers="v1"` (draft-autocrypt-protected-headers)
// and `hp="cipher"` (RFC 9788), whose own header carries copies of the original's Subject,
// From, To, Cc, Reply-To, Date and Message-ID:
//
//   Kzymy-Payload: v1; wrapper=NNN                <- always the first line: NNN bytes to drop
//   Content-Type: message/rfc822; forwarded=no; hp="cipher"; protected-headers="v1"
//   Subject: ... From: ... (copies, CRLF)
//   <empty line>
//   Return-Path: ... Delivered-To: ... Received: ...   <- the plaintext as before, byte for byte
//   <the original message>
//
// neomutt (gpgme) shows the copied Subject in its index and pager and the wrapped message's
// own header (From, To, Date, Subject) in the pager; notmuch takes the Subject of the
// wrapped message; replying to the message/rfc822 part (neomutt's attachment menu) answers
// its From. restoreOriginal() drops the wrapper again, so `kzymy-client fetch --decrypt`
// delivers the plaintext exactly as before.
//
// Trust: only the first bytes of the plaintext are looked at. Those were always written by
// kzymy (the delivery headers before this format, the marker since), never by a sender, so a
// `Kzymy-Payload:` line a sender puts in her own message is never taken for ours. Anything
// that is not exactly the wrapper protectPayload() writes (a marker with another shape, a
// length that does not end on the wrapper's empty line, a wrong Content-Type line) is passed
// on unchanged, marker included: nothing is cut on a guess.
//
// Hand-written on purpose: the wrapper must come off byte for byte, and MIME parsers
// (mailparser, postal-mime, emailjs-mime-parser) decode, unfold and re-encode what they
// read, so none can give the exact original back. Only the header section's line structure
// is read here (to find its end and the fields to copy); nothing else of MIME is parsed.
// No openpgp here: kzymy-client bundles this module.

/** The original's header section is looked for in this many first bytes of the plaintext. */
export const HEADER_SECTION_MAX = 256 * 1024;
/** A copied field longer than this (raw) is not copied. */
const COPY_FIELD_MAX = 8 * 1024;
/** The fields copied into the wrapper's header, first occurrence of each, in their order. */
const COPIED_FIELDS = new Set(['subject', 'from', 'to', 'cc', 'reply-to', 'date', 'message-id']);
/** The wrapper's size at most: marker, Content-Type and every copy at its longest. */
export const WRAPPER_MAX = 128 * 1024;

const MARKER_PREFIX = Buffer.from('Kzymy-Payload: v1; wrapper=', 'ascii');
const MARKER_LINE = /^Kzymy-Payload: v1; wrapper=([1-9][0-9]{0,6})\r\n$/;
/** The marker line at its longest (7 digits). */
const MARKER_MAX = MARKER_PREFIX.length + 7 + 2;
export const WRAPPER_CONTENT_TYPE = 'Content-Type: message/rfc822; forwarded=no; hp="cipher"; protected-headers="v1"';
const CONTENT_TYPE_LINE = Buffer.from(WRAPPER_CONTENT_TYPE + '\r\n', 'ascii');
const CRLFCRLF = Buffer.from('\r\n\r\n', 'ascii');
const LF = 0x0a;
const CR = 0x0d;

type Chunks = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

function asBuffer(c: Uint8Array): Buffer {
  return Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
}

/** A source whose first chunks are held until it is known what precedes them or comes off. */
class Held {
  readonly chunks: Buffer[] = [];
  size = 0;
  finished = false;
  private readonly it: AsyncIterator<Uint8Array> | Iterator<Uint8Array>;

  constructor(source: Chunks) {
    this.it = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]();
  }

  /** Reads and holds one more chunk; null once the source has ended. */
  async more(): Promise<Buffer | null> {
    const r = await this.it.next();
    if (r.done) {
      this.finished = true;
      return null;
    }
    const chunk = asBuffer(r.value);
    this.chunks.push(chunk);
    this.size += chunk.length;
    return chunk;
  }

  /** The held chunks without their first `drop` bytes, then the rest of the source as it comes. */
  async *release(drop = 0): AsyncGenerator<Buffer> {
    const chunks = this.chunks.splice(0);
    if (drop > 0) {
      const start = Buffer.concat(chunks).subarray(drop);
      if (start.length > 0) yield start;
    } else {
      yield* chunks;
    }
    if (this.finished) return;
    for (let r = await this.it.next(); !r.done; r = await this.it.next()) yield asBuffer(r.value);
  }

  /** Stops the source: a consumer that stops early (an error downstream) stops it too. */
  async close(): Promise<void> {
    await this.it.return?.();
  }
}

/** The fields to copy from a complete header section (latin1, so every byte is kept). */
function copies(header: string): string {
  const out: string[] = [];
  const seen = new Set<string>();
  let current: { name: string; lines: string[] } | null = null;
  const finish = () => {
    if (!current || seen.has(current.name)) return;
    seen.add(current.name);
    const text = copyOf(current.lines);
    if (text !== null) out.push(text);
  };
  for (const line of header.split('\n')) {
    const content = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (/^[ \t]/.test(content)) {
      current?.lines.push(content);
      continue;
    }
    finish();
    const m = /^([!-9;-~]+)[ \t]*:/.exec(content);
    const name = m?.[1]!.toLowerCase();
    current = name !== undefined && COPIED_FIELDS.has(name) ? { name, lines: [content] } : null;
  }
  finish();
  return out.join('');
}

/** One copied field: CRLF line ends, no bare CR, no blank continuation lines; null if too long. */
function copyOf(lines: string[]): string | null {
  const kept = lines.filter((l, i) => i === 0 || /[^ \t]/.test(l)).map((l) => l.replace(/\r/g, ' '));
  const text = kept.join('\r\n') + '\r\n';
  return text.length > COPY_FIELD_MAX ? null : text;
}

/** The wrapper for a plaintext whose header section is `header`: marker line included. */
function wrapperFor(header: Buffer): Buffer {
  const rest = CONTENT_TYPE_LINE.toString('latin1') + copies(header.toString('latin1')) + '\r\n';
  // The marker counts its own length too: settle the number of digits.
  let total = MARKER_PREFIX.length + 2 + rest.length;
  for (;;) {
    const next = MARKER_PREFIX.length + String(total).length + 2 + rest.length;
    if (next === total) break;
    total = next;
  }
  return Buffer.from(`${MARKER_PREFIX.toString('ascii')}${total}\r\n${rest}`, 'latin1');
}

/**
 * Finds the end of the header section (just past its empty line) across chunks, one byte
 * scan per chunk. An empty line is LF or CR LF at a line's start.
 */
class HeaderEndScanner {
  private offset = 0;
  private lineStart = 0;
  private firstByte = -1;
  end = -1;

  feed(chunk: Buffer): void {
    let from = 0;
    while (this.end < 0) {
      if (this.firstByte < 0 && from < chunk.length) this.firstByte = chunk[from]!;
      const lf = chunk.indexOf(LF, from);
      if (lf < 0) break;
      const at = this.offset + lf;
      const len = at - this.lineStart;
      if (len === 0 || (len === 1 && this.firstByte === CR)) this.end = at + 1;
      this.lineStart = at + 1;
      this.firstByte = -1;
      from = lf + 1;
    }
    this.offset += chunk.length;
  }
}

/** Where the header section of `buf` ends (past its empty line), within the bound; -1 if not. */
function headerEnd(buf: Buffer): number {
  const s = new HeaderEndScanner();
  s.feed(buf.subarray(0, HEADER_SECTION_MAX));
  return s.end;
}

/**
 * The payload for a plaintext (delivery headers + original): the wrapper, then the plaintext
 * unchanged. A plaintext whose header section does not end within HEADER_SECTION_MAX bytes is
 * returned as it is, without a marker.
 */
export function protectBuffer(plaintext: Buffer): Buffer {
  const end = headerEnd(plaintext);
  if (end < 0) return plaintext;
  return Buffer.concat([wrapperFor(plaintext.subarray(0, end)), plaintext]);
}

/**
 * protectBuffer() for a stream: holds at most the header section (HEADER_SECTION_MAX plus one
 * chunk) and then passes every chunk on as it comes.
 */
export async function* protectPayload(plaintext: Chunks): AsyncGenerator<Buffer> {
  const scanner = new HeaderEndScanner();
  const held = new Held(plaintext);
  try {
    while (scanner.end < 0 && held.size <= HEADER_SECTION_MAX && !held.finished) {
      const chunk = await held.more();
      if (chunk) scanner.feed(chunk);
    }
    if (scanner.end >= 0 && scanner.end <= HEADER_SECTION_MAX) {
      yield wrapperFor(Buffer.concat(held.chunks).subarray(0, scanner.end));
    }
    yield* held.release();
  } finally {
    await held.close();
  }
}

/**
 * How much of the payload's start is our wrapper: a byte count, `{ need }` when more bytes
 * must be seen to tell, or null when the payload is not wrapped (or not exactly as we wrap).
 */
function wrapperLength(buf: Buffer): number | { need: number } | null {
  const n = Math.min(buf.length, MARKER_PREFIX.length);
  if (!buf.subarray(0, n).equals(MARKER_PREFIX.subarray(0, n))) return null;
  if (buf.length < MARKER_PREFIX.length) return { need: MARKER_PREFIX.length };
  const lf = buf.subarray(0, MARKER_MAX).indexOf(LF);
  if (lf < 0) return buf.length < MARKER_MAX ? { need: buf.length + 1 } : null;
  const m = MARKER_LINE.exec(buf.subarray(0, lf + 1).toString('latin1'));
  if (!m) return null;
  const total = Number(m[1]);
  const lineEnd = lf + 1;
  if (total > WRAPPER_MAX || total < lineEnd + CONTENT_TYPE_LINE.length + 2) return null;
  if (buf.length < total) return { need: total };
  const wrapper = buf.subarray(0, total);
  if (!wrapper.subarray(lineEnd, lineEnd + CONTENT_TYPE_LINE.length).equals(CONTENT_TYPE_LINE)) return null;
  // The wrapper's header ends exactly at `total`: its first empty line is its last line.
  if (wrapper.indexOf(CRLFCRLF, lineEnd - 2) !== total - 4) return null;
  return total;
}

/** The plaintext without our wrapper; anything else (older files, odd payloads) unchanged. */
export function restoreBuffer(payload: Buffer): Buffer {
  const w = wrapperLength(payload);
  return typeof w === 'number' ? payload.subarray(w) : payload;
}

/**
 * restoreBuffer() for a stream: holds at most the wrapper (WRAPPER_MAX plus one chunk), then
 * passes every chunk on as it comes.
 */
export async function* restoreOriginal(chunks: Chunks): AsyncGenerator<Buffer> {
  const held = new Held(chunks);
  let need = 1;
  let drop = 0;
  try {
    for (;;) {
      while (held.size < need && !held.finished) await held.more();
      if (held.size < need) break;
      const w = wrapperLength(held.chunks.length === 1 ? held.chunks[0]! : Buffer.concat(held.chunks));
      if (w === null) break;
      if (typeof w === 'number') {
        drop = w;
        break;
      }
      need = w.need;
    }
    yield* held.release(drop);
  } finally {
    await held.close();
  }
}
