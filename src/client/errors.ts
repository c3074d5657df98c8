// kzymy-client's errors: one sentence for the user and an exit code.
// The class keeps the name "Error" so that src/cli/errors.ts prints the sentence as it is
// and honours `exitCode`.

/** Exit codes of kzymy-client: 1 a problem the user can fix, 2 wrong usage, 75 temporary (EX_TEMPFAIL). */
export const EXIT_FIX = 1;
export const EXIT_USAGE = 2;
export const EXIT_TEMPFAIL = 75;

export class ClientError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FIX,
  ) {
    super(message);
  }

  get temporary(): boolean {
    return this.exitCode === EXIT_TEMPFAIL;
  }
}

/** Wrong usage (a missing or conflicting option): exit 2. */
export function usageError(message: string): ClientError {
  return new ClientError(message, EXIT_USAGE);
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
    super(message, status >= 500 || status === 429 ? EXIT_TEMPFAIL : EXIT_FIX);
  }
}

/** A message could not be delivered locally (the others may still be). */
export class DeliveryError extends ClientError {}
