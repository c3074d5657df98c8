// kzymy-client's errors: one sentence for the user and an exit code (UserError).
import { EXIT_FIX, EXIT_TEMPFAIL, EXIT_USAGE, UserError } from '../config/user-error.js';

/**
 * Exit codes of kzymy-client: 1 a problem the user can fix, 2 wrong usage, 8 another fetch
 * holds the profile (./lock.ts), 75 temporary
 * (EX_TEMPFAIL), 76 the server misbehaved (EX_PROTOCOL: it sent what kzymy's protocol never
 * sends, such as a challenge that is not in kzymy's format, or a fingerprint other than the key's).
 */
export { EXIT_FIX, EXIT_TEMPFAIL, EXIT_USAGE };
export const EXIT_PROTOCOL = 76;

/**
 * Text from the server, made safe for a terminal: ANSI escape sequences and every other
 * control character (C0, DEL, C1) are removed, so nothing the server says can move the
 * cursor, clear the screen, change colours or overwrite a line with a carriage return.
 */
export function printable(text: string): string {
  /* eslint-disable no-control-regex -- matching control characters is the point here */
  return String(text)
    .replace(/(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]/g, '')
    .replace(/\x1b[@-_]/g, '')
    .replace(/[\x00-\x1f\x7f-\x9f]/g, '');
  /* eslint-enable no-control-regex */
}

export class ClientError extends UserError {
  constructor(message: string, exitCode: number = EXIT_FIX, options?: ErrorOptions) {
    super(message, exitCode, options);
  }

  get temporary(): boolean {
    return this.exitCode === EXIT_TEMPFAIL;
  }
}

/** Wrong usage (a missing or conflicting option): exit 2. */
export function usageError(message: string): ClientError {
  return new ClientError(message, EXIT_USAGE);
}

/** The server sent something kzymy's protocol never sends: exit 76, nothing more is sent. */
export function protocolError(message: string): ClientError {
  return new ClientError(message, EXIT_PROTOCOL);
}

/** A temporary problem (server or tor unreachable, MDA exit 75): try again later. */
export function tempError(message: string): ClientError {
  return new ClientError(message, EXIT_TEMPFAIL);
}

/** An answer of the kzymy API other than 2xx, with the server's own sentence. */
export class ApiError extends ClientError {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(printable(message), status >= 500 || status === 429 ? EXIT_TEMPFAIL : EXIT_FIX);
  }
}

/** A message could not be delivered locally (the others may still be). */
export class DeliveryError extends ClientError {}
