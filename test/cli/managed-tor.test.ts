// `kzymy-server start` with tor.manage on: the managed tor publishes the web listener as
// an onion service, the address is logged and shown on the pages, and SIGTERM leaves no
// tor behind. tor runs with DisableNetwork: tests never touch the public Tor network,
// and tor makes the onion keys without any network.
import { expect } from 'chai';
import path from 'node:path';
import { requireBinaries } from '../helpers/env.js';
import { startServer } from '../helpers/server.js';
import { processesMentioning } from '../helpers/procs.js';

const pidsMentioning = async (needle: string): Promise<number[]> => processesMentioning(needle).map((p) => p.pid);

describe('kzymy-server start with a managed tor', function () {
  before(function () {
    requireBinaries(this, 'tor', 'openssl');
  });

  it('shows a .onion address within 60 s and leaves no tor process after SIGTERM', async function () {
    const srv = await startServer({
      env: { KZYMY_TOR_MANAGE: '1' },
      config: { tor: { manage: true, extraConfig: ['DisableNetwork 1'] } },
    });
    try {
      const started = Date.now();
      let onion = '';
      while (!onion && Date.now() - started < 60_000) {
        const m = /"evt":"onion","onion":"([a-z2-7]{56}\.onion)"/.exec(srv.output());
        if (m) onion = m[1]!;
        else await new Promise((r) => setTimeout(r, 100));
      }
      expect(onion, srv.output()).to.match(/^[a-z2-7]{56}\.onion$/);
      const tors = await pidsMentioning(path.join(srv.dataDir, 'tor'));
      expect(tors.length, 'a tor child runs').to.be.at.least(1);
      const page = await (await fetch(`http://127.0.0.1:${srv.webPort}/`)).text();
      expect(page).to.include(onion);
      expect(await srv.stop('SIGTERM')).to.equal(0);
      // tor exits with its parent's SIGTERM handling; give it its shutdown time, no more.
      const until = Date.now() + 15_000;
      while ((await pidsMentioning(path.join(srv.dataDir, 'tor'))).length && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      expect(await pidsMentioning(path.join(srv.dataDir, 'tor'))).to.deep.equal([]);
    } finally {
      await srv.cleanup();
    }
  });
});
