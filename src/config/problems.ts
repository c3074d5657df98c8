// How mistakes in the configuration reach a person: each is one sentence (the schemas in
// kinds.ts and file.ts write them), and ConfigError carries all that were found together.
import type * as z from 'zod';
import { UserError } from './user-error.js';

export class ConfigError extends UserError {
  constructor(readonly problems: string[]) {
    super(`The configuration has ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n- ${problems.join('\n- ')}`);
  }
}

/**
 * The sentences for the issues zod found in the file: each issue's message, except that keys
 * the file should not hold, which zod reports together for each object, get one sentence
 * each. They come in the order of the file's top-level keys, `order`.
 */
export function sentences(issues: readonly z.core.$ZodIssue[], order: readonly string[]): string[] {
  const found = issues.flatMap((iss) =>
    iss.code === 'unrecognized_keys'
      ? iss.keys.map((k) => ({ at: [...iss.path, k], text: `Unknown setting "${[...iss.path, k].join('.')}" in the configuration file.` }))
      : [{ at: iss.path, text: iss.message }],
  );
  const rank = (at: readonly PropertyKey[]) => order.indexOf(String(at[0]));
  return found.sort((a, b) => rank(a.at) - rank(b.at)).map((f) => f.text);
}
