// How both command lines end on a problem: one sentence on stderr, a meaningful exit
// code, never a stack trace. KZYMY_DEBUG=1 adds the stack for developers.
import { ConfigError } from '../config/index.js';
import { systemErrorSentence } from '../config/errno.js';

/** Wrong usage: exit 2. */
export class UsageError extends Error {
  readonly exitCode = 2;
}

/** Exit codes: 1 a problem the user can fix, 2 wrong usage, 75 temporary (EX_TEMPFAIL). */
export function exitWith(prog: string, err: unknown): never {
  let code = 1;
  let text: string;
  const system = systemErrorSentence(err);
  if (err instanceof ConfigError) text = err.message;
  else if (system !== null && !(typeof (err as { exitCode?: unknown }).exitCode === 'number')) text = system;
  else if (err instanceof Error && err.name !== 'Error' && !/^[A-Z]/.test(err.message)) {
    text = `unexpected ${err.name}: ${err.message}`;
  } else if (err instanceof Error) {
    text = err.message;
    const given = (err as { exitCode?: number }).exitCode;
    if (typeof given === 'number') code = given;
  } else text = String(err);
  process.stderr.write(`${prog}: ${text}\n`);
  if (process.env.KZYMY_DEBUG === '1' && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
  process.exit(code);
}
