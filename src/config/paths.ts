// Looking up executables on PATH: tor.manage defaults to on when a tor executable is there.
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

/** True if an executable named `name` is on PATH. */
export function onPath(name: string, envPath = process.env.PATH ?? ''): boolean {
  for (const dir of envPath.split(path.delimiter)) {
    if (!dir) continue;
    try {
      accessSync(path.join(dir, name), constants.X_OK);
      return true;
    } catch {
      // keep looking
    }
  }
  return false;
}
