// Stored files read by real mail clients: Debian's notmuch (index.decrypt) and neomutt
// (gpgme) show the original's Subject, From and To after decryption. A real server stores
// the mail (real SMTP); the clients run against a Maildir with copies of the stored files,
// a GNUPGHOME of their own holding an unprotected key, neomutt inside a tmux of its own.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { checkPublicKey, deliveryHeaders, encryptBufferToPgpMime } from '../../src/pgp/index.js';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { gpg, gpgDecryptPayload, gpgDecryptPgpMime, run } from '../helpers/gpg.js';
import { newFiles } from '../helpers/mail.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { sendRaw } from '../helpers/smtp-client.js';

const SUBJECT = 'Quarterly invoice 4711 for the shop';
const FROM = 'Alice Sender <alice@sender.example>';

function original(to: string): Buffer {
  return Buffer.from(
    [
      `From: ${FROM}`,
      `To: Shop <${to}>`,
      `Subject: ${SUBJECT}`,
      'Date: Tue, 03 Mar 2026 10:00:00 +0000',
      `Message-ID: <${randomBytes(6).toString('hex')}@sender.example>`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=us-ascii',
      '',
      'The invoice body.',
      '',
    ].join('\r\n'),
    'latin1',
  );
}

interface NotmuchMessage {
  filename: string[];
  headers: Record<string, string>;
  crypto?: { decrypted?: { status: string; 'header-mask'?: Record<string, string> } };
  body?: NotmuchPart[];
}
interface NotmuchPart {
  'content-type': string;
  content?: NotmuchPart[] | string | Array<{ headers: Record<string, string>; body: NotmuchPart[] }>;
}

/** Every message object in `notmuch show --format=json` output. */
function messagesOf(tree: unknown, out: NotmuchMessage[] = []): NotmuchMessage[] {
  if (Array.isArray(tree)) for (const t of tree) messagesOf(t, out);
  else if (tree && typeof tree === 'object' && 'filename' in tree) out.push(tree as NotmuchMessage);
  return out;
}

/** The headers of the first message/rfc822 part under `parts` (notmuch shows them decrypted). */
function embeddedHeaders(parts: NotmuchPart[] | undefined): Record<string, string> | null {
  for (const p of parts ?? []) {
    if (p['content-type'] === 'message/rfc822' && Array.isArray(p.content)) {
      const first = p.content[0] as { headers?: Record<string, string> } | undefined;
      if (first?.headers) return first.headers;
    }
    if (Array.isArray(p.content)) {
      const h = embeddedHeaders(p.content as NotmuchPart[]);
      if (h) return h;
    }
  }
  return null;
}

describe('stored files in real mail clients (notmuch, neomutt)', function () {
  this.timeout(120_000);
  let srv: RunningServer | null = null;
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let home = '';
  let env: NodeJS.ProcessEnv = {};
  let maildir = '';
  let rcpt = '';
  let sent: Buffer;
  let wrapped = '';
  let unwrapped = '';

  before(async function () {
    this.timeout(180_000);
    requireBinaries(this, 'gpg', 'gpgconf', 'notmuch', 'neomutt', 'tmux');
    ({ dir, cleanup } = await tempDir('kzymy-mua-'));
    home = path.join(dir, 'gnupg');
    await mkdir(home, { mode: 0o700 });
    // An unprotected key in a GNUPGHOME of this test's own (gpgme and notmuch use the agent).
    const batch = ['%no-protection', 'Key-Type: eddsa', 'Key-Curve: ed25519', 'Key-Usage: sign', 'Subkey-Type: ecdh',
      'Subkey-Curve: cv25519', 'Subkey-Usage: encrypt', 'Name-Real: Shop', 'Name-Email: shop@example.invalid', 'Expire-Date: 0', '%commit', ''];
    await gpg(home, ['--gen-key'], batch.join('\n'));
    const publicArmored = (await gpg(home, ['--armor', '--export'])).toString('utf8');
    env = { ...process.env, HOME: dir, GNUPGHOME: home, NOTMUCH_CONFIG: path.join(dir, 'notmuch-config'), TERM: 'xterm-256color', LANG: 'C.UTF-8' };

    srv = await startServer();
    const keyFile = path.join(dir, 'key.asc');
    await writeFile(keyFile, publicArmored);
    const user = (await srv.cli('users', 'add', '--key', keyFile)).trim();
    rcpt = `shop@${user}.${srv.domain}`;
    sent = original(rcpt);
    expect((await sendRaw(srv.smtpPort, [rcpt], sent)).reply).to.match(/^250 /);
    const stored = await newFiles(srv.maildirRoot, user);
    expect(stored).to.have.length(1);

    // The mail client's Maildir: the stored file, and one in the format before the wrapper.
    maildir = path.join(dir, 'Maildir');
    for (const sub of ['cur', 'new', 'tmp']) await mkdir(path.join(maildir, sub), { recursive: true });
    wrapped = path.join(maildir, 'new', '1000000001.wrapped.test');
    await copyFile(stored[0]!, wrapped);
    const key = (await checkPublicKey(publicArmored)).key;
    const before = Buffer.concat([
      deliveryHeaders({ mailFrom: 'sender@example.org', rcptTo: rcpt, heloName: 'client.example.org', remoteAddress: '127.0.0.1',
        receivedBy: srv.domain, id: 'old1', date: new Date('2026-03-01T00:00:00Z'), tls: false }),
      Buffer.from(sent.toString('latin1').replace(SUBJECT, 'Older unwrapped mail'), 'latin1'),
    ]);
    unwrapped = path.join(maildir, 'new', '1000000000.unwrapped.test');
    await writeFile(unwrapped, await encryptBufferToPgpMime(before, { key, domain: srv.domain, date: new Date('2026-03-01T00:00:00Z') }));
  });

  after(async function () {
    if (srv) await srv.cleanup();
    if (home) {
      await run('gpgconf', ['--homedir', home, '--kill', 'all'], '', env);
    }
    if (dir) spawnSync('tmux', ['-S', path.join(dir, 'tmux.sock'), 'kill-server'], { stdio: 'ignore' });
    await cleanup();
  });

  it('the stored file decrypts to the wrapper, and kzymy-client\'s restore gives the message exactly', async function () {
    const file = await readFile(wrapped);
    const payload = (await gpgDecryptPayload(home, file)).toString('latin1');
    expect(payload).to.match(/^Kzymy-Payload: v1; wrapper=\d+\r\nContent-Type: message\/rfc822; forwarded=no; hp="cipher"; protected-headers="v1"\r\n/);
    expect(payload).to.include(`\r\nSubject: ${SUBJECT}\r\n`);
    const restored = await gpgDecryptPgpMime(home, file);
    expect(restored.toString('latin1')).to.match(/^Return-Path: <sender@example\.org>\r\nDelivered-To: [^\r\n]+\r\nReceived: [^\r\n]+\r\n/);
    expect(restored.subarray(restored.length - sent.length).equals(sent)).to.equal(true);
  });

  it('notmuch 0.37 (index.decrypt=true): the protected Subject in search and show; From, To, Date in the wrapped part', async function () {
    await writeFile(
      env.NOTMUCH_CONFIG!,
      `[database]\npath=${maildir}\n[user]\nname=Shop\nprimary_email=shop@example.invalid\n[new]\ntags=inbox;\n[index]\ndecrypt=true\n[search]\nexclude_tags=\n`,
    );
    const nm = async (...args: string[]) => {
      const r = await run('notmuch', args, '', env);
      expect(r.code, `notmuch ${args.join(' ')}: ${r.stderr}`).to.equal(0);
      return r.stdout.toString('utf8');
    };
    await nm('new', '--decrypt=true');
    const search = JSON.parse(await nm('search', '--format=json', '*')) as Array<{ subject: string; authors: string }>;
    const subjects = search.map((t) => t.subject).sort();
    console.log(`      notmuch search: ${JSON.stringify(search.map((t) => ({ subject: t.subject, authors: t.authors })))}`);
    expect(subjects).to.deep.equal(['...', SUBJECT]);
    expect(await nm('search', '--output=files', `subject:"${SUBJECT}"`)).to.equal(`${wrapped}\n`);

    const shown = messagesOf(JSON.parse(await nm('show', '--format=json', '--decrypt=true', '*')));
    const mine = shown.find((m) => m.filename.includes(wrapped))!;
    expect(mine.crypto?.decrypted?.status).to.equal('full');
    expect(mine.headers.Subject).to.equal(SUBJECT);
    expect(mine.crypto?.decrypted?.['header-mask']).to.deep.equal({ Subject: '...' });
    const inner = embeddedHeaders(mine.body);
    expect(inner, 'the wrapped message/rfc822 part').to.not.equal(null);
    expect(inner!.From).to.equal(FROM);
    expect(inner!.To).to.equal(`Shop <${rcpt}>`);
    expect(inner!.Subject).to.equal(SUBJECT);
    expect(inner!.Date).to.equal('Tue, 03 Mar 2026 10:00:00 +0000');
    // The file stored before the wrapper: notmuch decrypts it but shows the outer "...".
    const old = shown.find((m) => m.filename.includes(unwrapped))!;
    expect(old.crypto?.decrypted?.status).to.equal('full');
    expect(old.headers.Subject).to.equal('...');
  });

  it('neomutt 20220429 (gpgme): Subject in index and pager, From/To/Date in the pager, reply to the wrapped part answers From', async function () {
    // Only the wrapped file in neomutt's folder: message 1. Read-only (-R): nothing is changed.
    const folder = path.join(dir, 'Maildir-neomutt');
    for (const sub of ['cur', 'new', 'tmp']) await mkdir(path.join(folder, sub), { recursive: true });
    await copyFile(wrapped, path.join(folder, 'new', path.basename(wrapped)));
    const muttrc = path.join(dir, 'muttrc');
    await writeFile(
      muttrc,
      [
        'set crypt_use_gpgme=yes',
        'set crypt_protected_headers_read=yes',
        'set mbox_type=Maildir',
        `set folder="${folder}"`,
        `set spoolfile="${folder}"`,
        'set sort=date',
        'set header_cache=""',
        'set index_format="%4C | %-30.30F | %s"',
        'set pager_index_lines=0',
        'set timeout=0',
        '',
      ].join('\n'),
    );
    const sock = path.join(dir, 'tmux.sock');
    const tmux = (...args: string[]) => {
      const r = spawnSync('tmux', ['-S', sock, ...args], { env, encoding: 'utf8' });
      expect(r.status, `tmux ${args.join(' ')}: ${r.stderr}`).to.equal(0);
      return r.stdout;
    };
    const pane = () => tmux('capture-pane', '-p');
    /** Polls the screen until `ok` holds (neomutt draws asynchronously); fails with the screen. */
    const waitFor = async (ok: (screen: string) => boolean, what: string) => {
      let screen = '';
      for (let i = 0; i < 300; i++) {
        screen = pane();
        if (ok(screen)) return screen;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`neomutt never showed ${what}; the screen was:\n${screen}`);
    };
    const cmd = `env HOME='${dir}' GNUPGHOME='${home}' neomutt -n -R -F '${muttrc}' -f '${folder}'`;
    tmux('new-session', '-d', '-x', '200', '-y', '50', cmd);
    const index = await waitFor((s) => /Msgs:1/.test(s), 'its index');
    console.log(`      neomutt index before opening: ${index.split('\n')[1]!.trim()}`);
    tmux('send-keys', 'Enter');
    const pager = await waitFor((s) => s.includes('[-- End of PGP/MIME encrypted data --]'), 'the decrypted message');
    expect(pager).to.include('[-- The following data is PGP/MIME encrypted --]');
    expect(pager).to.match(new RegExp(`^Subject: ${SUBJECT}$`, 'm'));
    expect(pager).to.match(new RegExp(`^From: ${FROM}$`, 'm'));
    expect(pager).to.match(new RegExp(`^To: Shop <${rcpt.replace(/\./g, '\\.')}>$`, 'm'));
    expect(pager).to.match(/^Date: Tue, 03 Mar 2026 10:00:00 \+0000$/m);
    expect(pager).to.include('The invoice body.');
    expect(pager).not.to.include('Kzymy-Payload');
    // Back in the index: the line now shows the protected Subject.
    tmux('send-keys', 'i');
    const after = await waitFor((s) => /^\s+1 \|/m.test(s) && s.includes(SUBJECT), 'the protected Subject in its index');
    console.log(`      neomutt index after opening:  ${after.split('\n').find((l) => /^\s+1 \|/.test(l))!.trim()}`);
    // Attachments: the wrapped message/rfc822 part; replying to it addresses its From.
    tmux('send-keys', 'Enter');
    await waitFor((s) => s.includes('[-- End of PGP/MIME encrypted data --]'), 'the message again');
    tmux('send-keys', 'v');
    await waitFor((s) => s.includes('[message/rfc822'), 'the attachment menu');
    tmux('send-keys', 'r');
    const reply = await waitFor((s) => /^To: /m.test(s), 'the reply prompt');
    expect(reply).to.match(new RegExp(`^To: ${FROM}`, 'm'));
    tmux('send-keys', 'C-g');
    tmux('kill-server');
  });
});
