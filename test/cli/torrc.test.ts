// `kzymy-server torrc`: the torrc the command line renders (the one provisioning installs
// for the appliance's system tor), checked by tor itself.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { ROOT } from '../helpers/server.js';
import { cli } from './run.js';

const run = promisify(execFile);

/** Lines that are not comments or blank. */
const settings = (torrc: string): string[] => torrc.split('\n').filter((l) => l.trim() && !l.trimStart().startsWith('#'));

describe('kzymy-server torrc', function () {
  let dir: string;
  let cleanup: () => Promise<void>;
  let hsDir: string;

  before(async function () {
    requireBinaries(this, 'tor', 'bash');
    ({ dir, cleanup } = await tempDir('kzymy-torrc-cli-'));
    hsDir = path.join(dir, 'with space', 'onion');
    await mkdir(hsDir, { recursive: true, mode: 0o700 });
  });
  after(async () => cleanup?.());

  /** tor --verify-config of `torrc` with the network off and a scratch DataDirectory. */
  async function verify(torrc: string, name: string): Promise<string> {
    const file = path.join(dir, name);
    await writeFile(file, torrc, { mode: 0o600 });
    const { stdout } = await run('tor', ['--verify-config', '--defaults-torrc', '/dev/null', '-f', file, '--DisableNetwork', '1', '--DataDirectory', path.join(dir, `data-${name}`)]);
    return stdout;
  }

  it('has --help', async () => {
    const r = await cli(['torrc', '--help']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^Usage: kzymy-server torrc/);
    expect(r.stdout).to.include('--appliance');
  });

  it('quotes values, brackets an IPv6 web host, and renders what tor accepts', async () => {
    const r = await cli(['torrc', '--appliance', '--hidden-service-dir', hsDir, '--web-host', '::1', '--web-port', '18080']);
    expect(r.code, r.stderr).to.equal(0);
    const lines = settings(r.stdout);
    expect(lines).to.include.members([
      `HiddenServiceDir "${hsDir}"`,
      'HiddenServicePort 80 [::1]:18080',
      'HiddenServicePoWDefensesEnabled 1',
      'DataDirectoryGroupReadable 1',
      'HiddenServiceDirGroupReadable 1',
    ]);
    expect(lines.join('\n')).to.not.include('{{');
    expect(await verify(r.stdout, 'appliance-torrc')).to.include('Configuration was valid');
  });

  it('--onionbalance-frontend (or tor.frontendOnion) makes the onion service an Onionbalance instance, which tor accepts; a bad address is a sentence', async () => {
    const frontend = 'cr4dwjmvsvug6zc36pgbvkbkrfqywzeypsdoog6mx3yujvstar5fauid.onion';
    const r = await cli(['torrc', '--appliance', '--hidden-service-dir', hsDir, '--web-host', '127.0.0.1', '--web-port', '18080', '--onionbalance-frontend', frontend]);
    expect(r.code, r.stderr).to.equal(0);
    expect(settings(r.stdout)).to.include('HiddenServiceOnionbalanceInstance 1');
    expect(r.stdout).to.include(frontend);
    // tor reads the frontend's address from ob_config (written by the managed tor's start, or provisioning).
    await writeFile(path.join(hsDir, 'ob_config'), `MasterOnionAddress ${frontend}\n`, { mode: 0o600 });
    expect(await verify(r.stdout, 'instance-torrc')).to.include('Configuration was valid');
    await rm(path.join(hsDir, 'ob_config'));

    const cfg = path.join(dir, 'config-instance.json');
    await writeFile(cfg, JSON.stringify({ domain: 'torrc.test', dataDir: path.join(dir, 'data'), tor: { manage: false, hostnameFile: path.join(hsDir, 'hostname'), frontendOnion: frontend.toUpperCase() } }));
    const fromConfig = await cli(['torrc', '--config', cfg]);
    expect(fromConfig.code, fromConfig.stderr).to.equal(0);
    expect(settings(fromConfig.stdout)).to.include('HiddenServiceOnionbalanceInstance 1');

    // Any case on the command line, as in the configuration.
    const upper = await cli(['torrc', '--hidden-service-dir', hsDir, '--web-host', '127.0.0.1', '--web-port', '80', '--onionbalance-frontend', frontend.toUpperCase()]);
    expect(upper.code, upper.stderr).to.equal(0);
    expect(upper.stdout).to.include(`frontend ${frontend}:`);
    const bad = await cli(['torrc', '--hidden-service-dir', hsDir, '--web-host', '127.0.0.1', '--web-port', '80', '--onionbalance-frontend', 'example.onion']);
    expect(bad.code).to.equal(1);
    expect(bad.stderr).to.equal('kzymy-server: The Onionbalance frontend "example.onion" is not a v3 onion address (56 base32 characters and ".onion").\n');
    await writeFile(cfg, JSON.stringify({ domain: 'torrc.test', tor: { frontendOnion: 'example.onion' } }));
    const badConfig = await cli(['torrc', '--config', cfg, '--hidden-service-dir', hsDir, '--web-host', '127.0.0.1', '--web-port', '80']);
    expect(badConfig.code).to.not.equal(0);
    expect(badConfig.stderr).to.include('The setting "tor.frontendOnion" must be a v3 onion address (56 base32 characters and ".onion").');
  });

  it('takes the values it is not given from the configuration, and leaves out the appliance lines without --appliance', async () => {
    const cfg = path.join(dir, 'config.json');
    await writeFile(cfg, JSON.stringify({ domain: 'torrc.test', dataDir: path.join(dir, 'data'), web: { host: '127.0.0.1', port: 18081 }, tor: { manage: false, hostnameFile: path.join(hsDir, 'hostname') } }));
    const r = await cli(['torrc', '--config', cfg]);
    expect(r.code, r.stderr).to.equal(0);
    const lines = settings(r.stdout);
    expect(lines).to.include.members([`HiddenServiceDir "${hsDir}"`, 'HiddenServicePort 80 127.0.0.1:18081']);
    expect(lines).to.not.include('HiddenServiceDirGroupReadable 1');
    expect(await verify(r.stdout, 'plain-torrc')).to.include('Configuration was valid');
  });

  it('refuses a port that is not one, and a template field it does not know, in one sentence', async () => {
    const port = await cli(['torrc', '--hidden-service-dir', hsDir, '--web-host', '127.0.0.1', '--web-port', 'eighty']);
    expect(port.code).to.equal(2);
    expect(port.stderr).to.include('give a port number');
    const template = path.join(dir, 'torrc-template');
    await writeFile(template, `${await readFile(path.join(ROOT, 'torrc'), 'utf8')}ContactInfo {{CONTACT}}\n`);
    const field = await cli(['torrc', '--template', template, '--hidden-service-dir', hsDir, '--web-host', '127.0.0.1', '--web-port', '80']);
    expect(field.code).to.equal(1);
    expect(field.stderr).to.equal('kzymy-server: The torrc template has an unknown field {{CONTACT}}.\n');
  });

  it('is what provision.sh --print-torrc prints: the project torrc filled in, then the appliance lines', async () => {
    const { stdout } = await run('bash', [path.join(ROOT, 'scripts', 'provision.sh'), '--print-torrc', ROOT], { cwd: ROOT });
    const r = await cli(['torrc', '--appliance', '--hidden-service-dir', '/var/lib/tor/kzymy', '--web-host', '127.0.0.1', '--web-port', '8080']);
    expect(r.code, r.stderr).to.equal(0);
    expect(stdout).to.equal(r.stdout);
    const template = await readFile(path.join(ROOT, 'torrc'), 'utf8');
    const filled = template.replace('{{HIDDEN_SERVICE_DIR}}', '/var/lib/tor/kzymy').replace('{{WEB_HOST}}', '127.0.0.1').replace('{{WEB_PORT}}', '8080');
    expect(stdout).to.equal(
      '# Written by kzymy scripts/provision.sh from the project torrc; changes are overwritten.\n' +
        `${filled.replace(/\n+$/, '')}\n\n` +
        '# The appliance: kzymy.service (group debian-tor) reads /var/lib/tor/kzymy/hostname.\n' +
        'DataDirectoryGroupReadable 1\nHiddenServiceDirGroupReadable 1\n',
    );
  });

  it('provision.sh --print-torrc with KZYMY_FRONTEND_ONION (one node of several) prints the instance torrc kzymy-server renders', async () => {
    const frontend = 'cr4dwjmvsvug6zc36pgbvkbkrfqywzeypsdoog6mx3yujvstar5fauid.onion';
    const { stdout } = await run('bash', [path.join(ROOT, 'scripts', 'provision.sh'), '--print-torrc', ROOT], { cwd: ROOT, env: { ...process.env, KZYMY_FRONTEND_ONION: frontend } });
    const r = await cli(['torrc', '--appliance', '--hidden-service-dir', '/var/lib/tor/kzymy', '--web-host', '127.0.0.1', '--web-port', '8080', '--onionbalance-frontend', frontend]);
    expect(r.code, r.stderr).to.equal(0);
    expect(stdout).to.equal(r.stdout);
    expect(settings(stdout)).to.include('HiddenServiceOnionbalanceInstance 1');
  });
});
