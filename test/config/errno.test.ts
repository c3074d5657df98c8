// System errors as sentences: real errors from real calls, never the raw code.
import { expect } from 'chai';
import { mkdir, open, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { errnoPhrase, systemErrorSentence } from '../../src/config/errno.js';
import { tempDir } from '../helpers/env.js';

async function caught(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

describe('config: errno sentences', function () {
  it('turns real file errors into sentences naming the path', async function () {
    const { dir, cleanup } = await tempDir('kzymy-errno-');
    try {
      await writeFile(path.join(dir, 'file'), 'x');
      // Each call is made when its case runs: made all at once, the later ones would reject
      // before anything awaits them (an unhandled rejection, handled late).
      const cases: [() => Promise<unknown>, string][] = [
        [() => open(path.join(dir, 'file', 'below')), `Cannot open ${path.join(dir, 'file', 'below')}: a part of the path is not a folder.`],
        [() => open(path.join(dir, 'missing')), `Cannot open ${path.join(dir, 'missing')}: it does not exist.`],
        [() => mkdir(path.join(dir, 'file')), `Cannot create the folder ${path.join(dir, 'file')}: something of that name already exists.`],
        [() => open(dir, 'w'), `Cannot open ${dir}: it is a folder, not a file.`],
      ];
      for (const [call, sentence] of cases) expect(systemErrorSentence(await caught(call()))).to.equal(sentence);
    } finally {
      await cleanup();
    }
  });

  it('names the address of a port already in use', async function () {
    const a = net.createServer();
    await new Promise<void>((resolve) => a.listen(0, '127.0.0.1', resolve));
    const port = (a.address() as net.AddressInfo).port;
    const b = net.createServer();
    const err = await new Promise<unknown>((resolve) => {
      b.once('error', resolve);
      b.listen(port, '127.0.0.1');
    });
    await new Promise((resolve) => a.close(resolve));
    expect(systemErrorSentence(err)).to.equal(
      `Cannot listen on 127.0.0.1:${port}: the address is already in use by another program; stop that program or choose another port.`,
    );
  });

  it('leaves errors without an errno code alone, and names unknown codes plainly', function () {
    expect(systemErrorSentence(new TypeError('x is not a function'))).to.equal(null);
    expect(errnoPhrase(Object.assign(new Error('odd'), { code: 'EWHATEVER' }))).to.equal('system error EWHATEVER');
    // Node's own ERR_ codes are bugs, not conditions of the system: no sentence for them.
    expect(errnoPhrase(Object.assign(new Error('not errno'), { code: 'ERR_INVALID_ARG_TYPE' }))).to.equal(null);
  });
});
