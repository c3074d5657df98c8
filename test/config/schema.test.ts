// The settings of schema.ts as the one declaration: the sentences its schemas give for a key the file should
// not hold and for a value of the wrong kind (in the file and in the environment), the
// environment variables it maps, and the Config types derived from it.
import { expect } from 'chai';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig, type Config, type RegistryConfig, type SmtpConfig, type TorConfig } from '../../src/config/index.js';
import { envVars, settings } from '../../src/config/schema.js';
import { tempDir } from '../helpers/env.js';
import { problems } from './problems.js';

async function withFile(content: unknown, fn: (file: string) => void | Promise<void>): Promise<void> {
  const { dir, cleanup } = await tempDir();
  try {
    const file = path.join(dir, 'c.json');
    await writeFile(file, JSON.stringify(content));
    await fn(file);
  } finally {
    await cleanup();
  }
}

/** True when A and B are the same type. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;

describe('config: the schema', () => {
  it('refuses a key the file should not hold, one sentence each', async () => {
    await withFile({ domian: 'x.example', smtp: { prot: 25, bogus: 1 }, log: { level: 'info' } }, (file) => {
      expect(problems(() => loadConfig({ file, env: { PATH: '' } }))).to.deep.equal([
        'Unknown setting "domian" in the configuration file.',
        'Unknown setting "smtp.prot" in the configuration file.',
        'Unknown setting "smtp.bogus" in the configuration file.',
      ]);
    });
  });

  it('refuses a section that is not an object', async () => {
    await withFile({ smtp: [25] }, (file) => {
      expect(problems(() => loadConfig({ file, env: { PATH: '' } }))).to.deep.equal(['The setting "smtp" must be an object.']);
    });
  });

  it('says what a value of the wrong kind in the file is and what is expected', async () => {
    await withFile({ smtp: { port: 'twenty-five', workers: 0 }, tor: { manage: 'yes', binary: 7, extraConfig: 'Log notice' }, dns: { addresses: '203.0.113.25' } }, (file) => {
      expect(problems(() => loadConfig({ file, env: { PATH: '' } }))).to.deep.equal([
        'The setting "smtp.port" must be a whole number from 0 to 65535; it is "twenty-five".',
        'The setting "smtp.workers" (KZYMY_SMTP_WORKERS) must be "auto" or a whole number from 1 to 64; it is 0.',
        'The setting "tor.manage" must be true or false (1 or 0 in the environment); it is "yes".',
        'The setting "tor.binary" must be a non-empty string.',
        'The setting "tor.extraConfig" must be a list of single torrc lines.',
        'The setting "dns.addresses" (KZYMY_PUBLIC_IP) must list IP addresses, such as ["203.0.113.25", "2001:db8::25"].',
      ]);
    });
  });

  it('says the same of a wrong value in the environment', () => {
    const env = { PATH: '', KZYMY_SMTP_PORT: '25x', KZYMY_WEB_PORT: '-1', KZYMY_TOR_MANAGE: 'yes', KZYMY_LOG_LEVEL: 'loud', KZYMY_SMTP_WORKERS: 'many' };
    expect(problems(() => loadConfig({ env }))).to.deep.equal([
      'The setting "smtp.port" must be a whole number from 0 to 65535; it is "25x".',
      'The setting "smtp.workers" (KZYMY_SMTP_WORKERS) must be "auto" or a whole number from 1 to 64; it is "many".',
      'The setting "web.port" must be a whole number from 0 to 65535; it is "-1".',
      'The setting "tor.manage" must be true or false (1 or 0 in the environment); it is "yes".',
      'The log level "loud" is not one of fatal, error, warn, info, debug, trace, silent.',
    ]);
  });

  it('takes numbers and flags written as text, as the environment gives them', () => {
    const c = loadConfig({ env: { PATH: '', KZYMY_SMTP_PORT: '25', KZYMY_TOR_MANAGE: 'true', KZYMY_SMTP_WORKERS: '3', KZYMY_PUBLIC_IP: '203.0.113.25, 2001:db8::25' } });
    expect(c.smtp).to.include({ port: 25, workers: 3 });
    expect(c.tor.manage).to.equal(true);
    expect(c.dns.addresses).to.deep.equal(['203.0.113.25', '2001:db8::25']);
  });

  it('maps the environment variables it always has', () => {
    expect(Object.fromEntries(envVars())).to.deep.equal({
      KZYMY_DOMAIN: 'domain',
      KZYMY_DATA_DIR: 'dataDir',
      KZYMY_MAILDIR_ROOT: 'maildirRoot',
      KZYMY_REGISTRY_ENGINE: 'registry.engine',
      KZYMY_REGISTRY_URL: 'registry.url',
      KZYMY_POSTMASTER: 'postmaster',
      KZYMY_SMTP_HOST: 'smtp.host',
      KZYMY_SMTP_PORT: 'smtp.port',
      KZYMY_SMTP_WORKERS: 'smtp.workers',
      KZYMY_WEB_HOST: 'web.host',
      KZYMY_WEB_PORT: 'web.port',
      KZYMY_TOR_MANAGE: 'tor.manage',
      KZYMY_TOR_FRONTEND_ONION: 'tor.frontendOnion',
      KZYMY_TOR_HOSTNAME_FILE: 'tor.hostnameFile',
      KZYMY_MX_HOST: 'dns.mxHost',
      KZYMY_PUBLIC_IP: 'dns.addresses',
      KZYMY_LOG_LEVEL: 'log.level',
      KZYMY_LOG_FORMAT: 'log.format',
    });
  });

  it('builds a Config with exactly the settings it declares, and the source', () => {
    const c = loadConfig({ env: { PATH: '' }, cwd: '/srv/kzymy' }) as unknown as Record<string, Record<string, unknown>>;
    const keys = (o: Record<string, unknown>, at: string): string[] =>
      Object.entries(o).flatMap(([k, v]) => (v && typeof v === 'object' && !Array.isArray(v) ? keys(v as Record<string, unknown>, `${at}${k}.`) : [`${at}${k}`]));
    const { source, ...rest } = c;
    expect(source).to.deep.equal({ file: null });
    expect(keys(rest, '')).to.have.members(settings().map((l) => l.key));
  });

  it('derives the TypeScript types from the schemas', () => {
    const derived: [
      Equal<SmtpConfig['port'], number>,
      Equal<Config['postmaster'], string | null>,
      Equal<RegistryConfig, { engine: 'lowdb' | 'postgres'; url: string | null }>,
      Equal<Config['log']['level'], 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'>,
      Equal<Config['log']['format'], 'json' | 'pretty' | 'auto'>,
      Equal<TorConfig['extraConfig'], string[]>,
      Equal<Config['tor']['manage'], boolean>,
      Equal<Config['source'], { file: string | null }>,
    ] = [true, true, true, true, true, true, true, true];
    expect(derived.every(Boolean)).to.equal(true);
    const registry = { engine: 'postgres', url: 'postgresql:///kzymy' } satisfies RegistryConfig;
    expect(registry.engine).to.equal('postgres');
  });
});
