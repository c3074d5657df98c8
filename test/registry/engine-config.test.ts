// The registry.* settings: which engine, and where its database is.
import { expect } from 'chai';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig, ConfigError } from '../../src/config/index.js';
import { tempDir } from '../helpers/env.js';

function problems(env: NodeJS.ProcessEnv): string[] {
  try {
    loadConfig({ env: { PATH: '', ...env }, cwd: '/srv/kzymy' });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return expect.fail('expected a ConfigError');
}

describe('config: registry engine', () => {
  it('defaults to the embedded lowdb engine', () => {
    expect(loadConfig({ env: { PATH: '' }, cwd: '/srv/kzymy' }).registry).to.deep.equal({ engine: 'lowdb', url: null });
  });

  it('takes postgres with a TCP or a unix-socket URL', () => {
    for (const url of [
      'postgresql:///kzymy?host=/run/postgresql',
      'postgresql://kzymy@/kzymy?host=/run/postgresql',
      'postgresql://%2Frun%2Fpostgresql/kzymy',
      'postgres://kzymy:secret@db.example:5433/kzymy?sslmode=require',
    ]) {
      const c = loadConfig({ env: { PATH: '', KZYMY_REGISTRY_ENGINE: 'postgres', KZYMY_REGISTRY_URL: url }, cwd: '/srv/kzymy' });
      expect(c.registry, url).to.deep.equal({ engine: 'postgres', url });
    }
  });

  it('says what is wrong in one sentence each, never repeating a password', () => {
    expect(problems({ KZYMY_REGISTRY_ENGINE: 'mysql' })).to.deep.equal(['The registry engine "mysql" (registry.engine, KZYMY_REGISTRY_ENGINE) is not one of lowdb, postgres.']);
    const [none] = problems({ KZYMY_REGISTRY_ENGINE: 'postgres' });
    expect(none).to.match(/^The registry engine "postgres" needs "registry.url" \(KZYMY_REGISTRY_URL\), such as postgresql:\/\/\/kzymy\?host=\/run\/postgresql\.$/);
    for (const url of ['mysql://kzymy:hunter2@db/kzymy', 'postgresql://kzymy:hunter2@db:port/kzymy', 'postgresql://kzymy:hunter2@db/ky my']) {
      const found = problems({ KZYMY_REGISTRY_ENGINE: 'postgres', KZYMY_REGISTRY_URL: url });
      expect(found, url).to.have.length(1);
      expect(found[0], url).to.match(/^The setting "registry.url" \(KZYMY_REGISTRY_URL\) must be a PostgreSQL URL such as .*\.$/);
      expect(found[0], url).not.to.include('hunter2');
    }
  });

  it('reads the registry section of the file, and the environment wins', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const file = path.join(dir, 'config.json');
      await writeFile(file, JSON.stringify({ registry: { engine: 'postgres', url: 'postgresql:///kzymy?host=/run/postgresql' } }));
      expect(loadConfig({ file, env: { PATH: '' } }).registry).to.deep.equal({ engine: 'postgres', url: 'postgresql:///kzymy?host=/run/postgresql' });
      expect(loadConfig({ file, env: { PATH: '', KZYMY_REGISTRY_ENGINE: 'lowdb' } }).registry).to.deep.equal({ engine: 'lowdb', url: null });
      await writeFile(file, JSON.stringify({ registry: { engine: 'postgres', uri: 'postgresql:///kzymy' } }));
      try {
        loadConfig({ file, env: { PATH: '' } });
        expect.fail('expected a ConfigError');
      } catch (err) {
        expect((err as ConfigError).problems).to.include('Unknown setting "registry.uri" in the configuration file.');
      }
    } finally {
      await cleanup();
    }
  });
});
