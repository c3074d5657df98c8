// smtp-server wiring: the public, receive-only SMTP listener.
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession, type SMTPServerAddress } from 'smtp-server';
import type { Config } from '../config/index.js';
import type { Logger } from '../config/log.js';
import { applySmtpServerPatches } from './patches.js';
import { SourceCounter } from './sources.js';
import type { DeadlineOptions } from './deadlines.js';
import { RecipientPolicy, type SmtpStores } from './policy.js';
import type { Recipient } from './copies.js';
import { deliverMessage, MessageTooBig, transactionId } from './intake.js';
import { reply, SmtpReply } from './replies.js';
import { MemoryBudget } from './memory.js';
import { SpaceLedger } from './space.js';
import type { Space } from './space-hold.js';
import { ReplyCounter } from './counters.js';

export interface SmtpDeps extends SmtpStores {
  logger: Logger;
}

export interface SmtpListener {
  port: number;
  /** Replies given in the last hour, by code (counts only), of every process that takes SMTP. */
  replies(): Promise<Record<string, number>> | Record<string, number>;
  /** Stops accepting connections, waits for transactions in flight (bounded), closes. */
  close(): Promise<void>;
}

/** How long a stop waits for the transactions in flight, at most. */
const DRAIN_MS = 20_000;

/** Per-transaction state, keyed by smtp-server's envelope object (new for every MAIL FROM). */
type Tx = Map<string, Recipient>;

async function loadTls(config: Config, logger: Logger): Promise<{ key: Buffer; cert: Buffer } | null> {
  try {
    const [key, cert] = await Promise.all([readFile(config.smtp.tlsKeyFile), readFile(config.smtp.tlsCertFile)]);
    return { key, cert };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    logger.warn({ evt: 'starttls-off' }, 'No TLS certificate found: STARTTLS is not offered. Run "kzymy-server init" to create one.');
    return null;
  }
}

/** What the sessions of one process share, and who counts connections per source. */
export interface SmtpShared {
  /** Bytes in flight against quota and disk floor: this process's ledger, or the server process's. */
  space: Space;
  /** Bytes held in memory by this process's transactions. */
  memory: MemoryBudget;
  /** Counts connections per source; null where the server process admitted them already. */
  sources: SourceCounter | null;
}

/** An SMTPServer with kzymy's policy and data path, listening or fed sockets by the server process. */
export interface SmtpCore {
  server: SMTPServer;
  replies: ReplyCounter;
  /** New connections get 421 4.3.2 from now on; waits (bounded) for the transactions in flight. */
  stop(): Promise<void>;
}

export async function buildSmtp(deps: SmtpDeps, shared: SmtpShared): Promise<SmtpCore> {
  applySmtpServerPatches();
  const { config, registry, logger } = deps;
  const { space, memory, sources } = shared;
  const policy = new RecipientPolicy({ ...deps, space });
  const intake = { ...deps, space, memory };
  const txs = new WeakMap<object, Tx>();
  const tls = await loadTls(config, logger);
  let inFlight = 0;
  let closing = false;

  const replies = new ReplyCounter();
  const refused = (err: SmtpReply): SmtpReply => {
    replies.record(err.responseCode, err.enhanced);
    return err;
  };

  const options: SMTPServerOptions & { greetingDelayMs: number; maxCommandLength: number } & DeadlineOptions = {
    name: config.domain,
    banner: 'kzymy ESMTP (receive only)',
    size: config.limits.maxMessageBytes,
    authOptional: true,
    disabledCommands: ['AUTH'],
    disableReverseLookup: true,
    hideDSN: true,
    hideENHANCEDSTATUSCODES: false,
    hideREQUIRETLS: true,
    hideSTARTTLS: !tls,
    ...(tls ?? {}),
    maxClients: config.smtp.maxClients,
    maxRecipients: config.smtp.maxRecipients,
    maxCommandLength: config.smtp.maxLineLength,
    socketTimeout: config.smtp.idleTimeoutMs,
    // Read by the deadline patch (patches.ts, deadlines.ts).
    commandTimeoutMs: config.smtp.commandTimeoutMs,
    minDataRate: config.smtp.minDataRate,
    onDeadline: (phase) => {
      replies.record(421, '4.4.2');
      logger.info({ evt: 'refused', code: 421, enh: '4.4.2', reason: phase === 'data' ? 'message data too slow' : 'command line too slow' });
    },
    closeTimeout: 30_000,
    greetingDelayMs: config.smtp.greetingDelayMs,
    logger: false,

    // smtp-server has no per-source limit (maxClients counts all connections together),
    // so it is kept here. A connection refused here is closed at once by smtp-server and
    // leaves the maxClients count with it; onClose runs for every connection, counted or not.
    onConnect(session, callback) {
      if (closing) return callback(refused(reply.shuttingDown()));
      if (sources && !sources.admit(session.id, session.remoteAddress)) {
        logger.info({ evt: 'refused', code: 421, enh: '4.7.0', reason: 'too many connections from one source' });
        return callback(refused(reply.tooManyFromAddress()));
      }
      logger.debug({ evt: 'connect', cid: session.id, ip: session.remoteAddress }, 'connection');
      callback();
    },

    onClose(session) {
      sources?.release(session.id);
    },

    onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, callback) {
      const declared = Number((session.envelope.mailFrom && session.envelope.mailFrom.args && (session.envelope.mailFrom.args as Record<string, string>).SIZE) || 0) || 0;
      policy.resolve(address.address, declared).then(
        (user) => {
          let tx = txs.get(session.envelope);
          if (!tx) txs.set(session.envelope, (tx = new Map()));
          // Several addresses of one user: one copy, Delivered-To the first of them.
          if (!tx.has(user.username)) tx.set(user.username, { user, address: address.address });
          callback();
        },
        (err: unknown) => {
          if (err instanceof SmtpReply) {
            logger.info({ evt: 'rcpt-refused', code: err.responseCode, enh: err.enhanced });
            logger.debug({ evt: 'rcpt-refused', cid: session.id, rcpt: address.address });
            return callback(refused(err));
          }
          logger.error({ evt: 'rcpt-error', err }, 'recipient check failed');
          callback(refused(reply.storeFailed()));
        },
      );
    },

    onData(stream, session, callback) {
      const tx = txs.get(session.envelope);
      const recipients = [...(tx?.values() ?? [])].map((r) => ({ ...r, user: registry.get(r.user.username) ?? r.user }));
      const started = process.hrtime.bigint();
      inFlight++;
      const id = transactionId();
      deliverMessage(
        intake,
        stream,
        {
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          heloName: session.hostNameAppearsAs || 'unknown',
          remoteAddress: session.remoteAddress,
          tls: Boolean(session.secure),
          id,
        },
        recipients,
      ).then(
        (r) => {
          inFlight--;
          const ms = Number(process.hrtime.bigint() - started) / 1e6;
          logger.info({ evt: 'delivered', copies: r.stored, bytes: r.bytes, mode: r.mode, ms: Math.round(ms * 10) / 10 });
          replies.record(250, '2.0.0');
          callback(null, `2.0.0 Ok: stored encrypted as ${id}`);
        },
        (err: unknown) => {
          inFlight--;
          if (err instanceof MessageTooBig || (stream as { sizeExceeded?: boolean }).sizeExceeded) {
            logger.info({ evt: 'refused', code: 552, enh: '5.3.4' });
            return callback(refused(reply.tooBig(config.limits.maxMessageBytes)));
          }
          if (err instanceof SmtpReply) {
            // Over quota or under the disk floor while the copies were written: nothing was kept.
            logger.info({ evt: 'refused', code: err.responseCode, enh: err.enhanced });
            return callback(refused(err));
          }
          if (isGone(err)) {
            logger.info({ evt: 'aborted', reason: 'client went away during DATA' });
            return callback(refused(reply.storeFailed()));
          }
          // The error's text could in theory quote data; log its name and code only.
          logger.error({ evt: 'store-failed', err, code: 451 }, 'message not stored');
          callback(refused(reply.storeFailed()));
        },
      );
    },
  };

  const server = new SMTPServer(options);
  server.on('error', (err) => logger.warn({ evt: 'smtp-error', err }));
  return {
    server,
    replies,
    async stop() {
      closing = true;
      // Transactions whose DATA is being stored end, stored or refused.
      const deadline = Date.now() + DRAIN_MS;
      while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    },
  };
}

/** SMTP in this process: one listener, this process's ledger and memory budget. */
export async function startSmtp(deps: SmtpDeps): Promise<SmtpListener> {
  const { config } = deps;
  const core = await buildSmtp(deps, {
    space: new SpaceLedger(config, deps.maildir),
    memory: new MemoryBudget(config.limits.memoryBudgetBytes),
    sources: new SourceCounter(config.smtp.maxClientsPerAddress),
  });
  const { server } = core;
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(config.smtp.port, config.smtp.host, () => {
      server.server.off('error', reject);
      resolve();
    });
  });
  const port = (server.server.address() as AddressInfo).port;

  return {
    port,
    replies: () => core.replies.lastHour(),
    async close() {
      await core.stop();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function isGone(err: unknown): boolean {
  return err instanceof Error && /connection closed/i.test(err.message);
}
