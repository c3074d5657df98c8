// Quota and disk floor under concurrent senders: a real kzymy-server process, parallel raw SMTP
// clients, real files (and a real small tmpfs for the disk floor).
import { expect } from 'chai';
import { mkdir, readdir, stat, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { requireBinaries } from '../helpers/env.js';
import { makeGpgKey } from '../helpers/gpg.js';
import { marker, rawMessage } from '../helpers/mail.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { useTmpfs } from '../helpers/tmpfs.js';

const MiB = 1024 * 1024;

async function addUser(srv: RunningServer): Promise<string> {
  const key = await makeGpgKey('ed25519');
  const f = path.join(srv.base, `key-${key.fingerprint}.asc`);
  await writeFile(f, key.publicArmored);
  return (await srv.cli('users', 'add', '--key', f)).trim();
}

async function filesIn(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

async function bytesIn(dir: string): Promise<number> {
  let total = 0;
  for (const f of await filesIn(dir)) total += (await stat(path.join(dir, f))).size;
  return total;
}

describe('SMTP space limits under concurrency (real server, parallel senders)', function () {
  before(function () {
    requireBinaries(this, 'gpg', 'openssl');
  });

  it('six parallel 900 KB messages to a user with a 2 MiB quota: the stored total stays within it, the others get 452 4.2.2', async function () {
    const quota = 2 * MiB;
    const srv = await startServer({ config: { limits: { quotaBytes: quota } } });
    try {
      const user = await addUser(srv);
      const rcpt = `q@${user}.${srv.domain}`;
      const dir = path.join(srv.maildirRoot, user);
      let peak = 0;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          peak = Math.max(peak, await bytesIn(path.join(dir, 'new')));
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      const replies = await Promise.all(Array.from({ length: 6 }, () => sendRaw(srv.smtpPort, [rcpt], rawMessage(marker(), { bodyBytes: 900_000 }))));
      sampling = false;
      await sampler;
      const codes = replies.map((r) => r.reply);
      const ok = codes.filter((c) => c.startsWith('250 '));
      expect(ok.length, codes.join('\n')).to.be.at.least(1);
      for (const c of codes.filter((x) => !x.startsWith('250 '))) expect(c).to.match(/^452 4\.2\.2 /);
      const stored = await bytesIn(path.join(dir, 'new'));
      expect(stored, 'bytes stored').to.be.at.most(quota);
      expect(peak, 'bytes stored at any moment').to.be.at.most(quota);
      expect(await filesIn(path.join(dir, 'new'))).to.have.length(ok.length);
      expect(await filesIn(path.join(dir, 'tmp')), 'no partial file').to.deep.equal([]);
      // A message that fits still gets in: the refused ones left no reservation behind.
      const small = await sendRaw(srv.smtpPort, [rcpt], rawMessage(marker(), { bodyBytes: 1000 }));
      expect(small.reply).to.match(/^250 /);
    } finally {
      await srv.cleanup();
    }
  });

  describe('disk floor on a 20 MiB tmpfs', function () {
    const mnt = useTmpfs('20m', 'kzymy-tmpfs-');

    it('eight parallel 2 MB messages with a 10 MiB floor: free space never drops under it, the refused get 452 4.3.1', async function () {
      const floor = 10 * MiB;
      const root = path.join(mnt.dir(), 'maildirs');
      await mkdir(root, { mode: 0o700 });
      const srv = await startServer({ config: { maildirRoot: root, limits: { minFreeBytes: floor, maxMessageBytes: 4 * MiB } } });
      try {
        const user = await addUser(srv);
        const rcpt = `d@${user}.${srv.domain}`;
        const free = async () => {
          const s = await statfs(root);
          return s.bavail * s.bsize;
        };
        let lowest = await free();
        expect(lowest).to.be.above(floor);
        let sampling = true;
        const sampler = (async () => {
          while (sampling) {
            lowest = Math.min(lowest, await free());
            await new Promise((r) => setTimeout(r, 2));
          }
        })();
        const replies = await Promise.all(Array.from({ length: 8 }, () => sendRaw(srv.smtpPort, [rcpt], rawMessage(marker(), { bodyBytes: 2_000_000 }))));
        sampling = false;
        await sampler;
        lowest = Math.min(lowest, await free());
        const codes = replies.map((r) => r.reply);
        const ok = codes.filter((c) => c.startsWith('250 '));
        expect(ok.length, codes.join('\n')).to.be.at.least(1);
        expect(ok.length, codes.join('\n')).to.be.below(8);
        for (const c of codes.filter((x) => !x.startsWith('250 '))) expect(c).to.match(/^452 4\.3\.1 /);
        expect(lowest, 'free bytes at the lowest').to.be.at.least(floor);
        expect(await filesIn(path.join(root, user, 'new'))).to.have.length(ok.length);
        expect(await filesIn(path.join(root, user, 'tmp')), 'nothing left in tmp/').to.deep.equal([]);
      } finally {
        await srv.cleanup();
      }
    });
  });
});
