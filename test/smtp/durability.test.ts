// Promise: a message acknowledged with 250 is on stable storage. The server is
// killed with SIGKILL in the middle of 200 concurrent deliveries; after a restart every
// acknowledged message is in new/ and decrypts, and no partial file remains anywhere.
import { expect } from 'chai';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { requireBinaries } from '../helpers/env.js';
import { startServer } from '../helpers/server.js';
import { makeGpgKey, gpgDecryptPgpMime } from '../helpers/gpg.js';
import { rawMessage } from '../helpers/mail.js';
import { sendRaw } from '../helpers/smtp-client.js';

describe('durability: kill -9 during 200 concurrent deliveries', function () {
  before(function () {
    requireBinaries(this, 'gpg', 'openssl');
  });

  it('keeps every message that got 250, and leaves no partial file', async function () {
    const srv = await startServer({ config: { smtp: { maxClients: 400, maxClientsPerAddress: 400 } } });
    try {
      const key = await makeGpgKey('ed25519');
      const keyFile = path.join(srv.base, 'k.asc');
      await writeFile(keyFile, key.publicArmored);
      const user = (await srv.cli('users', 'add', '--key', keyFile)).trim();
      const rcpt = `load@${user}.${srv.domain}`;

      const acked = new Set<string>();
      let killed = false;
      const sends = Array.from({ length: 200 }, async (_, i) => {
        const id = `DURABLE-${String(i).padStart(3, '0')}-ID`;
        // Mixed sizes: most in memory, some large enough to take the streaming path.
        const msg = rawMessage(id, { bodyBytes: i % 10 === 0 ? 1_500_000 : 40_000 });
        const r = await sendRaw(srv.smtpPort, [rcpt], msg);
        if (r.reply.startsWith('250')) {
          acked.add(id);
          if (acked.size >= 40 && !killed) {
            killed = true;
            srv.child.kill('SIGKILL');
          }
        }
      });
      await Promise.all(sends);
      await srv.stop('SIGKILL');
      expect(killed, 'the server was killed mid-run').to.equal(true);
      expect(acked.size).to.be.at.least(40).and.below(200);

      // Restart on the same folders: stale tmp/ files are cleaned at start.
      const again = await startServer({ base: srv.base });
      try {
        expect(await readdir(path.join(srv.maildirRoot, user, 'tmp'))).to.deep.equal([]);
        const dir = path.join(srv.maildirRoot, user, 'new');
        const found = new Set<string>();
        for (const f of await readdir(dir)) {
          // Every file in new/ is whole: it decrypts.
          const plain = (await gpgDecryptPgpMime(key.gnupghome, await readFile(path.join(dir, f)))).toString('latin1');
          const m = /DURABLE-\d{3}-ID/.exec(plain);
          expect(m, `file ${f} holds a test message`).to.not.equal(null);
          found.add(m![0]);
        }
        for (const id of acked) expect(found.has(id), `${id} got 250 and must be stored`).to.equal(true);
        console.log(`      ${acked.size} acknowledged before the kill, ${found.size} stored`);
      } finally {
        await again.stop();
      }
    } finally {
      await srv.cleanup();
    }
  });
});
