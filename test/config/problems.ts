// The sentences of the ConfigError that `fn` throws (fails the test when it throws none).
import { expect } from 'chai';
import { ConfigError } from '../../src/config/index.js';

export function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return expect.fail('expected a ConfigError');
}
