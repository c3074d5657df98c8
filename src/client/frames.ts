// The answer of POST /api/v1/messages/download (docs/protocol.md 5.5), read by hand: the
// framing is kzymy's own (`ID SP SIZE LF` then SIZE bytes, or `ID SP - LF` for a message
// that is gone), which no library parses. Every frame is checked against what was asked
// for, in order and at the size listed; a message is handed on only once it came whole.

/** A message asked for: its id and the size the list gave. */
export interface Wanted {
  id: string;
  listed: number;
}

/** A message as it came: its bytes, or null when the server says it is gone. */
export interface Framed {
  id: string;
  bytes: Buffer | null;
}

export interface FrameFailures {
  /** The server sent something a kzymy server never sends. */
  hostile(why: string): Error;
  /** The transfer ended early. */
  broke(): Error;
}

/** Longest frame head: a Maildir name is at most 255 bytes, a size 15 digits. */
const MAX_HEAD = 300;
const NOT_A_HEAD = 'sent a batch whose frames are not "ID SIZE"';

export async function* readFrames(body: AsyncIterable<Buffer>, wanted: readonly Wanted[], fail: FrameFailures): AsyncGenerator<Framed> {
  const source = body[Symbol.asyncIterator]();
  let pending: Buffer = Buffer.alloc(0);
  let ended = false;
  /** Appends the next chunk to `pending`; false at the end of the answer. */
  const more = async (): Promise<boolean> => {
    if (ended) return false;
    const r = await source.next();
    if (r.done) {
      ended = true;
      return false;
    }
    pending = pending.length === 0 ? r.value : Buffer.concat([pending, r.value]);
    return true;
  };
  for (const w of wanted) {
    let nl: number;
    while ((nl = pending.indexOf(0x0a)) < 0) {
      if (pending.length > MAX_HEAD) throw fail.hostile(NOT_A_HEAD);
      if (!(await more())) throw fail.broke();
    }
    if (nl > MAX_HEAD) throw fail.hostile(NOT_A_HEAD);
    const head = pending.subarray(0, nl).toString('latin1');
    pending = pending.subarray(nl + 1);
    const sp = head.lastIndexOf(' ');
    if (sp < 0 || head.slice(0, sp) !== w.id) throw fail.hostile('sent other messages than those asked for, or out of order');
    const sizeText = head.slice(sp + 1);
    if (sizeText === '-') {
      yield { id: w.id, bytes: null };
      continue;
    }
    if (!/^\d{1,15}$/.test(sizeText)) throw fail.hostile(NOT_A_HEAD);
    const size = Number(sizeText);
    if (size !== w.listed) throw fail.hostile(`sent a message of ${size} bytes that it listed as ${w.listed} bytes`);
    const bytes = Buffer.allocUnsafe(size);
    let got = 0;
    while (got < size) {
      if (pending.length === 0 && !(await more())) throw fail.broke();
      const n = Math.min(size - got, pending.length);
      pending.copy(bytes, got, 0, n);
      pending = pending.subarray(n);
      got += n;
    }
    yield { id: w.id, bytes };
  }
  if (pending.length > 0 || (await more())) throw fail.hostile('sent more than the messages asked for');
}
