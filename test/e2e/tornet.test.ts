// End to end over a real (private) Tor network: kzymy's managed tor joins it as an
// onion service, and a page behind it is fetched through the network's SOCKS port.
import { expect } from 'chai';
import http from 'node:http';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../src/config/index.js';
import { silentLogger } from '../../src/config/log.js';
import { isV3Onion, startManagedTor, type ManagedTor } from '../../src/tor/index.js';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { startTorNetwork, type TorNetwork } from './tornet/index.js';
import { alive } from '../helpers/procs.js';


/** PIDs of processes whose command line mentions `text` (here: our temporary folder). */
function processesMentioning(text: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text)) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

describe('e2e: private Tor network', function () {
  this.timeout(240_000);
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let server: http.Server;
  let webPort = 0;
  let network: TorNetwork | null = null;
  let managed: ManagedTor | null = null;

  before(async function () {
    requireBinaries(this, 'tor', 'tor-gencert');
    tmp = await tempDir('kzymy-tornet-');
    server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('kzymy onion web says hello\n');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    webPort = (server.address() as { port: number }).port;
  });

  after(async () => {
    await managed?.stop();
    await network?.stop();
    server?.close();
    await tmp?.cleanup();
  });

  it("reaches kzymy's managed onion service through the network's SOCKS port, then leaves no tor behind", async () => {
    const t0 = Date.now();
    network = await startTorNetwork({ dir: path.join(tmp.dir, 'net') });
    const netMs = Date.now() - t0;

    // kzymy-server's own managed tor, joined to the private network by extraConfig.
    const serviceLog = path.join(tmp.dir, 'kzymy-tor.log');
    const config = loadConfig({
      env: { KZYMY_DATA_DIR: path.join(tmp.dir, 'kzymy'), KZYMY_WEB_PORT: String(webPort), KZYMY_TOR_MANAGE: '1', PATH: process.env.PATH },
    });
    config.tor.extraConfig = network.onionServiceTorrcLines({ logFile: serviceLog });
    managed = await startManagedTor({ config, logger: silentLogger });
    expect(isV3Onion(managed.onionAddress)).to.equal(true);

    const answer = await network.waitForOnion(managed.onionAddress, { serviceLogFile: serviceLog, timeoutMs: 120_000 });
    const totalMs = Date.now() - t0;
    expect(answer.status).to.equal(200);
    expect(answer.body).to.equal('kzymy onion web says hello\n');

    const t = network.timings;
    console.log(
      `      tornet: keys ${(t.keysMs / 1000).toFixed(1)} s, consensus ${(t.consensusMs / 1000).toFixed(1)} s after launch, ` +
        `client ready ${(t.clientReadyMs / 1000).toFixed(1)} s after launch, network up ${(netMs / 1000).toFixed(1)} s, ` +
        `onion page ${(answer.ms / 1000).toFixed(1)} s after the service started (${answer.attempts} attempt(s)), ` +
        `wall time to the page ${(totalMs / 1000).toFixed(1)} s`,
    );

    const pids = [...network.nodes.map((n) => n.pid), managed.pid];
    await managed.stop();
    await network.stop();
    expect(pids.filter(alive), 'tor processes still alive').to.deep.equal([]);
    expect(processesMentioning(tmp.dir), 'processes still using the network folder').to.deep.equal([]);
  });
});
