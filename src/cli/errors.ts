// How both command lines end on a problem: one sentence on stderr, a meaningful exit
// code, never a stack trace. A UserError is shown as it is; an error of the system (errno)
// as a sentence about it; anything else is a bug, shown as one neutral sentence, its stack
// added under KZYMY_DEBUG=1.
import { EXIT_USAGE, UserError } from '../config/user-error.js';
import { systemErrorSentence } from '../config/errno.js';

/** Wrong usage: exit 2. */
export class UsageError extends UserError {
  constructor(message: string) {
    super(message, EXIT_USAGE);
  }
}

/** What `prog` prints for `err`, and the exit code. */
export function describeFailure(prog: string, err: unknown): { text: string; code: number } {
  if (err instanceof UserError) return { text: err.message, code: err.exitCode };
  const system = systemErrorSentence(err);
  if (system !== null) return { text: system, code: 1 };
  const name = err instanceof Error ? err.name : typeof err;
  return { text: `${prog} stopped on an unexpected problem (${name}): run it again with KZYMY_DEBUG=1 to see where, and report it.`, code: 1 };
}

/** Exit codes: 1 a problem the user can fix, 2 wrong usage, 75 temporary (EX_TEMPFAIL). */
export function exitWith(prog: string, err: unknown): never {
  const { text, code } = describeFailure(prog, err);
  process.stderr.write(`${prog}: ${text}\n`);
  if (process.env.KZYMY_DEBUG === '1' && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
  process.exit(code);
}
