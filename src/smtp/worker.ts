// The SMTP side of a worker process: the server process (primary.ts) accepts each connection,
// counts it against the limits and passes its socket here; this process runs the SMTP session,
// the recipient policy and the data path as a single-process server does, but counts space in
// the server process (remote-space.ts) and tells it of every message stored or removed.
import type { Socket } from 'node:net';
import type { Channel } from './channel.js';
import { buildSmtp, type SmtpDeps } from './server.js';
import { MemoryBudget } from './memory.js';
import { RemoteSpace } from './remote-space.js';
import { reply } from './replies.js';

/** Server process -> worker. */
export type ToWorker = { t: 'stop' } | { t: 'replies' };

/** Worker -> server process, besides space (remote-space.ts). */
export type FromWorker = { t: 'ready' } | { t: 'got'; cid: number } | { t: 'closed'; cid: number } | { t: 'change'; change: import('../maildir/index.js').StoreChange };

export interface SmtpWorker {
  /** A connection the server process admitted, with its number there. */
  accept(cid: number, socket: Socket): void;
  replies(): Record<string, number>;
  /** Takes no more connections, waits for transactions in flight, says 421 to idle sessions. */
  close(): Promise<void>;
}

export async function startSmtpWorker(deps: SmtpDeps, channel: Channel, memoryBudgetBytes: number): Promise<SmtpWorker> {
  const core = await buildSmtp(deps, {
    space: new RemoteSpace(channel, deps.config, deps.maildir),
    memory: new MemoryBudget(memoryBudgetBytes),
    sources: null,
  });
  return {
    accept(cid, socket) {
      socket.once('close', () => channel.notify({ t: 'closed', cid } satisfies FromWorker));
      // smtp-server's own connection handler, as if its listener had accepted the socket.
      core.server.server.emit('connection', socket);
    },
    replies: () => core.replies.lastHour(),
    async close() {
      await core.stop();
      // Sessions that are idle or between transactions: told, then closed (as smtp-server's close does).
      const open = (core.server as unknown as { connections: Set<{ send(code: number, text: string): void; close(): void }> }).connections;
      const bye = reply.shuttingDown();
      for (const c of open) {
        try {
          c.send(bye.responseCode, bye.message);
          c.close();
        } catch {
          // already gone
        }
      }
    },
  };
}
