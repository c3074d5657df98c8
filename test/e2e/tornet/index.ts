// A private Tor network on 127.0.0.1 for end-to-end tests, built the way Tor's chutney
// builds one (the templates and code are kzymy's own): 3 directory authorities, a few
// non-exit relays, a client with a SOCKS port, and onion services on demand.
// Launch order and settings were found by trying (chutney's templates as the model):
// see docs/testing.md for the why of each step and the timings measured.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SocksProxyAgent } from 'socks-proxy-agent';

const TEMPLATES = fileURLToPath(new URL('./templates/', import.meta.url));
const POLL_MS = 100;
const AUTHORITIES = 3;
/**
 * Seconds between votes, initial and regular (default). Vote + dist delay (2 + 2) must be
 * below it. Onionbalance's --is-testnet mode computes time periods for 20 s votes (chutney's).
 */
const VOTING_INTERVAL = 10;
/** The first vote of the authorities comes this many seconds after launch. */
const FIRST_VOTE_AFTER_S = 3;
const GENCERT_PASSPHRASE = 'kzymy-tornet';
/** Notice, plus the rend domain at info: "Uploaded hidden service descriptor" is logged at info. */
const SERVICE_LOG_LEVELS = '[rend]info notice';

export interface TorNetworkOptions {
  /** Working folder: one sub-folder per tor (keys, torrc, notice.log, stdout.log). */
  dir: string;
  /** Progress lines (e.g. console.log). */
  log?: (line: string) => void;
  /** Non-exit relays besides the 3 authorities (default 3: 6 relays in all). */
  relays?: number;
  /** tor and tor-gencert executables (default: from PATH). */
  tor?: string;
  gencert?: string;
  /** Whole start-up budget (default 120 s). */
  timeoutMs?: number;
  /** Seconds between votes (default 10; 20 for Onionbalance's --is-testnet time periods). */
  votingInterval?: number;
}

export interface TorNode {
  name: string;
  role: 'authority' | 'relay' | 'client' | 'onion-service' | 'controller';
  dir: string;
  /** Tor's notice-level log. */
  logFile: string;
  pid: number;
  orPort?: number;
  dirPort?: number;
  socksPort?: number;
}

export interface OnionService {
  address: string;
  pid: number;
  dir: string;
  logFile: string;
  stop(): Promise<void>;
}

/** A client tor with a control port (cookie authentication), for a controller such as Onionbalance. */
export interface ControlledTor {
  controlPort: number;
  /** Its SOCKS port, when asked for one (else 0). */
  socksPort: number;
  pid: number;
  dir: string;
  logFile: string;
  stop(): Promise<void>;
}

export interface WaitForOnionOptions {
  /** Path to GET (default "/"). */
  path?: string;
  /** Give up after this long (default 120 s). */
  timeoutMs?: number;
  /** The service's tor log: first wait there for "Uploaded hidden service descriptor". */
  serviceLogFile?: string;
}

export interface OnionAnswer {
  status: number;
  body: string;
  attempts: number;
  /** From the call to the answer, waiting for the descriptor upload included. */
  ms: number;
}

export interface TorNetwork {
  dir: string;
  socksPort: number;
  nodes: TorNode[];
  /** Milliseconds from launching the authorities and relays. */
  timings: { keysMs: number; consensusMs: number; clientReadyMs: number };
  /**
   * torrc lines an onion-service tor needs to join this network (kzymy's managed tor
   * takes them as config.tor.extraConfig). With logFile, also a notice log there, to
   * pass to waitForOnion as serviceLogFile.
   */
  onionServiceTorrcLines(opts?: { logFile?: string }): string[];
  /** A demo onion service (its own tor) whose port 80 goes to 127.0.0.1:targetPort. */
  startOnionService(opts: { targetPort: number; name?: string; timeoutMs?: number; onionbalanceFrontend?: string }): Promise<OnionService>;
  /**
   * Another client tor of this network, with a control port and (with `socks`) a SOCKS port:
   * a client whose caches start empty. Resolves once it has bootstrapped.
   */
  startControlledTor(opts?: { name?: string; socks?: boolean; socksTimeoutS?: number; timeoutMs?: number }): Promise<ControlledTor>;
  /** Real readiness: GET http://ADDRESS/PATH through the SOCKS port until it answers. */
  waitForOnion(address: string, opts?: WaitForOnionOptions): Promise<OnionAnswer>;
  /** SIGTERM every tor of this network, SIGKILL stragglers after 5 s; waits for all. */
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------------
// Child process bookkeeping: whatever happens, no tor of ours outlives this process.

interface Proc {
  node: TorNode;
  child: ChildProcess;
  exited: { code: number | null; signal: NodeJS.Signals | null } | null;
  done: Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

async function stopProcs(procs: Proc[]): Promise<void> {
  for (const p of procs) if (!p.exited) p.child.kill('SIGTERM');
  const timer = setTimeout(() => {
    for (const p of procs) if (!p.exited) p.child.kill('SIGKILL');
  }, 5_000);
  try {
    await Promise.all(procs.map((p) => p.done));
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------
// Small helpers.

/** n distinct free TCP ports on 127.0.0.1 (bound to port 0 together, then released). */
export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      servers.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => resolve());
      });
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

/** Fills ${name} fields of one of our templates; an unknown field is an error. */
async function template(name: string, values: Record<string, string | number>): Promise<string> {
  const text = await readFile(path.join(TEMPLATES, name), 'utf8');
  return text.replace(/\$\{(\w+)\}/g, (_m, key: string) => {
    const v = values[key];
    if (v === undefined) throw new Error(`tornet template ${name} uses \${${key}}, which has no value`);
    return String(v);
  });
}

function run(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', (e) => reject(new Error(`${cmd} cannot be run: ${e.message}`)));
    child.once('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} failed with code ${code}:\n${out}`));
    });
    child.stdin.end(input ?? '');
  });
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return '';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tail(text: string, lines = 8): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

// ---------------------------------------------------------------------------------

/** Starts the whole network and resolves once the client has bootstrapped. */
export async function startTorNetwork(opts: TorNetworkOptions): Promise<TorNetwork> {
  installExitHook();
  const dir = path.resolve(opts.dir);
  const say = opts.log ?? (() => {});
  const tor = opts.tor ?? 'tor';
  const gencert = opts.gencert ?? 'tor-gencert';
  const relayCount = opts.relays ?? 3;
  const votingInterval = opts.votingInterval ?? VOTING_INTERVAL;
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  const procs: Proc[] = [];
  const emptyDefaults = path.join(dir, 'torrc-defaults-empty');

  const check = (until = deadline): void => {
    const dead = procs.find((p) => p.exited && p.node.role !== 'onion-service' && p.node.role !== 'controller');
    if (dead) throw new Error(`tor node ${dead.node.name} exited (${dead.exited?.signal ?? `code ${dead.exited?.code}`}); see ${dead.node.dir}/stdout.log and notice.log`);
    if (Date.now() > until) throw new Error('The private Tor network did not come up in time');
  };
  const waitForLog = async (node: TorNode, re: RegExp, what: string, until = deadline): Promise<void> => {
    for (;;) {
      if (re.test(await readText(node.logFile))) return;
      const p = procs.find((x) => x.node === node);
      if (p?.exited) throw new Error(`tor node ${node.name} exited before "${what}":\n${tail((await readText(node.logFile)) || (await readText(path.join(node.dir, 'stdout.log'))))}`);
      if (Date.now() > until) throw new Error(`tor node ${node.name} did not log "${what}" in time:\n${tail(await readText(node.logFile))}`);
      check(until);
      await sleep(POLL_MS);
    }
  };

  const launch = (node: TorNode, torrc: string, extraArgs: string[] = []): Proc => {
    const out = openSync(path.join(node.dir, 'stdout.log'), 'a');
    const child = spawn(tor, ['-f', torrc, '--defaults-torrc', emptyDefaults, ...extraArgs], {
      stdio: ['ignore', out, out],
      shell: false,
    });
    closeSync(out);
    live.add(child);
    const proc: Proc = {
      node,
      child,
      exited: null,
      done: new Promise<void>((resolve) => {
        child.once('exit', (code, signal) => {
          proc.exited = { code, signal };
          live.delete(child);
          resolve();
        });
        child.once('error', (e) => {
          proc.exited = { code: -1, signal: null };
          live.delete(child);
          say(`tornet: ${node.name} cannot start: ${e.message}`);
          resolve();
        });
      }),
    };
    node.pid = child.pid ?? -1;
    procs.push(proc);
    return proc;
  };

  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(emptyDefaults, '');

    // 1. Ports and folders.
    const names = [
      ...Array.from({ length: AUTHORITIES }, (_, i) => `auth${i}`),
      ...Array.from({ length: relayCount }, (_, i) => `relay${i}`),
      'client',
    ];
    const ports = await freePorts(2 * (AUTHORITIES + relayCount) + 1);
    const nodes: TorNode[] = names.map((name, i) => {
      const role: TorNode['role'] = name.startsWith('auth') ? 'authority' : name === 'client' ? 'client' : 'relay';
      const nodeDir = path.join(dir, name);
      const node: TorNode = { name, role, dir: nodeDir, logFile: path.join(nodeDir, 'notice.log'), pid: -1 };
      if (role === 'client') node.socksPort = ports[2 * (AUTHORITIES + relayCount)];
      else {
        node.orPort = ports[2 * i];
        node.dirPort = ports[2 * i + 1];
      }
      return node;
    });
    for (const node of nodes) {
      await rm(node.dir, { recursive: true, force: true });
      await mkdir(path.join(node.dir, 'keys'), { recursive: true, mode: 0o700 });
    }
    const auths = nodes.filter((n) => n.role === 'authority');
    const relays = nodes.filter((n) => n.role === 'relay');
    const client = nodes.find((n) => n.role === 'client') as TorNode;

    // 2. Authority keys: identity + signing key + certificate, then the relay fingerprint.
    const t0 = Date.now();
    const dirAuthorityLines = await Promise.all(
      auths.map(async (a) => {
        const keys = path.join(a.dir, 'keys');
        await run(
          gencert,
          ['--create-identity-key', '--passphrase-fd', '0', '-i', path.join(keys, 'authority_identity_key'), '-s', path.join(keys, 'authority_signing_key'),
            '-c', path.join(keys, 'authority_certificate'), '-m', '12', '-a', `127.0.0.1:${a.dirPort}`],
          `${GENCERT_PASSPHRASE}\n`,
        );
        const cert = await readFile(path.join(keys, 'authority_certificate'), 'utf8');
        const v3ident = /^fingerprint ([0-9A-F]{40})$/m.exec(cert)?.[1];
        if (!v3ident) throw new Error(`tor-gencert wrote no fingerprint line for ${a.name}`);
        const listed = await run(tor, ['--defaults-torrc', emptyDefaults, '--ignore-missing-torrc', '-f', path.join(a.dir, 'none'),
          '--DataDirectory', a.dir, '--ORPort', '1', '--Nickname', a.name, '--list-fingerprint']);
        const fpm = /^\S+ ((?:[0-9A-F]{4} ?){10})$/m.exec(listed.trim().split('\n').pop() ?? '');
        if (!fpm) throw new Error(`tor --list-fingerprint gave no fingerprint for ${a.name}:\n${listed}`);
        const fingerprint = fpm[1].replace(/ /g, '');
        return `DirAuthority ${a.name} orport=${a.orPort} no-v2 v3ident=${v3ident} 127.0.0.1:${a.dirPort} ${fingerprint}`;
      }),
    );
    const keysMs = Date.now() - t0;
    say(`tornet: authority keys made in ${keysMs} ms`);

    const common = (node: TorNode) =>
      template('common.torrc', {
        dirAuthorities: dirAuthorityLines.join('\n'),
        dir: node.dir,
        nick: node.name,
        ownerPid: process.pid,
        logLevels: node.role === 'onion-service' ? SERVICE_LOG_LEVELS : 'notice',
      });
    const writeTorrc = async (node: TorNode, parts: string[]): Promise<string> => {
      const file = path.join(node.dir, 'torrc');
      await writeFile(file, parts.join('\n'), { mode: 0o600 });
      return file;
    };
    const torrcs = new Map<TorNode, string>();
    for (const node of [...auths, ...relays]) {
      const parts = [await common(node), await template('relay.torrc', { orPort: node.orPort as number, dirPort: node.dirPort as number, nick: node.name })];
      if (node.role === 'authority') parts.push(await template('authority.torrc', { votingInterval }));
      torrcs.set(node, await writeTorrc(node, parts));
    }
    torrcs.set(client, await writeTorrc(client, [await common(client), await template('client.torrc', { socksPort: client.socksPort as number })]));

    // 3. Launch authorities and relays together. Authorities vote on a wall-clock
    //    schedule (intervals counted from midnight + offset): choose the offset so that
    //    the first vote comes FIRST_VOTE_AFTER_S after launch, not by chance.
    const launchedAt = Date.now();
    const validAfter = Math.ceil(launchedAt / 1000 + FIRST_VOTE_AFTER_S + 2 + 2); // + vote and dist delays
    const offset = validAfter % votingInterval;
    for (const a of auths) launch(a, torrcs.get(a) as string, ['--TestingV3AuthVotingStartOffset', String(offset)]);
    for (const r of relays) launch(r, torrcs.get(r) as string);
    say(`tornet: launched ${auths.length} authorities and ${relays.length} relays (first vote ~${FIRST_VOTE_AFTER_S} s from now)`);

    // 4. Every authority has published the first consensus.
    await Promise.all(auths.map((a) => waitForLog(a, /Published microdesc consensus/, 'Published microdesc consensus')));
    const consensusMs = Date.now() - launchedAt;
    say(`tornet: consensus published after ${consensusMs} ms`);

    // 5. Relays that started before any consensus back off their downloads: a SIGHUP
    //    makes them fetch it now (but only once tor is far enough: after "Bootstrapped 0%").
    await Promise.all(
      relays.map(async (r) => {
        if (/Bootstrapped 100%/.test(await readText(r.logFile))) return;
        await waitForLog(r, /Bootstrapped 0%/, 'Bootstrapped 0%');
        if (/Bootstrapped 100%/.test(await readText(r.logFile))) return;
        procs.find((p) => p.node === r)?.child.kill('SIGHUP');
      }),
    );

    // 6. The client, now that a consensus exists.
    launch(client, torrcs.get(client) as string);
    await waitForLog(client, /Bootstrapped 100%/, 'Bootstrapped 100%');
    const clientReadyMs = Date.now() - launchedAt;
    say(`tornet: client bootstrapped after ${clientReadyMs} ms; SOCKS on 127.0.0.1:${client.socksPort}`);

    const network: TorNetwork = {
      dir,
      socksPort: client.socksPort as number,
      nodes,
      timings: { keysMs, consensusMs, clientReadyMs },

      onionServiceTorrcLines(o = {}) {
        const lines = ['TestingTorNetwork 1', ...dirAuthorityLines, 'PathsNeededToBuildCircuits 0.67'];
        if (o.logFile) lines.push(`Log ${SERVICE_LOG_LEVELS} file ${o.logFile}`);
        return lines;
      },

      async startOnionService(o) {
        const name = o.name ?? `hs${procs.filter((p) => p.node.role === 'onion-service').length}`;
        const node: TorNode = { name, role: 'onion-service', dir: path.join(dir, name), logFile: path.join(dir, name, 'notice.log'), pid: -1 };
        await rm(node.dir, { recursive: true, force: true });
        await mkdir(node.dir, { recursive: true, mode: 0o700 });
        const parts = [await common(node), await template('onion-service.torrc', { dir: node.dir, targetPort: o.targetPort })];
        if (o.onionbalanceFrontend) {
          // An Onionbalance backend instance: it also answers introductions made to the frontend's address.
          parts.push('HiddenServiceOnionbalanceInstance 1');
          await mkdir(path.join(node.dir, 'hs'), { recursive: true, mode: 0o700 });
          await writeFile(path.join(node.dir, 'hs', 'ob_config'), `MasterOnionAddress ${o.onionbalanceFrontend}\n`, { mode: 0o600 });
        }
        const file = await writeTorrc(node, parts);
        const proc = launch(node, file);
        nodes.push(node);
        const until = Date.now() + (o.timeoutMs ?? 30_000);
        const hostname = path.join(node.dir, 'hs', 'hostname');
        for (;;) {
          const address = (await readText(hostname)).trim();
          if (address) return { address, pid: node.pid, dir: node.dir, logFile: node.logFile, stop: () => stopProcs([proc]) };
          if (proc.exited || Date.now() > until) {
            await stopProcs([proc]);
            throw new Error(`The onion service tor ${name} wrote no hostname:\n${tail((await readText(node.logFile)) || (await readText(path.join(node.dir, 'stdout.log'))))}`);
          }
          await sleep(POLL_MS);
        }
      },

      async startControlledTor(o = {}) {
        const name = o.name ?? `ctl${procs.filter((p) => p.node.role === 'controller').length}`;
        const node: TorNode = { name, role: 'controller', dir: path.join(dir, name), logFile: path.join(dir, name, 'notice.log'), pid: -1 };
        await rm(node.dir, { recursive: true, force: true });
        await mkdir(node.dir, { recursive: true, mode: 0o700 });
        const [controlPort, port] = await freePorts(2);
        const socksPort = o.socks ? port! : 0;
        const file = await writeTorrc(node, [await common(node), await template('controller.torrc', { controlPort: controlPort!, socks: o.socks ? `127.0.0.1:${socksPort}` : '0', socksTimeout: o.socksTimeoutS ?? 120 })]);
        const proc = launch(node, file);
        nodes.push(node);
        try {
          await waitForLog(node, /Bootstrapped 100%/, 'Bootstrapped 100%', Date.now() + (o.timeoutMs ?? 60_000));
        } catch (err) {
          await stopProcs([proc]);
          throw err;
        }
        return { controlPort: controlPort!, socksPort, pid: node.pid, dir: node.dir, logFile: node.logFile, stop: () => stopProcs([proc]) };
      },

      waitForOnion(address, o = {}) {
        return waitForOnion(client.socksPort as number, address, o);
      },

      stop: () => stopProcs([...procs].reverse()),
    };
    return network;
  } catch (err) {
    await stopProcs(procs);
    throw err;
  }
}

/** GET http://ADDRESS/PATH through tor's SOCKS port, retrying until it answers or time runs out. */
export async function waitForOnion(socksPort: number, address: string, opts: WaitForOnionOptions = {}): Promise<OnionAnswer> {
  const started = Date.now();
  const deadline = started + (opts.timeoutMs ?? 120_000);
  const urlPath = opts.path ?? '/';

  // A client that asks before the descriptor is on the HSDirs caches the failure and
  // stalls 15-30 s: first wait for the service to say it uploaded it.
  if (opts.serviceLogFile) {
    while (!/Uploaded hidden service descriptor/.test(await readText(opts.serviceLogFile))) {
      if (Date.now() > deadline) {
        throw new Error(`The onion service never logged "Uploaded hidden service descriptor" in ${opts.serviceLogFile}:\n${tail(await readText(opts.serviceLogFile))}`);
      }
      await sleep(POLL_MS);
    }
  }

  let attempts = 0;
  let lastError = '';
  for (;;) {
    attempts++;
    // A fresh agent each time, and SOCKS credentials of its own: tor isolates streams
    // by SOCKS username, so no attempt rides on the circuit of a failed one.
    const agent = new SocksProxyAgent(`socks5h://try${attempts}:x@127.0.0.1:${socksPort}`);
    const remaining = deadline - Date.now();
    try {
      const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = http.get({ host: address, path: urlPath, agent, timeout: Math.min(30_000, Math.max(remaining, 1_000)) }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          res.on('error', reject);
        });
        req.on('timeout', () => req.destroy(new Error('timed out')));
        req.on('error', reject);
      });
      return { ...answer, attempts, ms: Date.now() - started };
    } catch (err) {
      lastError = (err as Error).message;
    } finally {
      agent.destroy();
    }
    if (Date.now() + 500 > deadline) {
      throw new Error(`http://${address}${urlPath} did not answer through 127.0.0.1:${socksPort} within ${Math.round((Date.now() - started) / 1000)} s (${attempts} attempts; last error: ${lastError})`);
    }
    await sleep(500);
  }
}
