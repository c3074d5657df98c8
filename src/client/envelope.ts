// Return-Path and Delivered-To of a decrypted message, read from the top of its header
// before the message is delivered (an MDA gets them as SENDER and RECIPIENT).
import type { Chunks } from './deliver.js';

/** Most bytes read ahead to find Return-Path and Delivered-To (the top of the header). */
const HEAD_BYTES = 8192;

/**
 * The first bytes of a message (up to its header's end or HEAD_BYTES) and the whole
 * message again, those bytes included: for envelopeOf() before an MDA is started.
 */
export async function peekHead(chunks: Chunks): Promise<{ head: Buffer; message: Chunks }> {
  const it = chunks[Symbol.asyncIterator]();
  const first: Buffer[] = [];
  let size = 0;
  let ended = false;
  while (size < HEAD_BYTES) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    first.push(r.value);
    size += r.value.length;
    if (/\r?\n\r?\n/.test(Buffer.concat(first).toString('latin1'))) break;
  }
  const head = Buffer.from(Buffer.concat(first).subarray(0, HEAD_BYTES));
  async function* message(): AsyncGenerator<Buffer> {
    yield* first;
    if (ended) return;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  }
  const whole = message();
  // Stopping early stops the source too.
  const ret = whole.return.bind(whole);
  whole.return = async (v) => {
    await it.return?.();
    return ret(v);
  };
  return { head, message: whole };
}

/** Return-Path and Delivered-To from the top of a decrypted message (for the MDA's env). */
export function envelopeOf(message: Buffer): { sender?: string; recipient?: string } {
  const head = message.subarray(0, HEAD_BYTES).toString('latin1');
  const end = head.search(/\r?\n\r?\n/);
  const header = end >= 0 ? head.slice(0, end) : head;
  const sender = /^Return-Path:[ \t]*<?([^>\r\n]*)>?/im.exec(header)?.[1];
  const recipient = /^Delivered-To:[ \t]*<?([^>\r\n]*)>?/im.exec(header)?.[1];
  return { sender: sender?.trim(), recipient: recipient?.trim() };
}
