// The logger's own redaction: above debug, an error is reduced to its name and code and a
// field that names an address, a sender, a recipient, a subject or an IP is hidden, whatever
// the caller passes, in both formats, on child loggers and for an error logged alone. At
// debug (asked for by the operator) the details are written.
import { expect } from 'chai';
import { PassThrough } from 'node:stream';
import { createLogger, type LogFormat } from '../../src/config/log.js';

const SECRET = ['alice@example.org', 'bob@example.org', 'carol@example.org', '192.0.2.9', 'Re: the secret plan'];

function capture(level: string, format: LogFormat): { logger: ReturnType<typeof createLogger>; text: () => string } {
  const out = new PassThrough();
  let text = '';
  out.on('data', (c: Buffer) => (text += c.toString()));
  return { logger: createLogger(level, out, format), text: () => text };
}

function logEverything(logger: ReturnType<typeof createLogger>): void {
  logger.warn({ evt: 'store-failed', err: new Error('cannot deliver to alice@example.org') }, 'message not stored');
  logger.warn({ err: new Error('no text of its own, for carol@example.org') });
  logger.error(new TypeError("Cannot read properties of undefined (reading 'bob@example.org')"));
  logger.info({ evt: 'rcpt', address: 'alice@example.org', remoteAddress: '192.0.2.9', session: { rcpt: 'bob@example.org', subject: 'Re: the secret plan' } }, 'line');
  logger.child({ from: 'carol@example.org' }).info({ evt: 'child' }, 'child line');
  const wrapped = new Error('registry write failed for carol@example.org', { cause: Object.assign(new Error('x'), { code: 'ENOSPC' }) });
  logger.error({ evt: 'registry-write-failed', error: wrapped }, 'request failed');
}

describe('config: logging hides addresses and error text by itself', () => {
  for (const format of ['json', 'pretty'] as const) {
    it(`${format}, at info: names and codes only, the address fields hidden`, async () => {
      const { logger, text } = capture('info', format);
      logEverything(logger);
      await new Promise((r) => setImmediate(r));
      const t = text();
      for (const s of SECRET) expect(t, s).not.to.include(s);
      expect(t).to.include('TypeError');
      expect(t).to.include('ENOSPC'); // the cause's code is kept
      expect(t).to.include('[hidden]');
      expect(t).not.to.match(/stack|at Context\./);
      expect(t.split('\n').filter(Boolean)).to.have.length(6);
    });
  }

  it('at debug, the details are written (the operator asked for them)', async () => {
    const { logger, text } = capture('debug', 'json');
    logEverything(logger);
    await new Promise((r) => setImmediate(r));
    const t = text();
    expect(t).to.include('cannot deliver to alice@example.org');
    expect(t).to.include('192.0.2.9');
    expect(t).to.include('"stack"');
  });
});
