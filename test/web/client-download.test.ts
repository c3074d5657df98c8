// The kzymy-client download on the pages: the route, its headers, the commands the pages
// show, a file rebuilt while the server runs, and a server started without the file.
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { tempDir } from '../helpers/env.js';
import { byId, expectGoodPage, expectSecurityHeaders, startTestServer, type TestServer } from './harness.js';

const ONION = 'kzymyexampleonionaddressxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion';
const sha256 = (b: Buffer | Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function get(s: TestServer, p: string, init?: RequestInit): Promise<{ res: Response; bytes: Buffer; body: string }> {
  const res = await fetch(s.base + p, { redirect: 'manual', ...init });
  const bytes = Buffer.from(await res.arrayBuffer());
  return { res, bytes, body: bytes.toString('utf8') };
}

describe('web: the kzymy-client download', function () {
  let folder: { dir: string; cleanup: () => Promise<void> };
  // Stands in for dist/bundle/kzymy-client.mjs (test/client/bundle.test.ts uses the real one).
  const fileBytes = Buffer.concat([Buffer.from('#!/usr/bin/env node\n// a test copy\n'), randomBytes(3000)]);
  let file: string;

  before(async function () {
    folder = await tempDir('kzymy-client-dl-');
    file = path.join(folder.dir, 'kzymy-client.mjs');
    await writeFile(file, fileBytes);
  });
  after(async () => folder?.cleanup());

  describe('with an onion address', function () {
    let s: TestServer;
    before(async function () {
      s = await startTestServer({ onion: ONION, clientBundle: file });
    });
    after(async () => s?.close());

    it('serves the file as a download, with its digest and the security headers', async function () {
      const { res, bytes } = await get(s, '/client/kzymy-client.mjs');
      expect(res.status).to.equal(200);
      expect(Buffer.compare(bytes, fileBytes)).to.equal(0);
      expectSecurityHeaders(res);
      expect(res.headers.get('content-type')).to.equal('text/javascript; charset=utf-8');
      expect(res.headers.get('content-disposition')).to.equal('attachment; filename="kzymy-client.mjs"');
      expect(res.headers.get('content-length')).to.equal(String(fileBytes.length));
      expect(res.headers.get('repr-digest')).to.equal(`sha-256=:${createHash('sha256').update(fileBytes).digest('base64')}:`);
      const head = await get(s, '/client/kzymy-client.mjs', { method: 'HEAD' });
      expect(head.res.status).to.equal(200);
      expect(head.bytes.length).to.equal(0);
      expect(head.res.headers.get('content-length')).to.equal(String(fileBytes.length));
    });

    it('the front page shows how to fetch it through Tor from the onion, check it and sign up with it', async function () {
      const { res, body } = await get(s, '/');
      await expectGoodPage(res, body);
      expect(body).to.include('href="/client/kzymy-client.mjs"');
      expect(byId(body, 'client-sha256')).to.equal(sha256(fileBytes));
      expect(byId(body, 'client-download').split('\n')).to.deep.equal([
        `curl --socks5-hostname 127.0.0.1:9050 -o kzymy-client.mjs http://${ONION}/client/kzymy-client.mjs`,
        `echo "${sha256(fileBytes)}  kzymy-client.mjs" | sha256sum -c`,
      ]);
      expect(byId(body, 'client-signup')).to.equal(`node kzymy-client.mjs signup --server http://${ONION} --key FINGERPRINT`);
      expect(body).to.include(`torsocks curl -o kzymy-client.mjs http://${ONION}/client/kzymy-client.mjs`);
      expect(body).to.include('--proxy socks5h://127.0.0.1:9150');
      expect(body).not.to.include('client-missing');
    });

    it('keeps serving, and showing the hash of, the copy it read at start when the file is rebuilt under it', async function () {
      // A second writer: `npm run build` while the server runs.
      await writeFile(file, Buffer.from('#!/usr/bin/env node\n// rebuilt\n'));
      try {
        const { bytes } = await get(s, '/client/kzymy-client.mjs');
        expect(sha256(bytes)).to.equal(sha256(fileBytes));
        expect(byId((await get(s, '/')).body, 'client-sha256')).to.equal(sha256(fileBytes));
      } finally {
        await writeFile(file, fileBytes);
      }
    });
  });

  it('on loopback without an onion, the commands use the page\'s own origin, without Tor', async function () {
    const s = await startTestServer({ onion: null, clientBundle: file });
    try {
      const { res, body } = await get(s, '/');
      await expectGoodPage(res, body);
      expect(byId(body, 'client-download').split('\n')[0]).to.equal(`curl -o kzymy-client.mjs ${s.base}/client/kzymy-client.mjs`);
      expect(byId(body, 'client-signup')).to.equal(`node kzymy-client.mjs signup --server ${s.base} --no-tor --key FINGERPRINT`);
    } finally {
      await s.close();
    }
  });

  it('a server started without the file says so in a sentence on the page, and answers the link with 404 and a sentence', async function () {
    const missing = path.join(folder.dir, 'not-built', 'kzymy-client.mjs');
    await rm(missing, { force: true });
    const s = await startTestServer({ onion: ONION, clientBundle: missing });
    try {
      const home = await get(s, '/');
      expect(home.res.status).to.equal(200);
      await expectGoodPage(home.res, home.body);
      expect(byId(home.body, 'client-missing')).to.match(/^This server has no copy of kzymy-client to offer right now: .*npm run build/s);
      expect(home.body).not.to.include('href="/client/kzymy-client.mjs"');
      const dl = await get(s, '/client/kzymy-client.mjs');
      expect(dl.res.status).to.equal(404);
      await expectGoodPage(dl.res, dl.body);
      expect(byId(dl.body, 'error')).to.match(/^This server has no copy of kzymy-client to offer: it was started without building it\. .*\.$/);
      expect(s.logs.join('')).to.match(/"evt":"client-bundle-missing","code":"ENOENT"/);
    } finally {
      await s.close();
    }
  });
});
