import { expect } from 'chai';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig, isLoopbackHost } from '../../src/config/index.js';
import { tempDir } from '../helpers/env.js';
import { problems } from './problems.js';

describe('config', () => {
  it('has defaults that run from a checkout', () => {
    const c = loadConfig({ env: { PATH: '' }, cwd: '/srv/kzymy' });
    expect(c.domain).to.equal('kzymy.localhost');
    expect(c.dataDir).to.equal('/srv/kzymy/data');
    expect(c.maildirRoot).to.equal('/srv/kzymy/maildirs');
    expect(c.smtp).to.include({ host: '0.0.0.0', port: 2525 });
    expect(c.web).to.deep.equal({ host: '127.0.0.1', port: 8080 });
    expect(c.tor.manage).to.equal(false, 'no tor on an empty PATH');
    expect(c.tor.hostnameFile.startsWith('/srv/kzymy/data/')).to.equal(true);
    expect(c.limits).to.include({ maxMessageBytes: 25 * 1048576, quotaBytes: 100 * 1048576, minFreeBytes: 512 * 1048576, retentionDays: 30 });
  });

  it('reads a file, resolves its relative paths against it, and lets the environment win', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const f = path.join(dir, 'c.json');
      await writeFile(f, JSON.stringify({ domain: 'Mail.Example.COM', dataDir: 'd', smtp: { port: 25 }, tor: { manage: true } }));
      const c = loadConfig({ file: f, env: { KZYMY_SMTP_PORT: '2626', KZYMY_TOR_MANAGE: '0', KZYMY_MAILDIR_ROOT: 'm' }, cwd: '/w' });
      expect(c.domain).to.equal('mail.example.com');
      expect(c.dataDir).to.equal(path.join(dir, 'd'));
      expect(c.maildirRoot).to.equal('/w/m');
      expect(c.smtp.port).to.equal(2626);
      expect(c.tor.manage).to.equal(false);
      expect(c.source.file).to.equal(f);
    } finally {
      await cleanup();
    }
  });

  it('reports every mistake as its own sentence', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const f = path.join(dir, 'c.json');
      await writeFile(f, JSON.stringify({ domain: 'not a domain', smtp: { port: 70000, bogus: 1 }, limits: { retentionDays: 0 }, extra: true }));
      const p = problems(() => loadConfig({ file: f, env: { KZYMY_WEB_HOST: '192.0.2.1', KZYMY_TOR_MANAGE: 'maybe' } }));
      expect(p.join('\n')).to.include('Unknown setting "extra"');
      expect(p.join('\n')).to.include('Unknown setting "smtp.bogus"');
      expect(p.join('\n')).to.include('"smtp.port" must be a whole number from 0 to 65535');
      expect(p.join('\n')).to.include('"limits.retentionDays"');
      expect(p.join('\n')).to.include('not a valid DNS name');
      expect(p.join('\n')).to.include('must stay on loopback');
      expect(p.join('\n')).to.include('"tor.manage" must be true or false');
      for (const s of p) expect(s).to.match(/^[A-Z"].*\.$/);
    } finally {
      await cleanup();
    }
  });

  it('explains a missing or broken file', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      expect(problems(() => loadConfig({ file: path.join(dir, 'none.json'), env: {} }))[0]).to.match(/does not exist/);
      await writeFile(path.join(dir, 'b.json'), '{ nope');
      expect(problems(() => loadConfig({ file: path.join(dir, 'b.json'), env: {} }))[0]).to.match(/not valid JSON/);
      await writeFile(path.join(dir, 'a.json'), '[1]');
      expect(problems(() => loadConfig({ file: path.join(dir, 'a.json'), env: {} }))[0]).to.match(/one JSON object/);
    } finally {
      await cleanup();
    }
  });

  it('knows loopback', () => {
    for (const h of ['127.0.0.1', '127.8.9.1', '::1', 'localhost']) expect(isLoopbackHost(h), h).to.equal(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.org', '128.0.0.1']) expect(isLoopbackHost(h), h).to.equal(false);
  });
});

describe('config: SMTP connection limits and deadlines', () => {
  it('defaults to 20 connections a source, 5-minute command lines and 500 bytes/s in DATA', () => {
    const c = loadConfig({ env: { PATH: '' }, cwd: '/srv/kzymy' });
    expect(c.smtp).to.include({ maxClients: 200, maxClientsPerAddress: 20, commandTimeoutMs: 300_000, minDataRate: 500, idleTimeoutMs: 300_000 });
  });

  it('reads them from the file and refuses values that would switch them off', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const f = path.join(dir, 'c.json');
      await writeFile(f, JSON.stringify({ smtp: { maxClientsPerAddress: 5, commandTimeoutMs: 60_000, minDataRate: 2000 } }));
      expect(loadConfig({ file: f, env: {} }).smtp).to.include({ maxClientsPerAddress: 5, commandTimeoutMs: 60_000, minDataRate: 2000 });
      await writeFile(f, JSON.stringify({ smtp: { maxClientsPerAddress: 0, commandTimeoutMs: 10, minDataRate: 0 } }));
      const p = problems(() => loadConfig({ file: f, env: {} })).join('\n');
      expect(p).to.include('"smtp.maxClientsPerAddress" must be a whole number from 1');
      expect(p).to.include('"smtp.commandTimeoutMs" must be a whole number from 1000');
      expect(p).to.include('"smtp.minDataRate" must be a whole number from 1');
    } finally {
      await cleanup();
    }
  });
});
