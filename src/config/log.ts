// JSON-lines logging (pino). Rule of the house: at the default
// level a log line carries counts, codes and durations only: never a mail address,
// subject, message content or client IP. Such details may appear at `debug` alone.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string = 'info', destination: NodeJS.WritableStream = process.stdout): Logger {
  return pino(
    {
      level,
      base: { svc: 'kzymy' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination as pino.DestinationStream,
  );
}

/** A logger that writes nothing (library use, tests). */
export const silentLogger: Logger = pino({ level: 'silent' });
