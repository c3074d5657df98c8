// A real browser with JavaScript off, at 360 px: Debian's chromium driven by playwright-core.
// Screenshots of every page go to test-output/web/ (gitignored).
import { expect } from 'chai';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { requireBinaries } from '../helpers/env.js';
import { makeFreshGpgKey, makeGpgKey, requireGpg } from '../helpers/gpg.js';
import { decryptChallenge, expectSecurityHeaders, startTestServer, type TestServer } from './harness.js';

const OUT = path.resolve('test-output/web');
const CHROMIUM = '/usr/bin/chromium';

describe('web: real browser, JavaScript off, 360 px', function () {
  let s: TestServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const external: string[] = [];

  before(async function () {
    requireBinaries(this, 'chromium');
    requireGpg(this);
    await mkdir(OUT, { recursive: true });
    s = await startTestServer({ onion: 'kzymy2browsertestxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion' });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    context = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 360, height: 640 } });
    page = await context.newPage();
    // Every request the page makes must go to our own server.
    page.on('request', (req) => {
      if (!req.url().startsWith(s.base + '/')) external.push(req.url());
    });
  });
  after(async () => {
    await browser?.close();
    await s?.close();
  });

  /** Screenshot, and no horizontal overflow at 360 px. */
  async function check(name: string): Promise<void> {
    await page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });
    const { scroll, client } = await page.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      client: document.documentElement.clientWidth,
    }));
    expect(scroll, `${name}: page is wider than the screen`).to.be.at.most(client);
    expect(client).to.be.at.most(360);
    const scripts = await page.locator('script').count();
    expect(scripts).to.equal(0);
    // The stylesheet applied (CSP allows 'self' only).
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(bg).to.equal('rgb(247, 247, 244)');
  }

  it('signs up with a pasted key, decrypting the challenge with real gpg', async () => {
    const key = await makeFreshGpgKey('ed25519');
    const home = await page.goto(s.base + '/');
    expect(home!.status()).to.equal(200);
    expectSecurityHeaders(new Response(null, { headers: await home!.allHeaders() }));
    await check('01-home');

    await page.fill('#key', key.publicArmored);
    await Promise.all([page.waitForURL(s.base + '/signup'), page.click('button[type=submit]')]);
    await check('02-challenge');
    const fpr = (await page.textContent('#fingerprint'))!.replace(/\s/g, '');
    expect(fpr).to.equal(key.fingerprint);
    const armored = (await page.textContent('#challenge'))!;
    const decrypted = await decryptChallenge(key, armored);
    expect(decrypted.purpose).to.equal('signup');

    // A wrong code first: the page says so and keeps the challenge.
    await page.fill('#code', 'wrong-code-0000');
    await Promise.all([page.waitForURL(s.base + '/signup/confirm'), page.click('button[type=submit]')]);
    await check('03-wrong-code');
    expect(await page.textContent('#error')).to.match(/not right/);

    // What a person pastes from the terminal: all six lines gpg printed; the code line counts.
    await page.fill('#code', decrypted.text);
    await Promise.all([page.waitForURL(s.base + '/signup/confirm'), page.click('button[type=submit]')]);
    await check('04-done');
    const username = (await page.textContent('#username'))!.trim();
    expect(username).to.match(/^[a-z][a-z0-9]{11}$/);
    expect(s.registry.get(username)!.fingerprint).to.equal(key.fingerprint);
    expect(await page.textContent('#command')).to.include(`--username ${username} --key ${key.fingerprint}`);
  });

  it('shows refusals as readable pages', async () => {
    await page.goto(s.base + '/');
    await page.fill('#key', (await makeGpgKey('rsa1024')).publicArmored);
    await Promise.all([page.waitForURL(s.base + '/signup'), page.click('button[type=submit]')]);
    await check('05-refused-key');
    expect((await page.textContent('#error'))!.length).to.be.greaterThan(20);

    const res = await page.goto(s.base + '/no-such-page');
    expect(res!.status()).to.equal(404);
    await check('06-not-found');
  });

  it('uploads a key file', async () => {
    const key = await makeFreshGpgKey('ed25519');
    await page.goto(s.base + '/');
    await page.setInputFiles('#keyfile', { name: 'key.asc', mimeType: 'application/pgp-keys', buffer: Buffer.from(key.publicArmored) });
    await Promise.all([page.waitForURL(s.base + '/signup'), page.click('button[type=submit]')]);
    expect((await page.textContent('#fingerprint'))!.replace(/\s/g, '')).to.equal(key.fingerprint);
  });

  it('never requested anything from another host', () => {
    expect(external).to.deep.equal([]);
  });
});
