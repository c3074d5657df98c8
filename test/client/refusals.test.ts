// kzymy-client's transport rules: onion through Tor only; --no-tor only for a
// loopback server; refusals are sentences that come before any network I/O.
import { expect } from 'chai';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { tempDir } from '../helpers/env.js';
import { resolveTarget, isLoopbackHost, isOnionHost } from '../../src/client/target.js';
import { ClientError, EXIT_USAGE } from '../../src/client/errors.js';
import { makeGpgKey, requireGpg } from '../helpers/gpg.js';
import { closedPort, countingListener, expectNoStack, FAKE_ONION, runClient } from './helpers.js';

/** --key and --gnupghome of a real key: a login looks the key up before it connects. */
async function keyArgs(ctx: Mocha.Context): Promise<string[]> {
  requireGpg(ctx);
  const k = await makeGpgKey('ed25519');
  return ['--key', k.fingerprint, '--gnupghome', k.gnupghome];
}

describe('kzymy-client: where it may connect', function () {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ dir, cleanup } = await tempDir('kzymy-client-')));
  afterEach(async () => cleanup());

  describe('resolveTarget', function () {
    it('sends an onion address through the socks5h proxy', function () {
      const t = resolveTarget(`http://${FAKE_ONION}/`, { tor: true, proxy: 'socks5h://127.0.0.1:9050' });
      expect(t.server.hostname).to.equal(FAKE_ONION);
      expect(t.proxy?.href).to.equal('socks5h://127.0.0.1:9050');
      expect(resolveTarget(FAKE_ONION, { tor: true, proxy: 'socks5h://127.0.0.1:9050' }).server.protocol).to.equal('http:');
    });

    it('connects directly only to loopback with --no-tor', function () {
      for (const url of ['http://127.0.0.1:8080', 'http://127.8.9.10', 'http://[::1]:8080', 'http://localhost:1']) {
        expect(resolveTarget(url, { tor: false, proxy: 'socks5h://127.0.0.1:9050' }).proxy, url).to.equal(null);
      }
      expect(isLoopbackHost('128.0.0.1')).to.equal(false);
      expect(isLoopbackHost('localhost.example.org')).to.equal(false);
      expect(isOnionHost('example.onion')).to.equal(false);
    });

    it('refuses, with a sentence, everything else', function () {
      const cases: Array<[string, boolean, string, RegExp]> = [
        ['http://example.org', true, 'socks5h://127.0.0.1:9050', /not an onion address/],
        ['http://93.184.216.34', true, 'socks5h://127.0.0.1:9050', /not an onion address/],
        ['http://127.0.0.1:8080', true, 'socks5h://127.0.0.1:9050', /add --no-tor/],
        ['http://example.org', false, 'socks5h://127.0.0.1:9050', /--no-tor is only for a server on this machine/],
        [`http://${FAKE_ONION}`, false, 'socks5h://127.0.0.1:9050', /--no-tor is only for a server on this machine/],
        [`https://${FAKE_ONION}`, true, 'socks5h://127.0.0.1:9050', /must start with http:\/\//],
        [`http://${FAKE_ONION}`, true, 'socks5://127.0.0.1:9050', /socks5h:\/\/.*never local DNS/],
        ['http://exa mple', true, 'socks5h://127.0.0.1:9050', /not a URL/],
      ];
      for (const [url, tor, proxy, re] of cases) {
        let err: unknown;
        try {
          resolveTarget(url, { tor, proxy });
        } catch (e) {
          err = e;
        }
        expect(err, `${url} tor=${tor} ${proxy}`).to.be.instanceOf(ClientError).with.property('exitCode', EXIT_USAGE);
        expect((err as Error).message).to.match(re);
      }
    });
  });

  describe('the command line', function () {
    for (const [label, args, re] of [
      ['a non-onion server without Tor settings', ['--server', 'http://example.org'], /not an onion address/],
      ['--no-tor with a non-loopback server', ['--server', 'http://example.org', '--no-tor'], /--no-tor is only for a server on this machine/],
      ['--no-tor with an onion server', ['--server', `http://${FAKE_ONION}`, '--no-tor'], /--no-tor is only for a server on this machine/],
      ['a loopback server without --no-tor', ['--server', 'http://127.0.0.1:1'], /add --no-tor/],
    ] as const) {
      it(`refuses ${label} before any network I/O`, async function () {
        const proxy = await countingListener();
        try {
          const config = path.join(dir, 'client.json');
          for (const cmd of [['fetch', '--maildir', path.join(dir, 'Maildir')], ['status'], ['signup', '--key', 'ABCDEF']]) {
            const r = await runClient(['--config', config, '--proxy', `socks5h://127.0.0.1:${proxy.port}`, '--username', 'abcdefghijkl', ...args, ...cmd]);
            expect(r.code, r.stderr).to.equal(2);
            expect(r.stderr).to.match(/^kzymy-client: /);
            expect(r.stderr).to.match(re);
            expect(r.stderr.trim().split('\n')).to.have.length(1);
            expectNoStack(r);
          }
          expect(proxy.connections(), 'connections to the proxy').to.equal(0);
          // Nothing refused was saved either.
          await stat(config).then(
            async () => expect(await readFile(config, 'utf8')).not.to.include('example.org'),
            () => undefined,
          );
        } finally {
          await proxy.close();
        }
      });
    }

    it('says that tor is not running when its SOCKS port refuses (exit 75)', async function () {
      const port = await closedPort();
      const r = await runClient([
        ...(await keyArgs(this)),
        '--config', path.join(dir, 'client.json'),
        '--server', `http://${FAKE_ONION}`, '--proxy', `socks5h://127.0.0.1:${port}`, '--username', 'abcdefghijkl', 'status',
      ]);
      expect(r.code).to.equal(75);
      expect(r.stderr).to.include(`cannot reach Tor's SOCKS port at 127.0.0.1:${port}: is tor running? (apt-get install tor; systemctl start tor)`);
      expectNoStack(r);
    });

    it('says that the server is down when a loopback server refuses (exit 75)', async function () {
      const port = await closedPort();
      const r = await runClient([...(await keyArgs(this)), '--config', path.join(dir, 'c.json'), '--server', `http://127.0.0.1:${port}`, '--no-tor', '--username', 'abcdefghijkl', 'status']);
      expect(r.code).to.equal(75);
      expect(r.stderr).to.match(/cannot reach the kzymy server at http:\/\/127\.0\.0\.1:\d+: is kzymy-server running\?/);
      expectNoStack(r);
    });

    it('says what is wrong with a profile path in words, not ENOTDIR or EISDIR', async function () {
      const { dir, cleanup } = await tempDir('kzymy-client-profile-');
      try {
        await writeFile(path.join(dir, 'file'), 'not a folder');
        await mkdir(path.join(dir, 'folder.json'));
        for (const [config, words] of [
          [path.join(dir, 'file', 'client.json'), 'a part of the path is not a folder'],
          [path.join(dir, 'folder.json'), 'it is a folder, not a file'],
        ] as const) {
          const r = await runClient(['--config', config, 'status']);
          expect(r.code, r.stderr).to.equal(1);
          expect(r.stderr.trim()).to.equal(`kzymy-client: Cannot read the profile ${config}: ${words}.`);
          expect(r.stderr).not.to.match(/\bE[A-Z]{3,}\b/);
        }
      } finally {
        await cleanup();
      }
    });

    it('saves nothing from a run that failed: a mistyped option never becomes the default', async function () {
      const port = await closedPort();
      const [, fpr, , home] = await keyArgs(this);
      const r = await runClient(
        ['--server', `http://${FAKE_ONION}`, '--proxy', `socks5h://127.0.0.1:${port}`, '--username', 'AbcdefGhijkl', '--key', fpr!, '--gnupghome', home!, '--maildir', 'Mail', '--decrypt', 'status'],
        { env: { XDG_CONFIG_HOME: dir } },
      );
      expect(r.code).to.equal(75);
      const file = path.join(dir, 'kzymy', 'client.json');
      expect(await stat(file).then(() => true, () => false)).to.equal(false, 'no profile written by a failed run');
    });

    it('prints its version with --version and -V', async function () {
      const pkg = JSON.parse(await readFile(path.resolve(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
      for (const flag of ['--version', '-V']) {
        const r = await runClient([flag]);
        expect(r.code).to.equal(0);
        expect(r.stdout).to.equal(`${pkg.version}\n`);
      }
    });

    it('answers usage mistakes with exit 2 and a sentence', async function () {
      const config = ['--config', path.join(dir, 'c.json')];
      const cases: Array<[string[], RegExp]> = [
        [[...config, 'fetch'], /No server: give --server/],
        [[...config, '--server', FAKE_ONION, 'fetch'], /No username: give --username/],
        [[...config, '--server', FAKE_ONION, '--username', 'u', 'fetch'], /Nowhere to deliver: give --maildir DIR or --mda/],
        [[...config, '--maildir', 'a', '--mda', 'b', 'fetch'], /either --maildir or --mda/],
        [[...config, '--server', FAKE_ONION, 'signup'], /signup needs --key/],
        [[...config, '--server', FAKE_ONION, '--username', 'u', 'delete-account'], /add --yes to confirm/],
        [[...config, 'catch-all', 'maybe'], /on" or "off/],
        [[...config, 'fetch', '--watch', '0'], /at least 1/],
        [['frobnicate'], /unknown command/],
      ];
      for (const [args, re] of cases) {
        const r = await runClient(args);
        expect(r.code, `${args.join(' ')}: ${r.stderr}`).to.equal(2);
        expect(r.stderr, args.join(' ')).to.match(re);
        expectNoStack(r);
      }
    });

    it('has --help on every command, with an example, listing only the options that command reads', async function () {
      const commands = [['signup'], ['fetch'], ['status'], ['aliases'], ['aliases', 'list'], ['aliases', 'add'], ['aliases', 'remove'], ['aliases', 'block'], ['catch-all'], ['key', 'update'], ['logout'], ['delete-account']];
      for (const cmd of [[], ...commands]) {
        const r = await runClient([...cmd, '--help']);
        const what = cmd.join(' ') || '(none)';
        expect(r.code, what).to.equal(0);
        expect(r.stdout, what).to.match(/^Usage: kzymy-client/);
        if (cmd.length === 0) continue;
        expect(r.stdout, what).to.match(new RegExp(`\\nExamples?:\\n  \\$ kzymy-client ${cmd.join(' ')}`));
        // Delivery options belong to fetch (and to signup, which saves them), nowhere else.
        const delivers = cmd[0] === 'fetch' || cmd[0] === 'signup';
        expect(r.stdout.includes('--maildir'), `${what} lists --maildir`).to.equal(delivers);
        expect(r.stdout.includes('--watch'), `${what} lists --watch`).to.equal(cmd[0] === 'fetch');
        expect(r.stdout.includes('--username'), `${what} lists --username`).to.equal(cmd[0] !== 'signup');
      }
    });
  });
});
