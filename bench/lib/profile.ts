// Summarises a V8 .cpuprofile (node --cpu-prof): self time by function and by component.
import { readFile } from 'node:fs/promises';
import path from 'node:path';

interface CpuNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: CpuNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  totalMs: number;
  /** [component, ms, share of busy time] — busy = everything but (idle). A native frame counts
   *  for the JavaScript that called it (fs, net, crypto). */
  components: Array<[string, number, number]>;
  /** The same time by owner: the nearest kzymy or npm frame up the stack (who asked for the work). */
  owners: Array<[string, number, number]>;
  /** [function @ file:line, ms, share of busy time] */
  functions: Array<[string, number, number]>;
  idleMs: number;
}

/** Which part of the system a frame belongs to. */
function component(url: string, fn: string, root: string): string {
  if (!url) {
    if (fn === '(garbage collector)') return 'V8 garbage collector';
    if (fn === '(idle)') return '(idle)';
    if (fn === '(program)') return 'V8/native (program)';
    return `native: ${fn || '(anonymous)'}`;
  }
  const u = url.replace(/^file:\/\//, '');
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
  if (nm) return `npm: ${nm[1]}`;
  if (u.startsWith('node:')) return `node: ${u.slice(5).split('/').slice(0, 2).join('/')}`;
  const rel = path.relative(root, u);
  if (!rel.startsWith('..')) {
    const parts = rel.split(path.sep);
    // dist/smtp/intake.js -> kzymy: smtp
    return `kzymy: ${parts.length > 2 ? parts[1] : parts[0]}`;
  }
  return u;
}

/**
 * `window`: only the samples taken between these two times, in seconds of the monotonic clock
 * (process.hrtime, which is the clock V8 stamps its samples with on Linux), e.g. to leave the
 * server's start out.
 */
export async function summariseProfile(file: string, root: string, top = 15, window?: [number, number]): Promise<ProfileSummary> {
  const p = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, CpuNode>(p.nodes.map((n) => [n.id, n]));
  // Self time per node from the samples and their time deltas (more exact than hitCount).
  const self = new Map<number, number>();
  let at = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    at += p.timeDeltas[i] ?? 0;
    if (window && (at < window[0] * 1e6 || at > window[1] * 1e6)) continue;
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
    self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + dt);
  }
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const special = new Set(['(garbage collector)', '(idle)', '(program)', '(root)']);
  /** Leaf component; a native function takes the component of its nearest JavaScript caller. */
  const leafComponent = (n: CpuNode): string => {
    const { functionName, url } = n.callFrame;
    if (url || special.has(functionName)) return component(url, functionName, root);
    for (let id = parent.get(n.id); id !== undefined; id = parent.get(id)) {
      const a = byId.get(id)!;
      if (a.callFrame.url) return `${component(a.callFrame.url, a.callFrame.functionName, root)} (native)`;
    }
    return component(url, functionName, root);
  };
  const ownerOf = (n: CpuNode): string => {
    if (special.has(n.callFrame.functionName)) return component('', n.callFrame.functionName, root);
    for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
      const a = byId.get(id)!;
      const c = a.callFrame.url ? component(a.callFrame.url, a.callFrame.functionName, root) : '';
      if (c.startsWith('kzymy:') || c.startsWith('npm:')) return c;
    }
    return 'node/V8 only (no kzymy or npm frame on the stack)';
  };
  const comps = new Map<string, number>();
  const owners = new Map<string, number>();
  const fns = new Map<string, number>();
  let idleMs = 0;
  let totalMs = 0;
  for (const [id, ms] of self) {
    const n = byId.get(id);
    if (!n) continue;
    totalMs += ms;
    const { functionName, url, lineNumber } = n.callFrame;
    const c = leafComponent(n);
    if (c === '(idle)') {
      idleMs += ms;
      continue;
    }
    comps.set(c, (comps.get(c) ?? 0) + ms);
    const o = ownerOf(n);
    owners.set(o, (owners.get(o) ?? 0) + ms);
    const where = url ? `${path.relative(root, url.replace(/^file:\/\//, '')) || url}:${lineNumber + 1}` : 'native';
    const key = `${functionName || '(anonymous)'} @ ${where.replace(/^node_modules\//, '')}`;
    fns.set(key, (fns.get(key) ?? 0) + ms);
  }
  const busy = totalMs - idleMs;
  const sorted = (m: Map<string, number>) =>
    [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]): [string, number, number] => [k, v, busy ? v / busy : 0]);
  return { totalMs, idleMs, components: sorted(comps), owners: sorted(owners), functions: sorted(fns) };
}
