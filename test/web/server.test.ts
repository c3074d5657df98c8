// startWeb: loopback only, port 0, clean close; request logging without personal data.
import { expect } from 'chai';
import { Writable } from 'node:stream';
import { loadConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/config/log.js';
import { MaildirStore } from '../../src/maildir/index.js';
import { KeyCache } from '../../src/pgp/index.js';
import { openRegistry } from '../../src/registry/index.js';
import { startWeb, type WebDeps } from '../../src/web/index.js';
import { html } from '../../src/web/html.js';
import { TokenBucket } from '../../src/web/ratelimit.js';
import { tempDir } from '../helpers/env.js';

describe('web: listener', function () {
  let dir: string;
  let cleanup: () => Promise<void>;
  let deps: WebDeps;
  const logs: string[] = [];

  before(async () => {
    ({ dir, cleanup } = await tempDir('kzymy-web-listen-'));
    const config = loadConfig({ cwd: dir, env: { KZYMY_DATA_DIR: `${dir}/data`, KZYMY_MAILDIR_ROOT: `${dir}/m`, KZYMY_WEB_PORT: '0', KZYMY_TOR_MANAGE: '0' } });
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        logs.push(c.toString());
        cb();
      },
    });
    deps = {
      config,
      registry: await openRegistry({ dataDir: config.dataDir }),
      maildir: new MaildirStore(config.maildirRoot),
      keys: new KeyCache(),
      logger: createLogger('info', sink),
      onionAddress: () => null,
    };
  });
  after(async () => {
    await deps?.registry.close();
    await cleanup?.();
  });

  for (const host of ['0.0.0.0', '::', '192.0.2.10', 'example.org']) {
    it(`refuses to listen on ${host}`, async () => {
      const d = { ...deps, config: { ...deps.config, web: { host, port: 0 } } };
      let err: Error | null = null;
      await startWeb(d).then(
        (srv) => srv.close(),
        (e: Error) => {
          err = e;
        },
      );
      expect(err).to.be.instanceOf(Error);
      expect(err!.message).to.match(/loopback/);
      expect(err!.message).not.to.match(/\n\s+at /);
    });
  }

  it('listens on 127.0.0.1 port 0, logs method/route/status/duration only, and closes', async () => {
    const srv = await startWeb(deps);
    expect(srv.port).to.be.greaterThan(0);
    const res = await fetch(`http://127.0.0.1:${srv.port}/nothing/here?user=someone`, { headers: { 'user-agent': 'secret-agent' } });
    expect(res.status).to.equal(404);
    await srv.close();
    const line = JSON.parse(logs.find((l) => l.includes('"msg":"http"'))!) as Record<string, unknown>;
    expect(Object.keys(line).sort()).to.deep.equal(['evt', 'level', 'method', 'ms', 'msg', 'route', 'status', 'svc', 'time']);
    expect(line).to.include({ evt: 'http', method: 'GET', status: 404, route: '(unmatched)' });
    expect(logs.join('')).not.to.match(/someone|secret-agent|127\.0\.0\.1|nothing/);
    await fetch(`http://127.0.0.1:${srv.port}/`).then(
      () => expect.fail('still listening after close'),
      () => undefined,
    );
  });
});

describe('web: building blocks', () => {
  it('escapes every interpolated value, once', () => {
    const evil = `<script>alert("x")</script>&'`;
    expect(html`<p title="${evil}">${evil}</p>`.value).to.equal(
      '<p title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;</p>',
    );
    const inner = html`<b>${'a&b'}</b>`;
    expect(html`<i>${inner}</i>`.value).to.equal('<i><b>a&amp;b</b></i>');
    expect(html`${['<', html`<br>`, null, undefined, false, 0]}`.value).to.equal('&lt;<br>0');
  });

  it('token buckets refill at their rate', () => {
    const b = new TokenBucket(2, 60, 0);
    expect(b.take(0)).to.equal(0);
    expect(b.take(0)).to.equal(0);
    expect(b.take(0)).to.equal(1);
    expect(b.take(1000)).to.equal(0);
    expect(b.take(1000)).to.be.greaterThan(0);
  });
});
