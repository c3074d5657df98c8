// /api/v1/messages: mail pickup (list, download, acknowledge). Documented in
// docs/protocol.md section 5; keep the two in step.
import type Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { Readable } from 'node:stream';
import { MaildirError, MaildirStore } from '../maildir/index.js';
import type { AuthState } from './sessions.js';
import type { Web } from './context.js';
import { WebError } from './errors.js';

/** Most ids one POST /messages/acknowledge may name (the request stays under the JSON limit). */
export const MAX_ACK_IDS = 500;
/** Most ids one POST /messages/download may name. */
export const MAX_DOWNLOAD_IDS = 100;
/** A message up to this size is read whole and sent as one buffer; a larger one is streamed. */
export const WHOLE_READ_MAX = 256 * 1024;
/** Files a batch download reads ahead of the one being sent. */
const READ_AHEAD = 4;
/** The media type of a batch download (docs/protocol.md 5.5). */
export const BATCH_TYPE = 'application/vnd.kzymy.messages';

function auth(ctx: Context): AuthState {
  return ctx.state.auth as AuthState;
}

function messageId(ctx: Context): string {
  const id = String(ctx.params.id ?? '');
  if (!MaildirStore.isValidId(id)) {
    throw new WebError(400, 'bad-id', 'That message id is not valid: use an id exactly as the message list gave it.');
  }
  return id;
}

function maildirError(err: unknown): never {
  if (err instanceof MaildirError) {
    if (err.code === 'not-found') throw new WebError(404, 'no-such-message', 'There is no such message: it may have been acknowledged already.');
    if (err.code === 'bad-id') throw new WebError(400, 'bad-id', 'That message id is not valid.');
  }
  throw err;
}

/** `{"ids": [...]}` with 1 to `max` valid ids, else a 400 naming the mistake; `done` says what was not done. */
function idList(body: Record<string, unknown>, max: number, done: string): string[] {
  const ids = body.ids;
  if (!Array.isArray(ids) || ids.length === 0 || ids.length > max || !ids.every((id) => typeof id === 'string')) {
    throw new WebError(400, 'bad-request', `Send {"ids": [...]} with 1 to ${max} message ids.`);
  }
  if (!ids.every((id) => MaildirStore.isValidId(id))) {
    throw new WebError(400, 'bad-id', `A message id is not valid: use ids exactly as the message list gave them; ${done}.`);
  }
  return ids as string[];
}

type Read = { id: string; size: number; body: Buffer | Readable | null };

/**
 * The frames of a batch download: `ID SP SIZE LF` and the file's bytes for each message,
 * `ID SP - LF` for one that is not there. Up to READ_AHEAD files are read while one is
 * sent. A read that fails otherwise ends the stream early: the client sees a cut transfer.
 */
async function* frames(maildir: MaildirStore, user: string, ids: readonly string[]): AsyncGenerator<Buffer> {
  const start = (id: string): Promise<Read> =>
    maildir.readUpTo(user, id, WHOLE_READ_MAX).then(
      (r) => ({ id, size: r.info.size, body: r.body }),
      (err: unknown) => {
        if (err instanceof MaildirError && err.code === 'not-found') return { id, size: 0, body: null };
        throw err;
      },
    );
  const ahead: Array<Promise<Read>> = [];
  let next = 0;
  const fill = (): void => {
    while (ahead.length < READ_AHEAD && next < ids.length) {
      const p = start(ids[next++]!);
      p.catch(() => undefined); // awaited in turn below
      ahead.push(p);
    }
  };
  try {
    fill();
    while (ahead.length > 0) {
      const r = await ahead.shift()!;
      fill();
      if (r.body === null) {
        yield Buffer.from(`${r.id} -\n`, 'latin1');
      } else if (Buffer.isBuffer(r.body)) {
        yield Buffer.concat([Buffer.from(`${r.id} ${r.body.length}\n`, 'latin1'), r.body]);
      } else {
        yield Buffer.from(`${r.id} ${r.size}\n`, 'latin1');
        yield* r.body as AsyncIterable<Buffer>;
      }
    }
  } finally {
    // Stopped early (the client went away): close what was opened ahead.
    for (const p of ahead) {
      void p.then((r) => {
        if (r.body instanceof Readable) r.body.destroy();
      }, () => undefined);
    }
  }
}

export function pickupRoutes(router: Router, web: Web, authed: Middleware, json: (ctx: Context) => Promise<Record<string, unknown>>): void {
  const { maildir, logger } = web.deps;

  router.get('/messages', authed, async (ctx) => {
    const list = await maildir.list(auth(ctx).user.username);
    ctx.body = {
      messages: list.map((m) => ({ id: m.id, size: m.size, receivedAt: m.receivedAt.toISOString() })),
      count: list.length,
      bytes: list.reduce((n, m) => n + m.size, 0),
    };
  });

  // Several messages in one answer, framed (docs/protocol.md 5.5): one request for a batch.
  router.post('/messages/download', authed, async (ctx) => {
    const ids = idList(await json(ctx), MAX_DOWNLOAD_IDS, 'nothing was sent');
    ctx.type = BATCH_TYPE;
    ctx.body = Readable.from(frames(maildir, auth(ctx).user.username, ids), { objectMode: false });
  });

  router.get('/messages/:id', authed, async (ctx) => {
    const id = messageId(ctx);
    const { info, body } = await maildir.readUpTo(auth(ctx).user.username, id, WHOLE_READ_MAX).catch(maildirError);
    ctx.type = 'message/rfc822';
    ctx.length = info.size;
    ctx.body = body;
  });

  router.delete('/messages/:id', authed, async (ctx) => {
    const id = messageId(ctx);
    await maildir.remove(auth(ctx).user.username, id).catch(maildirError);
    logger.info({ evt: 'acknowledged' }, 'pickup');
    ctx.body = { deleted: id };
  });

  // Acknowledges several messages at once: one request and one fsync for a batch.
  router.post('/messages/acknowledge', authed, async (ctx) => {
    const ids = idList(await json(ctx), MAX_ACK_IDS, 'nothing was deleted');
    const r = await maildir.removeMany(auth(ctx).user.username, ids).catch(maildirError);
    if (r.removed.length > 0) logger.info({ evt: 'acknowledged', count: r.removed.length }, 'pickup');
    ctx.body = { deleted: r.removed, missing: r.missing };
  });

  // An id with a raw '/' never names a message.
  const badId = (): never => {
    throw new WebError(400, 'bad-id', 'That message id is not valid: it must not contain "/".');
  };
  router.get('/messages/:id/*rest', authed, badId);
  router.delete('/messages/:id/*rest', authed, badId);
}
