// Every connect() a program makes, recorded by strace: a deterministic record of where a
// browser or kzymy-client tried to go (nothing is sampled, nothing can slip between samples).
import { chmod, readFile, writeFile } from 'node:fs/promises';

export interface Connect {
  pid: number;
  family: 'inet' | 'inet6' | 'unix' | 'other';
  /** The socket's protocol as strace names it: TCP, TCPv6, UDP, UDPv6, UNIX-STREAM, ... */
  protocol: string;
  /** IP address (inet, inet6) or socket path (unix). */
  address: string;
  port: number | null;
  line: string;
}

/**
 * strace arguments that run `cmd ARGS` and log its connect() calls (threads and children
 * included) to `logFile`. `followExec: false` stops following at a child's execve (for
 * a program whose children, like gpg or esbuild, could outlive it as daemons).
 */
export function traced(logFile: string, cmd: string, args: string[], opts: { followExec?: boolean } = {}): { cmd: string; args: string[] } {
  const follow = opts.followExec ?? true;
  return {
    cmd: 'strace',
    args: ['-f', '-yy', ...(follow ? ['--seccomp-bpf'] : ['-b', 'execve']), '-qq', '-e', 'trace=connect', '-e', 'signal=none', '-o', logFile, cmd, ...args],
  };
}

/** A shell script that runs `program` under strace (for tools that take an executable path, like playwright). */
export async function tracedExecutable(scriptFile: string, logFile: string, program: string): Promise<string> {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const t = traced(logFile, program, []);
  await writeFile(scriptFile, `#!/bin/sh\nexec ${[t.cmd, ...t.args].map(q).join(' ')} "$@"\n`);
  await chmod(scriptFile, 0o755);
  return scriptFile;
}

/** The connect() calls in an strace log. */
export async function readConnects(logFile: string): Promise<Connect[]> {
  let text = '';
  try {
    text = await readFile(logFile, 'utf8');
  } catch {
    return [];
  }
  const out: Connect[] = [];
  for (const line of text.split('\n')) {
    // 123 connect(19<TCP:[456]>, {sa_family=AF_INET, sin_port=htons(1), sin_addr=inet_addr("127.0.0.1")}, 16) = ...
    const m = /^(\d+)\s+connect\(\d+(?:<([^:>]+)[^,]*)?, \{sa_family=(AF_\w+)(.*)$/.exec(line);
    if (!m) continue;
    const pid = Number(m[1]);
    const protocol = m[2] ?? '?';
    const rest = m[4]!;
    const family = m[3]!;
    if (family === 'AF_INET') {
      const a = /sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)/.exec(rest);
      out.push({ pid, family: 'inet', protocol, address: a?.[2] ?? '?', port: a ? Number(a[1]) : null, line });
    } else if (family === 'AF_INET6') {
      const a = /sin6_port=htons\((\d+)\).*inet_pton\(AF_INET6, "([^"]+)"/.exec(rest);
      out.push({ pid, family: 'inet6', protocol, address: a?.[2] ?? '?', port: a ? Number(a[1]) : null, line });
    } else if (family === 'AF_UNIX') {
      out.push({ pid, family: 'unix', protocol, address: /sun_path=@?"([^"]*)"/.exec(rest)?.[1] ?? '', port: null, line });
    } else {
      out.push({ pid, family: 'other', protocol, address: family, port: null, line });
    }
  }
  return out;
}

/** The TCP connections among them, as "ADDRESS:PORT". */
export function tcpTargets(connects: Connect[]): string[] {
  return connects.filter((c) => c.protocol.startsWith('TCP')).map((c) => `${c.address}:${c.port}`);
}

/** The other IP connects (UDP, ...: a connect() that sends nothing by itself), as "PROTOCOL ADDRESS:PORT". */
export function otherIpTargets(connects: Connect[]): string[] {
  return connects
    .filter((c) => (c.family === 'inet' || c.family === 'inet6') && !c.protocol.startsWith('TCP'))
    .map((c) => `${c.protocol} ${c.address}:${c.port}`);
}
