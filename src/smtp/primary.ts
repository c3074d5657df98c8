// SMTP on every core: the server process listens on the SMTP port, admits each connection
// against the limits counted for the whole server (smtp.maxClients, smtp.maxClientsPerAddress)
// and passes its socket to the least busy worker process (worker.ts), which runs the session.
// The quota and disk-floor ledger stays here, one for all workers: workers ask it before they
// write (remote-space.ts) and tell it of every message stored or removed, so the usage it
// counts is the server's. A worker that dies is replaced; what it held is given back, its
// unfinished files in tmp/ are removed, and the usage of the users it was writing to is read
// from disk again. Nothing it acknowledged is lost: a 250 is sent only after the fsyncs.
import { fork, type ChildProcess } from 'node:child_process';
import net, { type AddressInfo, type Socket } from 'node:net';
import { UserError, type Config } from '../config/index.js';
import type { Logger } from '../config/log.js';
import type { MaildirStore, StoreChange } from '../maildir/index.js';
import { Channel } from './channel.js';
import { ReplyCounter } from './counters.js';
import { flattenReply, reviveReply, type SpaceMessage } from './remote-space.js';
import { reply, type SmtpReply } from './replies.js';
import type { SmtpListener } from './server.js';
import { SourceCounter } from './sources.js';
import { SpaceLedger, type Reservation } from './space.js';
import type { FromWorker, ToWorker } from './worker.js';

export interface PrimaryDeps {
  config: Config;
  logger: Logger;
  /** The server process's store: its usage counts are the ones the ledger checks. */
  maildir: MaildirStore;
}

export interface WorkerSpawn {
  /** The worker program (src/cli/smtp-worker) and node's options for it. */
  script: string;
  execArgv: string[];
  /** The first message every worker gets. */
  init: (index: number) => unknown;
}

/** Server process -> worker at start. */
export interface WorkerInit {
  t: 'init';
  index: number;
  config: Config;
  logFormat: 'json' | 'pretty';
  memoryBudgetBytes: number;
}

/** How long a new worker may take to say it is ready. */
const START_MS = 60_000;
/** Pause before a worker that died is started again. */
const RESPAWN_MS = 1_000;
/** How long a stopping worker may take (transactions finish within 20 s, then sessions close). */
const STOP_MS = 40_000;

interface Hold {
  res: Reservation;
  abort: AbortController;
  /** Operations on one hold run one after another, in the order the worker sent them. */
  chain: Promise<unknown>;
  user: string | null;
}

class Slot {
  child: ChildProcess | null = null;
  channel: Channel | null = null;
  ready = false;
  pid = 0;
  /** Connections passed to this worker and not closed yet. */
  readonly conns = new Set<number>();
  /** This process's copy of each socket passed to the worker, until the worker has its own. */
  readonly inTransit = new Map<number, Socket>();
  readonly holds = new Map<number, Hold>();
  constructor(readonly index: number) {}
}

export interface SmtpPrimary extends SmtpListener {
  /** Process ids of the running workers. */
  pids(): number[];
}

export async function startSmtpPrimary(deps: PrimaryDeps, count: number, spawn: WorkerSpawn): Promise<SmtpPrimary> {
  const { config, logger, maildir } = deps;
  const ledger = new SpaceLedger(config, maildir);
  const sources = new SourceCounter(config.smtp.maxClientsPerAddress);
  const replies = new ReplyCounter();
  const slots = Array.from({ length: count }, (_, i) => new Slot(i));
  let closing = false;
  let nextCid = 1;
  let rotate = 0;

  const open = () => slots.reduce((n, s) => n + s.conns.size, 0);

  /** The refusal a single-process server sends from onConnect, byte for byte, then close. */
  const refuse = (socket: Socket, r: SmtpReply, reason: string) => {
    replies.record(r.responseCode, r.enhanced);
    logger.info({ evt: 'refused', code: r.responseCode, enh: r.enhanced, reason });
    socket.end(`${r.responseCode} ${r.message}\r\n`);
    setTimeout(() => socket.destroy(), 5_000).unref();
  };

  const pick = (): Slot | null => {
    let best: Slot | null = null;
    for (let k = 0; k < slots.length; k++) {
      const s = slots[(rotate + k) % slots.length]!;
      if (s.ready && (!best || s.conns.size < best.conns.size)) best = s;
    }
    rotate = (rotate + 1) % slots.length;
    return best;
  };

  const listener = net.createServer({ pauseOnConnect: true }, (socket) => {
    socket.on('error', () => undefined);
    if (closing) return refuse(socket, reply.shuttingDown(), 'shutting down');
    if (open() >= config.smtp.maxClients) return refuse(socket, reply.tooManyClients(config.domain), 'too many connections');
    const cid = nextCid++;
    if (!sources.admit(String(cid), socket.remoteAddress ?? '')) return refuse(socket, reply.tooManyFromAddress(), 'too many connections from one source');
    const slot = pick();
    // Not sent after all (the channel broke): the connection is gone, its slot given back.
    const lost = () => {
      slot?.inTransit.delete(cid);
      socket.destroy();
      if (slot?.conns.delete(cid)) sources.release(String(cid));
    };
    if (!slot || !slot.channel?.sendSocket({ t: 'conn', cid }, socket, lost)) {
      sources.release(String(cid));
      return refuse(socket, reply.noWorker(), 'no SMTP worker running');
    }
    slot.conns.add(cid);
    slot.inTransit.set(cid, socket);
  });
  listener.on('error', (err) => logger.warn({ evt: 'smtp-error', err }));

  // Every hold of a worker, in the order its messages came.
  const onHold = (slot: Slot, m: Extract<SpaceMessage, { t: 'hold' }>): Promise<{ held: number }> => {
    let h = slot.holds.get(m.rid);
    if (!h) {
      const abort = new AbortController();
      const res = (m.user === null ? ledger.openSpool(abort.signal) : ledger.open(m.user, abort.signal)) as Reservation;
      h = { res, abort, chain: Promise.resolve(), user: m.user };
      slot.holds.set(m.rid, h);
    }
    const hold = h;
    const run = async () => {
      if (m.op === 'reserve') await hold.res.reserve(m.n);
      else if (m.op === 'beforeWrite') await hold.res.beforeWrite(m.n);
      else if (m.op === 'afterWrite') hold.res.afterWrite(m.n);
      else await hold.res.settle(m.n);
      return { held: hold.res.held };
    };
    const result = hold.chain.then(run);
    hold.chain = result.catch(() => undefined);
    return result;
  };

  const onRelease = (slot: Slot, rid: number) => {
    const h = slot.holds.get(rid);
    if (!h) return;
    slot.holds.delete(rid);
    void h.chain.then(() => h.res.release());
  };

  const request = (slot: Slot, m: SpaceMessage): unknown => {
    if (m.t === 'hold') return onHold(slot, m);
    throw new Error('unknown request');
  };

  const notice = (slot: Slot, m: SpaceMessage | FromWorker): void => {
    switch (m.t) {
      case 'hold':
        onHold(slot, m).catch(() => undefined); // within what was granted: cannot be refused
        return;
      case 'release':
        return onRelease(slot, m.rid);
      case 'abort':
        slot.holds.get(m.rid)?.abort.abort(new Error('aborted'));
        return;
      case 'change':
        return maildir.noteChange(m.change as StoreChange);
      case 'got':
        // The worker holds the socket now: this process's copy goes (the connection stays).
        slot.inTransit.get(m.cid)?.destroy();
        slot.inTransit.delete(m.cid);
        return;
      case 'closed':
        slot.inTransit.get(m.cid)?.destroy();
        slot.inTransit.delete(m.cid);
        if (slot.conns.delete(m.cid)) sources.release(String(m.cid));
        return;
      case 'ready':
        slot.ready = true;
        return;
    }
  };

  /** What a dead worker held is given back; its half-written files and cached counts go. */
  const bury = (slot: Slot, pid: number) => {
    slot.ready = false;
    slot.channel?.close();
    slot.channel = null;
    slot.child = null;
    for (const cid of slot.conns) sources.release(String(cid));
    slot.conns.clear();
    // Sockets passed to the dead worker that it never took: closed, so their clients do not wait.
    for (const s of slot.inTransit.values()) s.destroy();
    slot.inTransit.clear();
    const users = new Set<string>();
    for (const h of slot.holds.values()) {
      h.abort.abort(new Error('worker gone'));
      if (h.user) users.add(h.user);
      void h.chain.then(() => h.res.abandon());
    }
    slot.holds.clear();
    // A message it renamed into new/ just before it died may not have been reported.
    for (const u of users) maildir.forgetUsage(u);
    maildir.cleanTmp((name) => name.includes(`P${pid}Q`)).then(
      (n) => n && logger.info({ evt: 'tmp-cleaned', files: n, worker: slot.index }, 'removed the unfinished files of a worker that died'),
      (err) => logger.warn({ evt: 'tmp-clean-failed', err }),
    );
  };

  const start = (slot: Slot): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const child = fork(spawn.script, [], { execArgv: spawn.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'json' });
      slot.child = child;
      slot.pid = child.pid ?? 0;
      const pid = slot.pid;
      const timer = setTimeout(() => {
        reject(new UserError(`SMTP worker ${slot.index} did not start within ${START_MS / 1000} s.`));
        child.kill('SIGKILL');
      }, START_MS);
      const channel = new Channel(
        child,
        {
          request: (m) => request(slot, m as SpaceMessage),
          notice: (m) => {
            notice(slot, m as SpaceMessage | FromWorker);
            if ((m as FromWorker).t === 'ready') {
              clearTimeout(timer);
              resolve();
            }
          },
        },
        reviveReply,
        flattenReply,
      );
      slot.channel = channel;
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        const wasReady = slot.ready;
        bury(slot, pid);
        if (!wasReady) reject(new UserError(`An SMTP worker process could not start (${signal ?? `exit code ${code}`}); the lines above say why.`));
        if (closing) return;
        logger.error({ evt: 'smtp-worker-exited', worker: slot.index, code, signal }, 'an SMTP worker process ended; starting another');
        setTimeout(() => {
          if (!closing) start(slot).catch((err: unknown) => logger.error({ evt: 'smtp-worker-failed', worker: slot.index, err }));
        }, RESPAWN_MS).unref();
      });
      child.send([{ k: 'note', m: spawn.init(slot.index) }]);
    });

  await Promise.all(slots.map((s) => start(s)));
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(config.smtp.port, config.smtp.host, () => {
      listener.off('error', reject);
      resolve();
    });
  });
  const port = (listener.address() as AddressInfo).port;
  logger.info({ evt: 'smtp-workers', workers: count, pids: slots.map((s) => s.pid) }, `SMTP runs in ${count} worker processes`);

  return {
    port,
    pids: () => slots.filter((s) => s.child).map((s) => s.pid),
    async replies() {
      const mine = replies.lastHour();
      const theirs = await Promise.all(
        slots.map((s) => (s.ready && s.channel ? s.channel.request<Record<string, number>>({ t: 'replies' } satisfies ToWorker).catch(() => ({})) : {})),
      );
      const sum = new Map<string, number>(Object.entries(mine));
      for (const r of theirs) for (const [k, n] of Object.entries(r as Record<string, number>)) sum.set(k, (sum.get(k) ?? 0) + n);
      return Object.fromEntries([...sum].sort(([a], [b]) => a.localeCompare(b)));
    },
    async close() {
      closing = true;
      const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
      await Promise.all(
        slots.map(async (s) => {
          const child = s.child;
          if (!child) return;
          const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
          s.channel?.notify({ t: 'stop' } satisfies ToWorker);
          const timer = setTimeout(() => child.kill('SIGKILL'), STOP_MS);
          await gone;
          clearTimeout(timer);
        }),
      );
      await closed;
    },
  };
}
