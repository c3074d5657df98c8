// `kzymy-client fetch`: list waiting mail, download each message, deliver it, record it,
// then acknowledge it (the server deletes it). A message is acknowledged only after its
// delivery succeeded and was recorded, so a crash in between never delivers it twice.
import cliProgress from 'cli-progress';
import path from 'node:path';
import { DOWNLOAD_BATCH, type MessageEntry, type Session } from './api.js';
import type { Download } from './transport.js';
import type { Context } from './context.js';
import { DecryptBatcher } from './batch.js';
import { decryptedMessage } from './decrypt.js';
import type { Chunks, Destination } from './deliver.js';
import { envelopeOf, peekHead } from './envelope.js';
import { MaildirDestination } from './maildir-destination.js';
import { Spool } from './spool.js';
import { ClientError, DeliveryError, EXIT_TEMPFAIL, printable } from './errors.js';
import type { Gnupg } from './gnupg.js';
import type { DeliveredRecord } from './state.js';
import { lockProfile } from './lock.js';
import { Committer } from './commit.js';
import { Stopper } from './stopper.js';
import { humanBytes } from './format.js';

export interface FetchResult {
  waiting: number;
  delivered: number;
  bytes: number;
  /** Already delivered by an earlier run that ended before acknowledging. */
  acknowledgedOnly: number;
  failures: DeliveryError[];
}

export interface FetchDeps {
  session: Session;
  destination: Destination;
  record: DeliveredRecord;
  gpg: Gnupg;
  decrypt: boolean;
  /** With decrypt: keep CRLF line ends (else CRLF -> LF). */
  crlf: boolean;
  /** Where a download is spooled (ciphertext) before it goes to an irrevocable destination. */
  spoolDir: string;
  stopper: Stopper;
  progress: boolean;
}

/**
 * Downloads in flight at once into a Maildir. Each is a file of its own in tmp/ until it is
 * fsynced and renamed, so they cannot interfere; their fsyncs overlap, and the fsync of
 * new/ after their renames is shared. An MDA gets one message at a time, in list order.
 */
export const IN_FLIGHT = 16;

/** A message up to this size is fetched in a batch download (whole, in memory); a larger one is streamed alone. */
export const BATCH_ITEM_MAX = 256 * 1024;

async function* once(bytes: Buffer): AsyncGenerator<Buffer> {
  yield bytes;
}

export async function fetchOnce(d: FetchDeps): Promise<FetchResult> {
  const list = await d.session.messages();
  await d.record.retainOnly(new Set(list.map((m) => m.id)));
  const result: FetchResult = { waiting: list.length, delivered: 0, bytes: 0, acknowledgedOnly: 0, failures: [] };
  const bar = d.progress && list.length > 0
    ? new cliProgress.SingleBar(
        { format: 'fetching [{bar}] {value}/{total} messages', stream: process.stderr, clearOnComplete: true, hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
    : null;
  bar?.start(list.length, 0);
  let progress = 0;
  const progressed = (n: number): void => {
    progress += n;
    bar?.update(progress);
  };
  const committer = new Committer(d, result, progressed);
  /** The first error that ends the run (a broken connection, a full disk, a hostile server). */
  let fatal: { err: unknown } | null = null;
  let gone = 0;
  let next = 0;
  // --decrypt into a Maildir: one gpg for many messages (see DecryptBatcher).
  const batcher = d.decrypt && d.destination instanceof MaildirDestination ? new DecryptBatcher(d.gpg, d.destination, d.crlf) : null;
  const settling: Array<Promise<void>> = [];
  const failed = (err: unknown): void => {
    if (err instanceof DeliveryError && err.exitCode !== EXIT_TEMPFAIL) {
      result.failures.push(err);
      progressed(1);
    } else fatal ??= { err };
  };
  /** The intent line a Maildir delivery writes before its rename (see DeliveredRecord). */
  const intend = (id: string) => (name: string) => d.record.intend(id, name);
  const running = (): boolean => !d.stopper.stopped && fatal === null && committer.failure === null;
  /** True when an earlier run delivered `m` and ended before the server heard of it. */
  const deliveredBefore = async (m: MessageEntry): Promise<boolean> => {
    if (!(await d.record.has(m.id))) {
      const name = await d.record.intended(m.id);
      // Renamed into the Maildir by an earlier run that ended before recording it done.
      if (name === undefined || !(d.destination instanceof MaildirDestination) || !(await d.destination.holds(name))) return false;
    }
    committer.add(m.id, 0, true);
    return true;
  };
  const deliverFile = async (m: MessageEntry, file: Download): Promise<void> => {
    if (batcher) {
      // Queued for the next gpg; the worker goes on downloading meanwhile.
      const { delivered } = await batcher.submit(m.id, file.chunks, intend(m.id));
      settling.push(delivered.then(() => committer.add(m.id, file.size, false), failed));
      return;
    }
    await deliverOne(d, m.id, file.chunks, intend(m.id));
    committer.add(m.id, file.size, false);
  };
  const width = d.destination.irrevocable ? 1 : Math.min(IN_FLIGHT, Math.max(1, list.length));
  /**
   * The next messages to fetch together: a run of small ones, or one large one alone. A
   * short backlog is cut in smaller runs, so that every worker has one.
   */
  const takeUnit = (): MessageEntry[] => {
    const unit = [list[next++]!];
    if (unit[0]!.size > BATCH_ITEM_MAX) return unit;
    const most = Math.min(DOWNLOAD_BATCH, Math.ceil((list.length - next + 1) / width));
    while (next < list.length && unit.length < most && list[next]!.size <= BATCH_ITEM_MAX) unit.push(list[next++]!);
    return unit;
  };
  const worker = async (): Promise<void> => {
    while (running() && next < list.length) {
      const unit = takeUnit();
      try {
        const todo: MessageEntry[] = [];
        for (const m of unit) if (!(await deliveredBefore(m))) todo.push(m);
        if (todo.length === 0) continue;
        const frames = todo[0]!.size <= BATCH_ITEM_MAX ? await d.session.downloadMany(todo.map((m) => ({ id: m.id, listed: m.size }))) : null;
        if (frames) {
          // One request for the unit; each message comes whole and is delivered in turn.
          let at = 0;
          for await (const f of frames) {
            const m = todo[at++]!;
            if (f.bytes === null) gone++; // acknowledged meanwhile (another client)
            else {
              try {
                await batcher?.room();
                await deliverFile(m, { size: f.bytes.length, chunks: once(f.bytes) });
              } catch (err) {
                failed(err);
                if (fatal) return;
              }
            }
            if (!running()) break;
          }
          continue;
        }
        // A large message, or a server without batch downloads: one request each, streamed.
        for (const m of todo) {
          if (!running()) break;
          try {
            await batcher?.room();
            const file = await d.session.download(m.id, m.size);
            if (file === null) gone++; // acknowledged meanwhile (another client)
            else await deliverFile(m, file);
          } catch (err) {
            failed(err);
            if (fatal) return;
          }
        }
      } catch (err) {
        failed(err);
        if (fatal) return;
      }
    }
  };
  try {
    // Every worker ends (its download settled) before anything is thrown: what was
    // delivered is still committed, and nothing is acknowledged that is not durable.
    try {
      await Promise.all(Array.from({ length: width }, worker));
      await Promise.all(settling);
    } finally {
      await batcher?.close();
    }
    let commitError: unknown = null;
    try {
      await committer.flush();
    } catch (err) {
      commitError = err;
    }
    if (fatal) {
      const err = (fatal as { err: unknown }).err;
      if (err instanceof DeliveryError && err.exitCode === EXIT_TEMPFAIL) {
        const rest = list.length - result.delivered - result.acknowledgedOnly - result.failures.length - gone;
        throw new DeliveryError(
          `${err.message.replace(/\.$/, '')}; ${rest <= 1 ? 'the message stays' : `this message and ${rest - 1} more stay`} on the server for the next run.`,
          EXIT_TEMPFAIL,
        );
      }
      throw err;
    }
    if (commitError) throw commitError;
  } finally {
    bar?.stop();
  }
  return result;
}

/**
 * One message from the server to the destination, streamed: resolves once it is delivered
 * (durable or accepted), throws with nothing delivered otherwise. A Maildir takes the
 * stream as it arrives (an incomplete one never leaves tmp/); an MDA only a download that
 * arrived complete, spooled first (see MdaDestination).
 */
async function deliverOne(d: FetchDeps, id: string, download: Chunks, beforeRename: (name: string) => Promise<void>): Promise<void> {
  const spool = d.destination.irrevocable ? await Spool.fill(d.spoolDir, download) : null;
  try {
    const file = spool ? spool.chunks() : download;
    if (!d.decrypt) {
      await d.destination.deliver(file, { id, beforeRename });
      return;
    }
    // SENDER and RECIPIENT for an MDA come from the top of the decrypted header.
    const { head, message } = await peekHead(decryptedMessage(d.gpg, file, id, d.crlf));
    const env = envelopeOf(head);
    head.fill(0);
    await d.destination.deliver(message, { id, ...env, beforeRename });
  } finally {
    await spool?.close();
  }
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** One sentence about a run, or null when nothing happened. */
export function summary(r: FetchResult, where: string): string | null {
  const parts: string[] = [];
  if (r.delivered > 0) parts.push(`${plural(r.delivered, 'message')} (${humanBytes(r.bytes)}) delivered to ${where}`);
  if (r.acknowledgedOnly > 0) parts.push(`${plural(r.acknowledgedOnly, 'message')} delivered by an earlier run acknowledged`);
  if (parts.length === 0 && r.failures.length === 0) return r.waiting === 0 ? 'no mail waiting' : null;
  return parts.join('; ') || null;
}

function failureError(r: FetchResult): ClientError {
  const first = r.failures[0]!;
  return new ClientError(
    `${plural(r.failures.length, 'message')} could not be delivered and stay${r.failures.length === 1 ? 's' : ''} on the server: ${first.message}`,
    first.exitCode,
  );
}

/** `fetch`, once or (with --watch) forever, until SIGINT/SIGTERM; one run per profile at a time. */
export async function runFetch(ctx: Context): Promise<void> {
  const session = ctx.session();
  const destination = ctx.destination();
  const stopper = new Stopper();
  const unlock = await lockProfile(ctx.store.file, (err) => stopper.abort(err));
  stopper.install();
  const deps: FetchDeps = {
    session,
    destination,
    record: ctx.store.record(session.username),
    gpg: ctx.gpg(),
    decrypt: ctx.profile.decrypt === true,
    crlf: ctx.profile.crlf === true,
    spoolDir: path.dirname(ctx.store.file),
    stopper,
    progress: Boolean(process.stderr.isTTY) && !ctx.quiet,
  };
  const watch = ctx.opts.watch;
  try {
    if (watch === undefined) {
      const r = await fetchOnce(deps);
      if (stopper.reason) throw stopper.reason;
      const line = summary(r, destination.describe());
      if (line) ctx.say(line);
      if (r.failures.length > 0) throw failureError(r);
      return;
    }
    while (!stopper.stopped) {
      try {
        const r = await fetchOnce(deps);
        const line = summary(r, destination.describe());
        if (line && r.waiting > 0) ctx.say(`${new Date().toISOString()} ${line}`);
        if (r.failures.length > 0) process.stderr.write(`kzymy-client: ${printable(failureError(r).message)}\n`);
      } catch (err) {
        // Temporary trouble (tor, server, MDA) and one bad message do not end a watch.
        if (!(err instanceof ClientError) || !(err.temporary || err instanceof DeliveryError)) throw err;
        process.stderr.write(`kzymy-client: ${printable(err.message)}\n`);
      }
      // ±20% random jitter, so that polls do not form a recognisable rhythm.
      await stopper.sleep(watch * 1000 * (0.8 + Math.random() * 0.4));
    }
    if (stopper.reason) throw stopper.reason;
    ctx.say('stopped');
  } finally {
    stopper.uninstall();
    await unlock().catch(() => undefined); // already taken over: nothing to give back
  }
}
