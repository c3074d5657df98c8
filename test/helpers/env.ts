// Shared test environment helpers: temporary folders, required system binaries, a stepped clock.
import { mkdtemp, rm } from 'node:fs/promises';
import { accessSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** True when running in CI: a missing system binary is then a failure, never a skip. */
export const inCI = process.env.CI === 'true' || process.env.CI === '1';

/** Absolute path of an executable on PATH, or null. */
export function which(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  // Debian puts postfix's tools under /usr/sbin, which a non-root PATH may lack.
  for (const dir of ['/usr/sbin', '/sbin']) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here either
    }
  }
  return null;
}

/**
 * Call in a mocha `before` hook: skips the suite loudly on a developer machine when a
 * binary is missing, and fails it under CI=true (scripts/test.sh installs them all).
 */
export function requireBinaries(ctx: Mocha.Context, ...names: string[]): void {
  const missing = names.filter((n) => which(n) === null);
  if (missing.length === 0) return;
  const line = `missing system binaries: ${missing.join(', ')} (run scripts/test.sh as root, or apt-get install them)`;
  if (inCI) throw new Error(line);
  console.warn(`\n  !!! SKIPPING "${ctx.test?.parent?.fullTitle() ?? 'suite'}": ${line}\n`);
  ctx.skip();
}

/** A fresh temporary directory; remove it with the returned cleanup. */
export async function tempDir(prefix = 'kzymy-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * Runs `fn` with Date.now() moved `stepMs` ahead, as an NTP step of the system clock would
 * move it, and gives `fn` the true time plus the step. MOCK, for a fault a test cannot cause
 * for real (stepping the machine's clock would disturb everything else on it); the monotonic
 * clock (performance.now()) does not move.
 */
export async function withClockStepped<T>(stepMs: number, fn: (steppedNow: () => number) => T | Promise<T>): Promise<T> {
  const realNow = Date.now;
  const steppedNow = () => realNow() + stepMs;
  Date.now = steppedNow;
  try {
    return await fn(steppedNow);
  } finally {
    Date.now = realNow;
  }
}
