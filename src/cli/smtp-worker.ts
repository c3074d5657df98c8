// An SMTP worker process, started by `kzymy-server start` when smtp.workers is more than 1
// (never by hand): it gets the server's configuration over the IPC channel, opens the registry
// as a reader that follows the server's changes, and runs SMTP sessions on the sockets the
// server process passes it (src/smtp/primary.ts). It ends when told to or on SIGTERM/SIGINT,
// after the transactions in flight; at once when the server process is gone.
import type { Socket } from 'node:net';
import { UserError, type Config } from '../config/index.js';
import { createLogger } from '../config/log.js';
import { openRegistry, type Registry } from '../registry/index.js';
import { KeyCache } from '../pgp/index.js';
import { MaildirStore } from '../maildir/index.js';
import { Channel } from '../smtp/channel.js';
import { flattenReply, reviveReply } from '../smtp/remote-space.js';
import { startSmtpWorker, type FromWorker, type SmtpWorker, type ToWorker } from '../smtp/worker.js';
import type { WorkerInit } from '../smtp/primary.js';
import { quietExperimentalCryptoWarnings } from './warnings.js';

quietExperimentalCryptoWarnings();

if (!process.send) {
  process.stderr.write('kzymy smtp-worker: this program is started by "kzymy-server start" (smtp.workers), not by hand.\n');
  process.exit(2);
}

let worker: SmtpWorker | null = null;
let registry: Registry | null = null;
let stopping = false;
const early: Array<{ cid: number; socket: Socket }> = [];

const channel: Channel = new Channel(
  process as unknown as ConstructorParameters<typeof Channel>[0],
  {
    notice: (m) => {
      const msg = m as WorkerInit | ToWorker;
      if (msg.t === 'init') void init(msg);
      else if (msg.t === 'stop') void stop(0);
    },
    request: (m) => {
      if ((m as ToWorker).t === 'replies') return worker?.replies() ?? {};
      throw new Error('unknown request');
    },
    socket: (m, socket) => {
      const { cid } = m as { cid: number };
      // The client left before its socket reached this process: its slot is free again.
      if (!socket) return channel.notify({ t: 'closed', cid } satisfies FromWorker);
      // The server process closes its copy of the socket once it knows this one has it.
      channel.notify({ t: 'got', cid } satisfies FromWorker);
      if (worker) worker.accept(cid, socket);
      else early.push({ cid, socket });
    },
  },
  reviveReply,
  flattenReply,
);

async function init(msg: WorkerInit): Promise<void> {
  const config: Config = msg.config;
  const logger = createLogger(config.log.level, process.stdout, msg.logFormat).child({ worker: msg.index });
  try {
    registry = await openRegistry({
      dataDir: config.dataDir,
      engine: config.registry.engine,
      url: config.registry.url ?? undefined,
      logger,
      follow: true,
      compact: false,
    });
    const reg = registry;
    const maildir = new MaildirStore(config.maildirRoot, {
      onChange: (change) => channel.notify({ t: 'change', change } satisfies FromWorker),
      // An account deleted by the server process (or the operator) while a copy was on its way.
      mayRecreate: async (user) => {
        await reg.refresh().catch(() => false);
        return reg.get(user) !== undefined;
      },
    });
    worker = await startSmtpWorker({ config, registry: reg, maildir, keys: new KeyCache(), logger }, channel, msg.memoryBudgetBytes);
    for (const e of early.splice(0)) worker.accept(e.cid, e.socket);
    channel.notify({ t: 'ready' } satisfies FromWorker);
  } catch (err) {
    logger.error({ evt: 'smtp-worker-failed', err }, err instanceof UserError ? err.message : 'the SMTP worker could not start');
    process.exit(1);
  }
}

async function stop(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  try {
    await worker?.close();
    await registry?.close();
  } finally {
    process.exit(code);
  }
}

process.on('SIGTERM', () => void stop(0));
process.on('SIGINT', () => void stop(0));
// The server process is gone (killed): without it no space can be counted, so end at once,
// as the whole server would have in a crash; nothing unacknowledged was promised to anyone.
process.on('disconnect', () => process.exit(1));
