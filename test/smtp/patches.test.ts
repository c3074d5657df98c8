// smtp-server is patched through private members (src/smtp/patches.ts): prove, fast, that
// the installed release is the reviewed one, that a changed one is refused by name, and
// that the patched behaviour is what kzymy expects, over a real socket.
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { SMTPServer } from 'smtp-server';
import { applySmtpServerPatches, installedSmtpServerVersion, originalMethods, reviewedDifferences, REVIEWED_VERSION } from '../../src/smtp/patches.js';

/** A line-by-line SMTP conversation: sends each command, returns every reply line. */
async function converse(port: number, commands: string[]): Promise<string[]> {
  const socket = net.connect(port, '127.0.0.1');
  const lines: string[] = [];
  let buf = '';
  let wake: (() => void) | null = null;
  socket.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    let i;
    while ((i = buf.indexOf('\r\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 2);
    }
    wake?.();
  });
  const replyEnd = async (from: number): Promise<number> => {
    for (;;) {
      const at = lines.findIndex((l, k) => k >= from && /^\d{3} /.test(l));
      if (at >= 0) return at + 1;
      await new Promise<void>((r) => (wake = r));
    }
  };
  let seen = await replyEnd(0);
  for (const c of commands) {
    socket.write(c + '\r\n');
    seen = await replyEnd(seen);
  }
  socket.destroy();
  return lines;
}

describe('smtp: patches on smtp-server', function () {
  it('run on the exact smtp-server release they were reviewed against, pinned in package.json', async function () {
    const pkg = JSON.parse(await readFile(path.resolve(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    expect(pkg.dependencies['smtp-server']).to.equal(REVIEWED_VERSION);
    expect(installedSmtpServerVersion()).to.equal(REVIEWED_VERSION);
    expect(() => applySmtpServerPatches()).not.to.throw();
  });

  it('name the method that changed when smtp-server is not the reviewed one', function () {
    expect(reviewedDifferences()).to.deep.equal([]);
    const changed = { ...originalMethods(), 'SMTPStream.startDataMode': function startDataMode() {}, 'SMTPConnection.init': undefined };
    expect(reviewedDifferences(changed)).to.deep.equal(['SMTPConnection.init', 'SMTPStream.startDataMode']);
  });

  it('greet without a pause, keep a reply\'s own enhanced code, and say what an over-long line is', async function () {
    applySmtpServerPatches();
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      maxClients: 5,
      hideENHANCEDSTATUSCODES: false,
      maxCommandLength: 512,
      // Options the patches read (src/smtp/server.ts passes them the same way).
      ...({ greetingDelayMs: 0 } as object),
      onRcptTo(_address, _session, callback) {
        const err = Object.assign(new Error('5.7.1 Relaying denied'), { responseCode: 550 });
        callback(err);
      },
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.server.address() as net.AddressInfo).port;
    try {
      const lines = await converse(port, ['EHLO test.example', 'MAIL FROM:<a@example.org>', 'RCPT TO:<b@elsewhere.example>', 'X'.repeat(600) + ' a line longer than smtp-server allows']);
      expect(lines[0]).to.match(/^220 /);
      expect(lines.some((l) => /^250[- ]ENHANCEDSTATUSCODES$/.test(l))).to.equal(true);
      expect(lines).to.include('250 2.1.0 Accepted');
      expect(lines).to.include('550 5.7.1 Relaying denied');
      expect(lines.join('\n')).not.to.match(/5\.1\.1 5\.7\.1/);
      expect(lines[lines.length - 1]).to.equal('421 4.5.0 Command line too long; closing connection');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
