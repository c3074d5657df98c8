import { expect } from 'chai';
import { readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig, type Config } from '../../src/config/index.js';
import { silentLogger } from '../../src/config/log.js';
import { isV3Onion, readOnionAddress, startManagedTor } from '../../src/tor/index.js';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { alive } from '../helpers/procs.js';


describe('tor: managed tor child', function () {
  this.timeout(90_000);
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let config: Config;

  before(async function () {
    requireBinaries(this, 'tor');
    tmp = await tempDir('kzymy-tor-');
    config = loadConfig({ env: { KZYMY_DATA_DIR: tmp.dir, KZYMY_WEB_PORT: '18080', KZYMY_TOR_MANAGE: '1', PATH: process.env.PATH } });
    // Tests never reach the public Tor network: tor makes the onion keys and writes the
    // hostname without any network.
    config.tor.extraConfig = ['DisableNetwork 1'];
  });
  after(async () => tmp?.cleanup());

  it('publishes a v3 onion address within 60 s and stop() leaves no tor behind', async () => {
    const tor = await startManagedTor({ config, logger: silentLogger, timeoutMs: 60_000 });
    try {
      expect(isV3Onion(tor.onionAddress), tor.onionAddress).to.equal(true);
      expect(await readOnionAddress(config.tor.hostnameFile)).to.equal(tor.onionAddress);
      expect(alive(tor.pid)).to.equal(true);
      expect((await stat(config.tor.dataDir)).mode & 0o777).to.equal(0o700);
      expect((await stat(path.dirname(config.tor.hostnameFile))).mode & 0o777).to.equal(0o700);
      const torrc = path.join(config.tor.dataDir, 'torrc');
      expect((await stat(torrc)).mode & 0o777).to.equal(0o600);
      expect(await readFile(torrc, 'utf8')).to.include('HiddenServicePort 80 127.0.0.1:18080');
    } finally {
      await tor.stop();
    }
    expect(alive(tor.pid), `tor pid ${tor.pid} still alive`).to.equal(false);
    await tor.stop(); // twice is harmless
  });

  it('keeps the same onion address across restarts', async () => {
    const first = await readOnionAddress(config.tor.hostnameFile);
    const tor = await startManagedTor({ config, logger: silentLogger });
    await tor.stop();
    expect(tor.onionAddress).to.equal(first);
    expect(alive(tor.pid)).to.equal(false);
  });

  it('as an Onionbalance backend instance: tor takes the instance mode with ob_config, and the file goes when the setting does', async () => {
    // A frontend address (any valid v3 onion: tor only reads it).
    const frontend = 'cr4dwjmvsvug6zc36pgbvkbkrfqywzeypsdoog6mx3yujvstar5fauid.onion';
    const obConfig = path.join(path.dirname(config.tor.hostnameFile), 'ob_config');
    const instance = { ...config, tor: { ...config.tor, frontendOnion: frontend } };
    const tor = await startManagedTor({ config: instance, logger: silentLogger });
    try {
      expect(await readFile(obConfig, 'utf8')).to.equal(`MasterOnionAddress ${frontend}\n`);
      expect((await stat(obConfig)).mode & 0o777).to.equal(0o600);
      expect(await readFile(path.join(config.tor.dataDir, 'torrc'), 'utf8')).to.match(/^HiddenServiceOnionbalanceInstance 1$/m);
      // Its own onion address is unchanged: the frontend's is another one.
      expect(tor.onionAddress).to.not.equal(frontend);
      expect(alive(tor.pid)).to.equal(true);
    } finally {
      await tor.stop();
    }
    const plain = await startManagedTor({ config, logger: silentLogger });
    await plain.stop();
    expect(await stat(obConfig).catch(() => null), 'ob_config after the setting is gone').to.equal(null);
    expect(await readFile(path.join(config.tor.dataDir, 'torrc'), 'utf8')).to.not.include('HiddenServiceOnionbalanceInstance');
  });

  it('says so in a sentence when tor is missing', async () => {
    const bogus = { ...config, tor: { ...config.tor, binary: path.join(tmp.dir, 'no-such-tor') } };
    const err = await startManagedTor({ config: bogus, logger: silentLogger }).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).to.match(/^tor was not found: ".*no-such-tor" is not an installed program/);
  });

  it("reports tor's own words when it exits early", async () => {
    const broken = { ...config, tor: { ...config.tor, extraConfig: ['DisableNetwork 1', 'NoSuchTorOption 1'] } };
    const err = await startManagedTor({ config: broken, logger: silentLogger }).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).to.match(/^tor exited with code 1 before it published the onion service; .*Unknown option 'NoSuchTorOption'/);
  });

  it('times out with a sentence', async () => {
    // A "tor" that runs but never writes a hostname.
    const fake = path.join(tmp.dir, 'fake-tor');
    await writeFile(fake, '#!/bin/sh\necho "Jan 01 00:00:00.000 [notice] pretending"\nexec sleep 30\n', { mode: 0o755 });
    const slow = { ...config, tor: { ...config.tor, binary: fake } };
    const err = await startManagedTor({ config: slow, logger: silentLogger, timeoutMs: 500 }).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).to.match(/^tor did not write the onion hostname .* within 1 s; its last log line: "\[notice\] pretending"$/);
  });

  describe('readOnionAddress (tor.manage off)', () => {
    it('returns null while there is no hostname file, and refuses garbage', async () => {
      const dir = path.join(tmp.dir, 'sys');
      await mkdir(dir, { recursive: true });
      const file = path.join(dir, 'hostname');
      expect(await readOnionAddress(file)).to.equal(null);
      await writeFile(file, 'not-an-onion.example\n');
      const err = await readOnionAddress(file).then(
        () => null,
        (e: Error) => e,
      );
      expect(err?.message).to.match(/does not hold a v3 onion address/);
      await writeFile(file, 'l27cqqvdyabsueyd6buvcs6y2yu2rv3dyctqe7ntwruwqj32fz2uhmad.onion\n');
      expect(await readOnionAddress(file)).to.equal('l27cqqvdyabsueyd6buvcs6y2yu2rv3dyctqe7ntwruwqj32fz2uhmad.onion');
    });
  });
});
