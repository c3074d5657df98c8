// How a command line ends on an error, decided by the error's type, never by its text: a
// UserError (and its kinds) is shown as it is with its exit code; an error of the system as a
// sentence about it; anything else is a bug, shown as one neutral sentence that leaks nothing
// of its message (which may hold an address or a path).
import { expect } from 'chai';
import { open } from 'node:fs/promises';
import { ConfigError, UserError } from '../../src/config/index.js';
import { ClientError, DeliveryError, EXIT_TEMPFAIL, protocolError } from '../../src/client/errors.js';
import { describeFailure, UsageError } from '../../src/cli/errors.js';
import { MaildirError } from '../../src/maildir/index.js';
import { RegistryError } from '../../src/registry/index.js';

describe('cli: errors by type', () => {
  it('shows a UserError of any kind as it is, with its exit code', () => {
    expect(describeFailure('kzymy-server', new UserError('The folder is full: free some space.'))).to.deep.equal({ text: 'The folder is full: free some space.', code: 1 });
    expect(describeFailure('kzymy-server', new UsageError('--config needs a file.'))).to.deep.equal({ text: '--config needs a file.', code: 2 });
    expect(describeFailure('kzymy-client', new ClientError('tor is not running; try again later.', EXIT_TEMPFAIL)).code).to.equal(75);
    expect(describeFailure('kzymy-client', protocolError('the server sent nonsense.')).code).to.equal(76);
    expect(describeFailure('kzymy-client', new DeliveryError('lower-case sentences are fine too.')).text).to.equal('lower-case sentences are fine too.');
    expect(describeFailure('kzymy-server', new ConfigError(['smtp.port must be a number'])).text).to.match(/^The configuration has 1 problem:\n- smtp\.port/);
    expect(describeFailure('kzymy-server', new RegistryError('no-such-user', 'There is no user "x".')).text).to.equal('There is no user "x".');
    expect(describeFailure('kzymy-server', new MaildirError('not-found', 'There is no such message.')).code).to.equal(1);
  });

  it('names the class of each: a UserError subclass keeps its own name', () => {
    expect(new UsageError('x').name).to.equal('UsageError');
    expect(new ClientError('x').name).to.equal('ClientError');
    expect(new ConfigError(['x']).name).to.equal('ConfigError');
  });

  it('keeps the cause of a rewrapped error', () => {
    const cause = new Error('ECONNRESET');
    expect(new ClientError('The connection broke; try again later.', EXIT_TEMPFAIL, { cause }).cause).to.equal(cause);
    expect(new UserError('x', 1, { cause }).cause).to.equal(cause);
  });

  it('turns a real system error (a missing file) into a sentence about it', async () => {
    const err = await open('/nonexistent-kzymy-dir/file', 'r').catch((e: unknown) => e);
    const f = describeFailure('kzymy-server', err);
    expect(f.code).to.equal(1);
    expect(f.text).to.match(/^Cannot open \/nonexistent-kzymy-dir\/file: /);
  });

  it('shows a bug as one neutral sentence: its message never, however it looks', () => {
    for (const err of [
      new TypeError("Cannot read properties of undefined (reading 'alice@example.org')"),
      new Error('Delivered to alice@example.org'), // capitalized, a sentence: still not a UserError
      new RangeError('bad offset'),
      'a string thrown',
    ]) {
      const f = describeFailure('kzymy-server', err);
      expect(f.code).to.equal(1);
      expect(f.text).to.match(/^kzymy-server stopped on an unexpected problem \((TypeError|Error|RangeError|string)\): run it again with KZYMY_DEBUG=1/);
      expect(f.text).not.to.include('alice');
      expect(f.text).not.to.include('offset');
    }
  });
});
