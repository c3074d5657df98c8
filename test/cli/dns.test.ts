// `kzymy-server dns`: the records a sample configuration needs, through the real command line.
import { expect } from 'chai';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig, ConfigError } from '../../src/config/index.js';
import { tempDir } from '../helpers/env.js';
import { cli } from './run.js';

/** The records of zone-file lines, without alignment and comments. */
function records(stdout: string): string[] {
  return stdout
    .split('\n')
    .filter((l) => l && !l.startsWith(';'))
    .map((l) => l.replace(/\s+;.*$/, '').replace(/\s+/g, ' '));
}

describe('kzymy-server dns', function () {
  let dir: string;
  let cleanup: () => Promise<void>;
  before(async () => ({ dir, cleanup } = await tempDir('kzymy-dns-')));
  after(async () => cleanup?.());

  it('prints the wildcard MX, the MX host addresses and SPF for a sample configuration', async function () {
    const cfg = path.join(dir, 'config.json');
    await writeFile(
      cfg,
      JSON.stringify({ domain: 'kzymy.example.org', postmaster: 'opsuser', dataDir: dir, dns: { mxHost: 'in.example.net', addresses: ['203.0.113.25', '2001:db8::25'] } }),
    );
    const r = await cli(['dns', '--config', cfg]);
    expect(r.code, r.stderr).to.equal(0);
    expect(records(r.stdout)).to.deep.equal([
      '*.kzymy.example.org. IN MX 10 in.example.net.',
      'kzymy.example.org. IN MX 10 in.example.net.',
      'in.example.net. IN A 203.0.113.25',
      'in.example.net. IN AAAA 2001:db8::25',
      '*.kzymy.example.org. IN TXT "v=spf1 -all"',
      'kzymy.example.org. IN TXT "v=spf1 -all"',
      'in.example.net. IN TXT "v=spf1 -all"',
    ]);
    // Every record line says why it is there.
    for (const l of r.stdout.split('\n').filter((x) => x && !x.startsWith(';'))) expect(l).to.match(/ ; \S/);
    const json = JSON.parse((await cli(['dns', '--json', '--config', cfg])).stdout) as { records: { name: string; type: string; value: string }[] };
    expect(json.records.map((x) => `${x.name} IN ${x.type} ${x.value}`)).to.deep.equal(records(r.stdout));
  });

  it('without a postmaster the bare domain gets a null MX; unknown addresses are a placeholder with a note', async function () {
    const r = await cli(['dns'], { KZYMY_DOMAIN: 'kzymy.example.com', KZYMY_DATA_DIR: dir });
    expect(r.code, r.stderr).to.equal(0);
    expect(records(r.stdout)).to.include.members(['kzymy.example.com. IN MX 0 .', 'mx.kzymy.example.com. IN A PUBLIC-IPV4']);
    expect(r.stdout).to.match(/^; PUBLIC-IPV4 stands for the public IPv4 address/m);
    expect(r.stdout).to.match(/^; postmaster is not set/m);
  });

  it('takes KZYMY_MX_HOST and KZYMY_PUBLIC_IP from the environment, as provisioning passes them', async function () {
    const r = await cli(['dns'], { KZYMY_DOMAIN: 'kzymy.example.com', KZYMY_DATA_DIR: dir, KZYMY_MX_HOST: 'MX1.Example.COM.', KZYMY_PUBLIC_IP: '198.51.100.7, 2001:db8::7' });
    expect(records(r.stdout)).to.include.members(['*.kzymy.example.com. IN MX 10 mx1.example.com.', 'mx1.example.com. IN A 198.51.100.7', 'mx1.example.com. IN AAAA 2001:db8::7']);
  });

  it('refuses a bad MX host or address with one sentence each', function () {
    try {
      loadConfig({ env: { KZYMY_MX_HOST: 'not a host', KZYMY_PUBLIC_IP: '203.0.113.300' } });
      expect.fail('expected a ConfigError');
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      expect(err.problems).to.deep.equal([
        'The MX host "not a host" (dns.mxHost) is not a valid DNS name.',
        'The setting "dns.addresses" (KZYMY_PUBLIC_IP) must list IP addresses, such as ["203.0.113.25", "2001:db8::25"].',
      ]);
    }
  });
});
