// smtp-server is patched through private members (src/smtp/patches.ts): prove, fast, that
// the installed release is the reviewed one, that a changed one is refused by name, and
// that the patched behaviour is what kzymy expects, over a real socket, and that the guards
// refuse an smtp-server that changed (simulated: a mock prototype handed to the guard, since a
// changed upstream cannot be installed for real in a unit test).
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { UserError } from '../../src/config/index.js';
import {
  applySmtpServerPatches,
  checkPatchedConnection,
  checkReviewed,
  installedSmtpServerVersion,
  methodsOf,
  originalMethods,
  reviewedDifferences,
  REVIEWED_VERSION,
} from '../../src/smtp/patches.js';

/** A patched SMTPServer on a loopback port; closed by the returned function. */
async function listen(options: SMTPServerOptions & { greetingDelayMs?: number }): Promise<{ port: number; close: () => Promise<void> }> {
  applySmtpServerPatches();
  const server = new SMTPServer({ authOptional: true, disabledCommands: ['AUTH', 'STARTTLS'], ...options });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as net.AddressInfo).port;
  return { port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** Milliseconds from connecting to the first reply line, and that line. */
async function greeting(port: number): Promise<{ ms: number; line: string }> {
  const started = performance.now();
  const socket = net.connect(port, '127.0.0.1');
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let buf = '';
      socket.on('error', reject);
      socket.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        const i = buf.indexOf('\r\n');
        if (i >= 0) resolve(buf.slice(0, i));
      });
    });
    return { ms: performance.now() - started, line };
  } finally {
    socket.destroy();
  }
}

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

/** The reviewed methods of one class as smtp-server defines them, keyed by method name. */
function originalMethodsOf(cls: 'SMTPConnection' | 'SMTPStream'): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(originalMethods())) if (name.startsWith(cls + '.')) out[name.slice(cls.length + 1)] = fn;
  return out;
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
    const srv = await listen({
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
    try {
      const lines = await converse(srv.port, ['EHLO test.example', 'MAIL FROM:<a@example.org>', 'RCPT TO:<b@elsewhere.example>', 'X'.repeat(600) + ' a line longer than smtp-server allows']);
      expect(lines[0]).to.match(/^220 /);
      expect(lines.some((l) => /^250[- ]ENHANCEDSTATUSCODES$/.test(l))).to.equal(true);
      expect(lines).to.include('250 2.1.0 Accepted');
      expect(lines).to.include('550 5.7.1 Relaying denied');
      expect(lines.join('\n')).not.to.match(/5\.1\.1 5\.7\.1/);
      expect(lines[lines.length - 1]).to.equal('421 4.5.0 Command line too long; closing connection');
    } finally {
      await srv.close();
    }
  });

  it('greet after the configured pause, not smtp-server\'s fixed 100 ms', async function () {
    const quick = await listen({ ...({ greetingDelayMs: 0 } as object) });
    const slow = await listen({ ...({ greetingDelayMs: 300 } as object) });
    try {
      const now = await greeting(quick.port);
      expect(now.line).to.match(/^220 /);
      // Unpatched, no greeting comes before smtp-server's 100 ms timer.
      expect(now.ms).to.be.below(100);
      const later = await greeting(slow.port);
      expect(later.line).to.match(/^220 /);
      expect(later.ms).to.be.at.least(290);
    } finally {
      await quick.close();
      await slow.close();
    }
  });

  it('refuse a client over maxClients with 421 4.7.0', async function () {
    const srv = await listen({ maxClients: 1, ...({ greetingDelayMs: 0 } as object) });
    const first = net.connect(srv.port, '127.0.0.1');
    try {
      await new Promise((resolve) => first.once('data', resolve));
      const second = await greeting(srv.port);
      expect(second.line).to.match(/^421 4\.7\.0 \S+ Too many connected clients, try again in a moment$/);
    } finally {
      first.destroy();
      await srv.close();
    }
  });

  it('pass, once applied, the check on a connection object that applySmtpServerPatches runs at start', function () {
    applySmtpServerPatches();
    expect(() => checkPatchedConnection()).not.to.throw();
  });

  it('refuse, with a sentence, an smtp-server whose patched method changed (mock: a modified prototype handed to the guard)', function () {
    // MOCK of a fault that cannot be caused for real here: an upstream release whose `init`
    // differs from the reviewed one. The guard is handed this modified prototype.
    const mockChangedConnection = { ...(originalMethodsOf('SMTPConnection') as object), init: function init() { /* a changed upstream init */ } };
    const methods = methodsOf({ SMTPConnection: mockChangedConnection, SMTPStream: originalMethodsOf('SMTPStream') });
    expect(() => checkReviewed(methods)).to.throw(UserError, /^The installed smtp-server 3\.21\.6 differs from the 3\.21\.6 that kzymy's patches \(src\/smtp\/patches\.ts\) were reviewed against: SMTPConnection\.init changed\. Install smtp-server 3\.21\.6 \(npm ci\), or review the patches/);
    expect(() => checkReviewed()).not.to.throw();
  });

  it('refuse, with a sentence, a connection that no longer writes what the patches promise (mock: a modified prototype)', function () {
    applySmtpServerPatches();
    // MOCK of a fault that cannot be caused for real here: an upstream release whose enhanced
    // code lookup ignores the context the send patch passes. A subclass carries the change.
    const Base = SMTPConnection as unknown as new (...args: never[]) => object;
    const MockChangedUpstream = class extends Base {};
    (MockChangedUpstream.prototype as unknown as Record<string, unknown>)._getEnhancedStatusCode = () => '5.0.0';
    expect(() => checkPatchedConnection(MockChangedUpstream)).to.throw(
      UserError,
      /for a reply with its own enhanced code it wrote "550 5\.0\.0 5\.7\.1 Relaying denied" instead of "550 5\.7\.1 Relaying denied"/,
    );
  });
});
