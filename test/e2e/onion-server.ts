// A real kzymy-server process whose managed tor joins a private Tor network and publishes
// the web listener as an onion service. Built on test/helpers/server.ts (startServer); adds
// what an e2e test needs: waiting for the onion address line, and the managed tor's PID.
import path from 'node:path';
import { startServer, type RunningServer } from '../helpers/server.js';
import type { TorNetwork } from './tornet/index.js';

export interface OnionServer {
  srv: RunningServer;
  /** "abc...xyz.onion" */
  onion: string;
  serverPid: number;
  torPid: number;
  /** The managed tor's log of [rend] info lines, for TorNetwork.waitForOnion. */
  torLogFile: string;
  /** Milliseconds from the spawn to the onion address line. */
  ms: number;
}

interface LogLine {
  evt?: string;
  onion?: string;
  pid?: number;
  msg?: string;
}

/**
 * Starts kzymy-server with `tor.manage` on, its tor folders under `dir` (`config` and `tor`:
 * more settings; `base`: the folders of an earlier run, to restart it); resolves once it
 * logged the onion address.
 */
export async function startOnionServer(
  net: TorNetwork,
  dir: string,
  opts: { timeoutMs?: number; config?: Record<string, unknown>; tor?: Record<string, unknown>; base?: string } = {},
): Promise<OnionServer> {
  const t0 = Date.now();
  const torLogFile = path.join(dir, 'kzymy-tor-rend.log');
  const srv = await startServer({
    env: { KZYMY_TOR_MANAGE: '1' },
    base: opts.base,
    config: {
      ...opts.config,
      tor: {
        manage: true,
        dataDir: path.join(dir, 'kzymy-tor'),
        hostnameFile: path.join(dir, 'kzymy-onion', 'hostname'),
        extraConfig: net.onionServiceTorrcLines({ logFile: torLogFile }),
        ...opts.tor,
      },
    },
  });
  // startServer has no exit hook: if this process ends before the suite's after hook
  // stopped the server, a SIGTERM makes it stop its tor and exit (tor also watches it).
  const onExit = (): void => {
    if (srv.child.exitCode === null && srv.child.signalCode === null) srv.child.kill('SIGTERM');
  };
  process.once('exit', onExit);
  void new Promise((r) => srv.child.once('exit', r)).then(() => process.off('exit', onExit));
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  try {
    for (;;) {
      let onion: string | undefined;
      let torPid: number | undefined;
      for (const line of srv.output().split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const j = JSON.parse(line) as LogLine;
          if (j.evt === 'onion' && j.onion) onion = j.onion;
          if (j.msg === 'tor started' && typeof j.pid === 'number') torPid = j.pid;
        } catch {
          // not JSON
        }
      }
      if (onion && torPid) return { srv, onion, serverPid: srv.child.pid ?? -1, torPid, torLogFile, ms: Date.now() - t0 };
      if (srv.child.exitCode !== null || srv.child.signalCode !== null) {
        throw new Error(`kzymy-server exited before it logged the onion address:\n${srv.output()}`);
      }
      if (Date.now() > deadline) throw new Error(`kzymy-server logged no onion address (and tor PID) in time:\n${srv.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    await srv.cleanup();
    throw err;
  }
}
