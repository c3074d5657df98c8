// System errors (errno codes) as words a person understands. Used wherever a file or
// socket error becomes part of a sentence, so that no raw "EISDIR" or "EADDRINUSE" reaches
// anyone. Node gives only the code; the phrases are ours.

const PHRASES: Record<string, string> = {
  EACCES: 'permission denied (check who owns it and its mode)',
  EPERM: 'the operation is not permitted (check who owns it and its mode)',
  ENOENT: 'it does not exist',
  EEXIST: 'something of that name already exists',
  EISDIR: 'it is a folder, not a file',
  ENOTDIR: 'a part of the path is not a folder',
  ENOTEMPTY: 'the folder is not empty',
  ENOSPC: 'the disk is full',
  EDQUOT: 'the disk quota is exhausted',
  EROFS: 'the file system is read-only',
  EIO: 'the disk reported an input/output error',
  EMFILE: 'too many files are open in this process',
  ENFILE: 'too many files are open on this machine',
  ENAMETOOLONG: 'the name is too long',
  ELOOP: 'the path has too many symbolic links (a loop?)',
  EBUSY: 'it is busy',
  EXDEV: 'it is on another file system',
  EADDRINUSE: 'the address is already in use by another program',
  EADDRNOTAVAIL: 'that address is not one of this machine',
  ECONNREFUSED: 'nothing listens there',
  ECONNRESET: 'the connection was reset',
  EPIPE: 'the other side closed the connection',
  ETIMEDOUT: 'it did not answer in time',
  EHOSTUNREACH: 'the host cannot be reached',
  ENETUNREACH: 'the network cannot be reached',
};

/** The errno code of an error, if it has one. */
export function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? code : undefined;
}

/** "the disk is full", or for an unknown code "system error ECODE"; for no code, null. */
export function errnoPhrase(err: unknown): string | null {
  const code = errnoCode(err);
  if (!code) return null;
  return PHRASES[code] ?? `system error ${code}`;
}

/**
 * A whole sentence for a system error that nobody caught on the way, from what Node puts
 * on it (syscall, path, address, port): "Cannot listen on 127.0.0.1:25: the address is
 * already in use by another program." Null when `err` is not a system error.
 */
export function systemErrorSentence(err: unknown): string | null {
  const phrase = errnoPhrase(err);
  if (!phrase) return null;
  const e = err as { syscall?: unknown; path?: unknown; dest?: unknown; address?: unknown; port?: unknown; code?: string };
  const syscall = typeof e.syscall === 'string' ? e.syscall : '';
  if (syscall === 'listen' || syscall === 'bind' || e.code === 'EADDRINUSE' || e.code === 'EADDRNOTAVAIL') {
    const where = typeof e.address === 'string' ? `${e.address.includes(':') ? `[${e.address}]` : e.address}${e.port !== undefined ? `:${String(e.port)}` : ''}` : 'the configured port';
    const hint = e.code === 'EADDRINUSE' ? '; stop that program or choose another port' : e.code === 'EACCES' ? '; ports below 1024 need root or CAP_NET_BIND_SERVICE' : '';
    return `Cannot listen on ${where}: ${e.code === 'EACCES' ? 'permission denied' : phrase}${hint}.`;
  }
  if (syscall === 'connect' && typeof e.address === 'string') {
    return `Cannot connect to ${e.address}${e.port !== undefined ? `:${String(e.port)}` : ''}: ${phrase}.`;
  }
  const target = typeof e.path === 'string' ? ` ${e.path}` : '';
  const verb: Record<string, string> = {
    open: 'open', read: 'read', write: 'write', mkdir: 'create the folder', rename: 'rename', unlink: 'remove',
    rmdir: 'remove the folder', scandir: 'list the folder', stat: 'look at', lstat: 'look at', fsync: 'save', chmod: 'change the mode of', chown: 'change the owner of', spawn: 'run',
  };
  const action = verb[syscall.replace(/^spawn .*/, 'spawn')] ?? 'use';
  return `Cannot ${action}${target || (action === 'use' ? ' a file' : '')}: ${phrase}.`;
}
