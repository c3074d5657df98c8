import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../../src/config/index.js';
import { managedTorrc, renderTorrc, torrcTemplatePath, isV3Onion } from '../../src/tor/index.js';
import { applianceTorrc } from '../../src/tor/torrc.js';
import { requireBinaries, tempDir } from '../helpers/env.js';

const run = promisify(execFile);

describe('tor: torrc template', function () {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let template: string;

  before(async function () {
    requireBinaries(this, 'tor');
    tmp = await tempDir('kzymy-torrc-');
    template = await readFile(torrcTemplatePath(), 'utf8');
  });
  after(async () => tmp?.cleanup());

  it('finds the project torrc from the module file', () => {
    expect(torrcTemplatePath()).to.equal(path.resolve(import.meta.dirname, '../../torrc'));
    expect(template).to.include('{{HIDDEN_SERVICE_DIR}}');
  });

  it('fills every field and leaves no placeholder', () => {
    const out = renderTorrc(template, { hiddenServiceDir: '/var/lib/tor/kzymy', webHost: '127.0.0.1', webPort: 8080 });
    expect(out).to.match(/^HiddenServiceDir \/var\/lib\/tor\/kzymy$/m);
    expect(out).to.match(/^HiddenServicePort 80 127\.0\.0\.1:8080$/m);
    expect(out.split('\n').filter((l) => !l.startsWith('#') && l.includes('{{'))).to.deep.equal([]);
  });

  it('quotes awkward paths, brackets IPv6 and refuses what would break the file', () => {
    const out = renderTorrc(template, { hiddenServiceDir: '/srv/my onion', webHost: '::1', webPort: 80 });
    expect(out).to.match(/^HiddenServiceDir "\/srv\/my onion"$/m);
    expect(out).to.match(/^HiddenServicePort 80 \[::1\]:80$/m);
    expect(() => renderTorrc(template, { hiddenServiceDir: '/x\nSocksPort 9050', webHost: '127.0.0.1', webPort: 80 })).to.throw(/line break/);
    expect(() => renderTorrc(template, { hiddenServiceDir: 'relative', webHost: '127.0.0.1', webPort: 80 })).to.throw(/absolute/);
    expect(() => renderTorrc(template, { hiddenServiceDir: '/x', webHost: '127.0.0.1', webPort: 0 })).to.throw(/real port/);
    expect(() => renderTorrc('Foo {{BAR}}\n', { hiddenServiceDir: '/x', webHost: '127.0.0.1', webPort: 1 })).to.throw(/unknown field \{\{BAR\}\}/);
  });

  it('renders the appliance torrc: the filled template, then the lines that let tor\'s group read the hostname', () => {
    const values = { hiddenServiceDir: '/srv/my onion', webHost: '::1', webPort: 8080 };
    const out = applianceTorrc(template, values);
    expect(out.startsWith('# Written by kzymy scripts/provision.sh')).to.equal(true);
    expect(out).to.include(`${renderTorrc(template, values).trimEnd()}\n\n# The appliance: kzymy.service (group debian-tor) reads /srv/my onion/hostname.\n`);
    expect(out.endsWith('\nDataDirectoryGroupReadable 1\nHiddenServiceDirGroupReadable 1\n')).to.equal(true);
    expect(() => applianceTorrc(template, { ...values, webPort: 0 })).to.throw(/real port/);
  });

  it('renders a torrc that tor --verify-config accepts', async () => {
    const hsDir = path.join(tmp.dir, 'with space', 'onion');
    await mkdir(hsDir, { recursive: true, mode: 0o700 });
    const file = path.join(tmp.dir, 'torrc');
    const body = renderTorrc(template, { hiddenServiceDir: hsDir, webHost: '127.0.0.1', webPort: 18080 });
    await writeFile(file, `${body}DataDirectory ${path.join(tmp.dir, 'data')}\n`, { mode: 0o600 });
    const { stdout } = await run('tor', ['--verify-config', '-f', file, '--defaults-torrc', '/dev/null']);
    expect(stdout).to.include('Configuration was valid');
  });

  it('renders the managed torrc (template + managed lines + extraConfig) that tor accepts', async () => {
    const config = loadConfig({ env: { KZYMY_DATA_DIR: path.join(tmp.dir, 'kz'), KZYMY_WEB_PORT: '18080', PATH: process.env.PATH } });
    config.tor.extraConfig = ['CircuitBuildTimeout 30'];
    const text = managedTorrc(template, config);
    expect(text).to.match(new RegExp(`^__OwningControllerProcess ${process.pid}$`, 'm'));
    expect(text).to.match(/^GeoIPFile ""$/m);
    expect(text.trimEnd().split('\n').pop()).to.equal('CircuitBuildTimeout 30');
    const file = path.join(tmp.dir, 'managed-torrc');
    await writeFile(file, text, { mode: 0o600 });
    const { stdout } = await run('tor', ['--verify-config', '-f', file, '--defaults-torrc', '/dev/null']);
    expect(stdout).to.include('Configuration was valid');
  });

  it('recognises v3 onion addresses by their checksum', () => {
    const good = 'l27cqqvdyabsueyd6buvcs6y2yu2rv3dyctqe7ntwruwqj32fz2uhmad.onion';
    expect(isV3Onion(good)).to.equal(true);
    expect(isV3Onion(good.replace('l27', 'l28'))).to.equal(false);
    expect(isV3Onion('expyuzz4wqqyqhjn.onion')).to.equal(false);
    expect(isV3Onion(`${good}\n`)).to.equal(false);
  });
});
