// Logging (pino): JSON lines by default, or lines a person reads (pino-pretty) when
// stdout is a terminal or log.format says so. Rule of the house: at the default level a
// log line carries counts, codes and durations only: never a mail address, subject,
// message content or client IP. Such details may appear at `debug` alone. Both formats
// print the same fields; the pretty one only lays them out differently.
//
// The rule is the logger's own, not each caller's: above `debug`, an error (under `err` or
// `error`, or logged alone) is reduced to its name and code, its message and stack never
// written (they may hold an address or a path); and fields that name an address, a sender,
// a recipient, a subject or an IP are replaced by "[hidden]" wherever a line carries them.
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

/** Field names hidden above `debug`, at the top of a line or one level down. */
export const HIDDEN_FIELDS = ['address', 'addresses', 'remoteAddress', 'ip', 'clientIp', 'from', 'to', 'mailFrom', 'rcpt', 'rcptTo', 'recipient', 'recipients', 'sender', 'subject', 'email'];

const DETAILED = new Set(['debug', 'trace']);

/** An error as a log line may carry it: name and code (and, at debug, message and stack). */
export function errorFields(err: unknown, detailed = false): Record<string, unknown> {
  if (err === null || typeof err !== 'object') return { name: typeof err };
  const e = err as { name?: unknown; code?: unknown; message?: unknown; stack?: unknown; cause?: { code?: unknown } };
  const code = e.code ?? e.cause?.code;
  return {
    name: typeof e.name === 'string' ? e.name : 'Error',
    ...(code === undefined || code === null ? {} : { code: String(code) }),
    ...(detailed ? { message: String(e.message ?? ''), stack: typeof e.stack === 'string' ? e.stack : undefined } : {}),
  };
}

export function createLogger(level: string = 'info', destination: NodeJS.WritableStream = process.stdout, format: LogFormat = 'json'): Logger {
  const detailed = DETAILED.has(level);
  const errSerializer = (err: unknown): Record<string, unknown> => errorFields(err, detailed);
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
      serializers: { err: errSerializer, error: errSerializer },
      // An error logged alone would lend pino its message as the line's text: its name instead.
      hooks: {
        logMethod(args, method) {
          const [first, second, ...rest] = args as unknown[];
          if (!detailed && first instanceof Error) {
            return method.apply(this, [{ err: first }, typeof second === 'string' ? second : first.name, ...rest] as Parameters<typeof method>);
          }
          // The same for an object that carries an error and no text of its own.
          const carried = first !== null && typeof first === 'object' ? ((first as { err?: unknown }).err ?? (first as { error?: unknown }).error) : undefined;
          if (!detailed && carried instanceof Error && typeof second !== 'string') {
            const evt = (first as { evt?: unknown }).evt;
            return method.apply(this, [first, typeof evt === 'string' ? evt : carried.name] as Parameters<typeof method>);
          }
          return method.apply(this, args);
        },
      },
      ...(detailed ? {} : { redact: { paths: HIDDEN_FIELDS.flatMap((f) => [f, `*.${f}`]), censor: '[hidden]' } }),
    },
    stream as pino.DestinationStream,
  );
}

/** A logger that writes nothing (library use, tests). */
export const silentLogger: Logger = pino({ level: 'silent' });
