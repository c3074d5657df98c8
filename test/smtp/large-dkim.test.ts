// A 50 MB message streams through encryption with bounded memory; a DKIM signature
// survives the trip (the original is kept byte for byte inside the encryption).
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { makeGpgKey, gpgDecryptPgpMime, run } from '../helpers/gpg.js';
import { marker, rawMessage, newFiles } from '../helpers/mail.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { swaks, swaksWire } from '../helpers/swaks.js';

const exec = promisify(execFile);

async function rssKiB(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)![1]);
  return { rss: get('VmRSS'), hwm: get('VmHWM') };
}

async function addUser(srv: RunningServer, armored: string): Promise<string> {
  const f = path.join(srv.base, 'key.asc');
  await writeFile(f, armored);
  return (await srv.cli('users', 'add', '--key', f)).trim();
}

describe('large messages and DKIM (real server)', function () {
  let srv: RunningServer;
  before(async function () {
    requireBinaries(this, 'gpg', 'swaks', 'openssl', 'python3');
    srv = await startServer({ config: { limits: { maxMessageBytes: 400 * 1024 * 1024, quotaBytes: 500 * 1024 * 1024 } } });
  });
  after(async () => srv?.cleanup());

  it('accepts a 50 MB message, streams it with bounded memory, and it decrypts', async function () {
    const key = await makeGpgKey('ed25519');
    const user = await addUser(srv, key.publicArmored);
    const mark = marker();
    const msg = rawMessage(mark, { bodyBytes: Number(process.env.KZYMY_TEST_BIG_MB ?? 50) * 1024 * 1024 });
    const pid = srv.child.pid!;
    const before = await rssKiB(pid);
    let peak = before.rss;
    const sampler = setInterval(() => {
      rssKiB(pid).then((m) => (peak = Math.max(peak, m.rss)), () => undefined);
    }, 50);
    const r = await sendRaw(srv.smtpPort, [`big@${user}.${srv.domain}`], msg);
    clearInterval(sampler);
    expect(r.reply).to.match(/^250 2\.0\.0 /);
    const growthMiB = (peak - before.rss) / 1024;
    console.log(`      server RSS before ${Math.round(before.rss / 1024)} MiB, peak while streaming ${Math.round(peak / 1024)} MiB`);
    // Holding the message in memory would add its 50 MB plaintext, a copy of it, the
    // 50 MB ciphertext and 67 MB of armor (over 200 MiB); streaming adds buffers and
    // garbage-collector slack only (measured: 60-80 MiB; bench/ has the exact figures).
    expect(growthMiB, 'RSS growth while a 50 MB message streams').to.be.below(120);
    const files = await newFiles(srv.maildirRoot, user);
    expect(files).to.have.length(1);
    const file = await readFile(files[0]!);
    expect(file.includes(Buffer.from(mark))).to.equal(false);
    const plain = await gpgDecryptPgpMime(key.gnupghome, file);
    const start = plain.indexOf('\r\nFrom: ') + 2;
    expect(Buffer.compare(plain.subarray(start), msg)).to.equal(0);
  });

  it('keeps a DKIM signature valid after decryption', async function () {
    const { dir, cleanup } = await tempDir('kzymy-dkim-');
    try {
      await exec('openssl', ['genrsa', '-out', path.join(dir, 'dkim.pem'), '2048']);
      const pub = (await exec('openssl', ['rsa', '-in', path.join(dir, 'dkim.pem'), '-pubout', '-outform', 'DER'], { encoding: 'buffer' })).stdout;
      const txt = `v=DKIM1; k=rsa; p=${pub.toString('base64')}`;
      const key = await makeGpgKey('rsa3072');
      const user = await addUser(srv, key.publicArmored);
      const msg = rawMessage(marker(), { from: 'news@sender.example' });
      await writeFile(path.join(dir, 'msg.eml'), msg);
      // Sign with dkimpy (Debian's python3-dkim), relaxed/relaxed like most senders.
      const sign = await run('/usr/bin/python3', ['-c', [
        'import dkim,sys',
        `msg=open(sys.argv[1],'rb').read(); k=open(sys.argv[2],'rb').read()`,
        `sig=dkim.sign(msg,b'sel',b'sender.example',k,include_headers=[b'from',b'to',b'subject',b'date',b'message-id'],canonicalize=(b'relaxed',b'relaxed'))`,
        'sys.stdout.buffer.write(sig+msg)',
      ].join('\n'), path.join(dir, 'msg.eml'), path.join(dir, 'dkim.pem')]);
      expect(sign.code, sign.stderr).to.equal(0);
      const signed = sign.stdout;
      const r = await swaks({ port: srv.smtpPort, to: `dkim@${user}.${srv.domain}`, data: signed });
      expect(r.last).to.match(/^250 /);
      const files = await newFiles(srv.maildirRoot, user);
      const plain = await gpgDecryptPgpMime(key.gnupghome, await readFile(files[0]!));
      // Drop the three delivery headers kzymy added; what remains is what was sent.
      const lines = plain.toString('latin1').split('\r\n');
      expect(lines[0]).to.match(/^Return-Path:/);
      const original = Buffer.from(lines.slice(3).join('\r\n'), 'latin1');
      expect(Buffer.compare(original, swaksWire(signed))).to.equal(0);
      await writeFile(path.join(dir, 'received.eml'), plain);
      const verify = await run('/usr/bin/python3', ['-c', [
        'import dkim,sys',
        `txt=sys.argv[2].encode()`,
        'def dns(name, timeout=5): return txt if name==b"sel._domainkey.sender.example." else None',
        `ok=dkim.verify(open(sys.argv[1],'rb').read(), dnsfunc=dns)`,
        'print("PASS" if ok else "FAIL")',
      ].join('\n'), path.join(dir, 'received.eml'), txt]);
      expect(verify.stdout.toString().trim(), verify.stderr).to.equal('PASS');
    } finally {
      await cleanup();
    }
  });
});
