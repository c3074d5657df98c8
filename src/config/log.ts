// Logging (pino): JSON lines by default, or lines a person reads (pino-pretty) when
// stdout is a terminal or log.format says so. Rule of the house: at the default level a
// log line carries counts, codes and durations only: never a mail address, subject,
// message content or client IP. Such details may appear at `debug` alone. Both formats
// print the same fields; the pretty one only lays them out differently.
import { pino, type Logger } from 'pino';
import { build as prettyStream } from 'pino-pretty';
import type { Config } from './index.js';

export type { Logger };

export type LogFormat = 'json' | 'pretty';

/** `auto` becomes `pretty` when the destination is a terminal, else `json`. */
export function resolveLogFormat(format: Config['log']['format'], destination: NodeJS.WritableStream = process.stdout): LogFormat {
  if (format !== 'auto') return format;
  return (destination as { isTTY?: boolean }).isTTY ? 'pretty' : 'json';
}

/** Fields pino adds itself, shown by pino-pretty in the line's head (or not at all). */
const HEAD = new Set(['level', 'time', 'pid', 'hostname', 'svc', 'msg', 'evt']);

function fieldText(v: unknown): string {
  if (v === null || typeof v !== 'object') return String(v);
  const o = v as { host?: unknown; port?: unknown };
  if (Object.keys(v).length === 2 && o.host !== undefined && o.port !== undefined) return `${String(o.host)}:${String(o.port)}`;
  return Object.entries(v as Record<string, unknown>)
    .map(([k, x]) => `${k}:${fieldText(x)}`)
    .join(',');
}

/** "msg (evt) key=value key=value": one readable line whatever the fields. */
function humanLine(log: Record<string, unknown>): string {
  const rest = Object.entries(log)
    .filter(([k]) => !HEAD.has(k))
    .map(([k, v]) => `${k}=${fieldText(v)}`);
  const head = typeof log.msg === 'string' && log.msg ? log.msg : String(log.evt ?? '');
  const evt = log.msg && log.evt && log.msg !== log.evt ? ` [${String(log.evt)}]` : '';
  return `${head}${evt}${rest.length ? `  ${rest.join(' ')}` : ''}`;
}

export function createLogger(level: string = 'info', destination: NodeJS.WritableStream = process.stdout, format: LogFormat = 'json'): Logger {
  const stream =
    format === 'pretty'
      ? prettyStream({
          destination,
          sync: true,
          colorize: Boolean((destination as { isTTY?: boolean }).isTTY),
          translateTime: 'SYS:HH:MM:ss',
          ignore: 'pid,hostname,svc',
          hideObject: true,
          messageFormat: (log) => humanLine(log),
        })
      : destination;
  return pino(
    {
      level,
      base: { svc: 'kzymy' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream as pino.DestinationStream,
  );
}

/** A logger that writes nothing (library use, tests). */
export const silentLogger: Logger = pino({ level: 'silent' });
