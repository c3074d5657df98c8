// Who connects to a TCP port on 127.0.0.1? A watcher for e2e tests: it reads the kernel's
// socket tables (/proc/net/tcp, /proc/net/tcp6) every few milliseconds and, for every
// connection to the port, finds the process that holds the connecting socket (through
// /proc/PID/fd). Every connection leaves an entry for at least 60 s (one of its two ends
// sits in TIME_WAIT after the close), so a connection cannot pass unseen; one so short that
// its owner could not be found in time is reported as unattributed, never as innocent.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

export interface WatchedConnection {
  /** "ADDRESS:PORT" of the connecting end. */
  peer: string;
  /** PIDs seen holding the connecting socket (usually one). */
  owners: number[];
  /** Their /proc/PID/comm, same order. */
  commands: string[];
  /** TCP states seen, in order (the kernel's hex codes: 01 ESTABLISHED, 06 TIME_WAIT, ...), "s"/"c" for the server's or the connecting end. */
  states: string[];
}

export interface PortWatch {
  /** Every connection to the port seen so far. */
  connections(): WatchedConnection[];
  /** Samples taken so far. */
  samples(): number;
  /** Resolves once `pred` holds for a connection, polling; rejects after timeoutMs. */
  waitFor(pred: (c: WatchedConnection) => boolean, timeoutMs?: number): Promise<WatchedConnection>;
  stop(): void;
}

interface Entry {
  local: string;
  localPort: number;
  remote: string;
  remotePort: number;
  state: string;
  inode: number;
}

const LISTEN = '0A';

function hexToIp(hex: string): string {
  if (hex.length === 8) {
    // One little-endian 32-bit word.
    return [6, 4, 2, 0].map((i) => parseInt(hex.slice(i, i + 2), 16)).join('.');
  }
  // IPv6: four little-endian 32-bit words; shown as hex groups (only compared, never parsed).
  const words = [0, 8, 16, 24].map((i) => hex.slice(i, i + 8).match(/../g)!.reverse().join(''));
  const v6 = words.join('').match(/.{4}/g)!.join(':').toLowerCase();
  // ::ffff:127.0.0.1 (an IPv4 peer on a dual-stack socket)
  if (v6.startsWith('0000:0000:0000:0000:0000:ffff:')) return hexToIp(words[3]!.match(/../g)!.reverse().join(''));
  return v6;
}

function parseTable(file: string): Entry[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: Entry[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [la, lp] = f[1]!.split(':');
    const [ra, rp] = f[2]!.split(':');
    out.push({ local: hexToIp(la!), localPort: parseInt(lp!, 16), remote: hexToIp(ra!), remotePort: parseInt(rp!, 16), state: f[3]!, inode: Number(f[9]) });
  }
  return out;
}

/** The socket inodes PID holds now (empty when it is gone). */
function socketsOf(pid: number): Set<number> {
  const found = new Set<number>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return found;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) found.add(Number(m[1]));
    } catch {
      // closed meanwhile
    }
  }
  return found;
}

/** Any process holding socket `inode`, or null. */
function anyOwnerOf(inode: number): number | null {
  for (const pid of readdirSync('/proc')) {
    if (/^\d+$/.test(pid) && socketsOf(Number(pid)).has(inode)) return Number(pid);
  }
  return null;
}

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/**
 * Watches connections to host:port. `preferred` gives PIDs to look at first when finding
 * a socket's owner (the expected one: it makes finding it a matter of microseconds).
 */
export function watchPort(port: number, opts: { host?: string; intervalMs?: number; preferred?: () => number[] } = {}): PortWatch {
  const host = opts.host ?? '127.0.0.1';
  const intervalMs = opts.intervalMs ?? 5;
  const conns = new Map<string, { owners: Map<number, string>; states: string[] }>();
  const seenInodes = new Set<number>();
  let samples = 0;

  const sample = (): void => {
    samples++;
    // The expected owners' sockets are read just before and just after the socket table:
    // a socket of theirs seen open in the table is in one of the two snapshots unless it
    // lived less than the table read itself.
    const preferred = opts.preferred?.() ?? [];
    const before = new Map<number, number>();
    for (const pid of preferred) for (const inode of socketsOf(pid)) before.set(inode, pid);
    const pending: Array<{ inode: number; c: { owners: Map<number, string> } }> = [];
    for (const e of [...parseTable('/proc/net/tcp'), ...parseTable('/proc/net/tcp6')]) {
      if (e.state === LISTEN) continue;
      let peer: string | null = null;
      let connecting = false;
      if (e.local === host && e.localPort === port) peer = `${e.remote}:${e.remotePort}`; // the server's end
      else if (e.remote === host && e.remotePort === port) {
        peer = `${e.local}:${e.localPort}`; // the connecting end
        connecting = true;
      }
      if (!peer) continue;
      let c = conns.get(peer);
      if (!c) conns.set(peer, (c = { owners: new Map(), states: [] }));
      const st = `${connecting ? 'c' : 's'}${e.state}`;
      if (!c.states.includes(st)) c.states.push(st);
      // inode 0: the socket was closed already (an orphan in FIN_WAIT or TIME_WAIT).
      if (connecting && e.inode !== 0 && !seenInodes.has(e.inode)) pending.push({ inode: e.inode, c });
    }
    if (!pending.length) return;
    const after = new Map<number, number>();
    for (const pid of preferred) for (const inode of socketsOf(pid)) after.set(inode, pid);
    for (const { inode, c } of pending) {
      const pid = before.get(inode) ?? after.get(inode) ?? anyOwnerOf(inode);
      if (pid === null) continue; // gone: try again next time, if it is still listed
      seenInodes.add(inode);
      c.owners.set(pid, comm(pid));
    }
  };

  sample();
  const timer = setInterval(sample, intervalMs);
  const list = (): WatchedConnection[] =>
    [...conns].map(([peer, c]) => ({ peer, owners: [...c.owners.keys()], commands: [...c.owners.values()], states: c.states }));

  return {
    connections: list,
    samples: () => samples,
    async waitFor(pred, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = list().find(pred);
        if (hit) return hit;
        if (Date.now() > deadline) throw new Error(`no connection to ${host}:${port} matched within ${timeoutMs} ms; seen: ${JSON.stringify(list())}`);
        await new Promise((r) => setTimeout(r, intervalMs));
      }
    },
    stop: () => clearInterval(timer),
  };
}
