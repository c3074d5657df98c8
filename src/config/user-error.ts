// The one kind of error that is shown to a person as it is: its message is a sentence that
// says what went wrong and what to do, and it carries the exit code a command ends with.
// Anything else that reaches a command line is a bug in kzymy: printed as one neutral
// sentence, with its stack only under KZYMY_DEBUG=1 (src/cli/errors.ts).

/** Exit codes: 1 a problem the user can fix, 2 wrong usage, 75 temporary (EX_TEMPFAIL). */
export const EXIT_FIX = 1;
export const EXIT_USAGE = 2;
export const EXIT_TEMPFAIL = 75;

export class UserError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FIX,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}
