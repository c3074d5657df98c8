// A private tmpfs for a suite: mounted before its tests (root only: fails under CI when not
// root, skips loudly elsewhere), unmounted after them, lazily when a server still holds it.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { inCI, requireBinaries, tempDir } from './env.js';

const run = promisify(execFile);

/** Declares the suite's tmpfs of `size` (mount's size=, e.g. '20m'); `dir()` is its mount point. */
export function useTmpfs(size: string, prefix = 'kzymy-tmpfs-'): { dir(): string } {
  let mnt: { dir: string; cleanup: () => Promise<void> } | null = null;
  let mounted = false;
  before(async function () {
    if (process.getuid?.() !== 0) {
      const line = 'mounting a tmpfs needs root';
      if (inCI) throw new Error(line);
      console.warn(`\n  !!! SKIPPING "${this.test?.parent?.fullTitle() ?? 'suite'}": ${line}\n`);
      this.skip();
    }
    requireBinaries(this, 'mount', 'umount');
    mnt = await tempDir(prefix);
    await run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', mnt.dir]);
    mounted = true;
  });
  after(async function () {
    if (mounted) await run('umount', [mnt!.dir]).catch(() => run('umount', ['-l', mnt!.dir]));
    await mnt?.cleanup();
  });
  return { dir: () => mnt!.dir };
}
