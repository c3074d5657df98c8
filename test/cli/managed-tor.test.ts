// `kzymy-server start` with tor.manage on: the managed tor publishes the web listener as
// an onion service, the address is logged and shown on the pages, and SIGTERM leaves no
// tor behind. tor runs with DisableNetwork: tests never touch the public Tor network,
// and tor makes the onion keys without any network.
import { expect } from 'chai';
import path from 'node:path';
import { requireBinaries } from '../helpers/env.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ROOT, serverCommand, startServer } from '../helpers/server.js';
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

      // kzymy follows tor on its control socket: the bootstrap progress is logged, and
      // `status` reports it (with DisableNetwork 1 tor stays at its first step).
      const until0 = Date.now() + 30_000;
      while (!/"evt":"tor-bootstrap"/.test(srv.output()) && Date.now() < until0) await new Promise((r) => setTimeout(r, 100));
      expect(srv.output()).to.match(/"evt":"tor-bootstrap","percent":\d+,"tag":"[a-z_]+","msg":"tor bootstrapped \d+%: /);
      const c = serverCommand('status', '--json', '--config', srv.configFile);
      const st = await promisify(execFile)(c.cmd, c.args, { cwd: ROOT }).then(
        (r) => ({ code: 0, stdout: r.stdout }),
        (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
      );
      const j = JSON.parse(st.stdout) as { lines: { mark: string; part: string; text: string }[]; status: { tor: { control: string; bootstrap: { percent: number } } } };
      expect(j.status.tor.control).to.equal('connected');
      expect(j.status.tor.bootstrap.percent).to.be.below(100);
      expect(j.lines.find((l) => l.part === 'tor')).to.include({ mark: 'problem' });
      expect(j.lines.find((l) => l.part === 'onion')?.text).to.include(`http://${onion}/ is not published yet`);
      expect(st.code).to.equal(1);
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
