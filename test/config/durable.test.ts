// The one durable file writer: content in place whole, mode 0600, 'create' never replaces,
// and a failed write leaves neither the file nor its temporary name behind.
import { expect } from 'chai';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { writeDurable } from '../../src/config/durable.js';
import { tempDir } from '../helpers/env.js';

describe('config: durable files', function () {
  let dir: { dir: string; cleanup: () => Promise<void> };
  beforeEach(async function () {
    dir = await tempDir('kzymy-durable-');
  });
  afterEach(async function () {
    await dir.cleanup();
  });

  it('replaces a file whole, mode 0600 even over a file that was 0644, and leaves no temporary file', async function () {
    const f = path.join(dir.dir, 'state.json');
    await writeFile(f, 'old', { mode: 0o644 });
    expect(await writeDurable(f, '{"a":1}\n')).to.equal(true);
    expect(await readFile(f, 'utf8')).to.equal('{"a":1}\n');
    expect((await stat(f)).mode & 0o777).to.equal(0o600);
    expect(await readdir(dir.dir)).to.deep.equal(['state.json']);
  });

  it("with 'create' never replaces an existing file", async function () {
    const f = path.join(dir.dir, 'record');
    expect(await writeDurable(f, 'first', { how: 'create' })).to.equal(true);
    expect(await writeDurable(f, 'second', { how: 'create' })).to.equal(false);
    expect(await readFile(f, 'utf8')).to.equal('first');
    expect(await readdir(dir.dir)).to.deep.equal(['record']);
  });

  it('creates the folder when asked, mode 0700', async function () {
    const f = path.join(dir.dir, 'a', 'b', 'profile.json');
    await writeDurable(f, 'x', { mkdir: true });
    expect((await stat(path.dirname(f))).mode & 0o777).to.equal(0o700);
  });

  it('a body that fails leaves the old content and no temporary file, and the error comes through', async function () {
    const f = path.join(dir.dir, 'snapshot.json');
    await writeFile(f, 'kept');
    const boom = new Error('disk went away');
    let caught: unknown = null;
    await writeDurable(f, async (fh) => {
      await fh.write('half of it');
      throw boom;
    }).catch((err: unknown) => (caught = err));
    expect(caught).to.equal(boom);
    expect(await readFile(f, 'utf8')).to.equal('kept');
    expect(await readdir(dir.dir)).to.deep.equal(['snapshot.json']);
  });
});
