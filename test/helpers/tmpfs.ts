// Private tmpfs file systems for tests (root only: fails under CI when not root, skips
// loudly elsewhere). `mountTmpfs` mounts one inside a single test or hook; `useTmpfs`
// mounts one for a whole suite. Unmounting detaches lazily when something still holds it.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { inCI, requireBinaries, tempDir } from './env.js';

const run = promisify(execFile);

/** A mounted tmpfs: `dir` is its mount point; `unmount()` may be called more than once. */
export interface Tmpfs {
  dir: string;
  unmount(): Promise<void>;
}

/** The title the skip line names: the test itself, or a hook's suite. */
function titleOf(ctx: Mocha.Context): string {
  const r = ctx.test as Mocha.Hook | Mocha.Test | undefined;
  if (r?.type === 'test') return r.fullTitle();
  return r?.parent?.fullTitle() ?? 'suite';
}

/**
 * Mounts a tmpfs of `size` (mount's size=, e.g. '4m', mode 0700). With a prefix (the
 * default is 'kzymy-tmpfs-') the mount point is a fresh temporary directory that
 * `unmount()` removes; with `{ at }` it is that existing directory, which stays in place.
 */
export async function mountTmpfs(ctx: Mocha.Context, size: string, where: string | { at: string } = 'kzymy-tmpfs-'): Promise<Tmpfs> {
  if (process.getuid?.() !== 0) {
    const line = 'mounting a tmpfs needs root';
    if (inCI) throw new Error(line);
    console.warn(`\n  !!! SKIPPING "${titleOf(ctx)}": ${line}\n`);
    ctx.skip();
  }
  requireBinaries(ctx, 'mount', 'umount');
  const own = typeof where === 'string' ? await tempDir(where) : null;
  const dir = own?.dir ?? (where as { at: string }).at;
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  } catch (err) {
    await own?.cleanup();
    throw err;
  }
  let unmounted: Promise<void> | null = null;
  return {
    dir,
    unmount: () =>
      (unmounted ??= (async () => {
        await run('umount', [dir]).catch(() => run('umount', ['-l', dir]));
        await own?.cleanup();
      })()),
  };
}

/** Declares the suite's tmpfs of `size` (mount's size=, e.g. '20m'); `dir()` is its mount point. */
export function useTmpfs(size: string, prefix = 'kzymy-tmpfs-'): { dir(): string } {
  let mnt: Tmpfs | null = null;
  before(async function () {
    mnt = await mountTmpfs(this, size, prefix);
  });
  after(async function () {
    await mnt?.unmount();
  });
  return { dir: () => mnt!.dir };
}
