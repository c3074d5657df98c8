// A damaged registry: opening refuses with a sentence that names the file and says what
// to do; a running process that follows the journal skips one bad record and keeps
// following.
import { expect } from 'chai';
import { Writable } from 'node:stream';
import { appendFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { openRegistry, RegistryError, type Registry } from '../../src/registry/index.js';
import { createLogger } from '../../src/config/log.js';
import { tempDir } from '../helpers/env.js';
import { spawnChild, reap, key, currentJournal, openFilesUnder, refusal, type Child } from './child.js';

function expectDamaged(e: RegistryError, file: string): void {
  expect(e.code).to.equal('damaged');
  expect(e.message).to.include(file);
  expect(e.message).to.match(/restore .*backup/i);
}

describe('registry: damage', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let child: Child | undefined;
  let regs: Registry[] = [];
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(async () => {
    await reap(child);
    child = undefined;
    await Promise.all(regs.map((r) => r.close()));
    regs = [];
    await cleanup();
  });

  const made = async () => {
    const r = await openRegistry({ dataDir: dir });
    const u = await r.add(key('DA1'));
    await r.addAlias(u.username, 'x');
    await r.close();
    return u;
  };
  const snapshot = () => path.join(dir, 'registry', 'snapshot.json');

  for (const [what, text] of [
    ['not JSON', '{"version": 2, "generation": 1, "users": [\n'],
    ['null', 'null\n'],
    ['an empty file', ''],
    ['JSON of another shape', '{"version": 1, "users": []}\n'],
  ] as const) {
    it(`refuses to open when snapshot.json is ${what}`, async () => {
      await made();
      await writeFile(snapshot(), text);
      expectDamaged(await refusal(openRegistry({ dataDir: dir })), snapshot());
    });
  }

  it('refuses to open when a snapshot user record is not valid', async () => {
    await made();
    await writeFile(snapshot(), '{"version": 2, "generation": 1, "users": [\n{"username": "x"}\n]\n}\n');
    expectDamaged(await refusal(openRegistry({ dataDir: dir })), snapshot());
  });

  it('refuses to open a folder with journals but no snapshot', async () => {
    await made();
    await rm(snapshot());
    const e = await refusal(openRegistry({ dataDir: dir }));
    expectDamaged(e, snapshot());
    expect(e.message).to.match(/missing/);
  });

  it('refuses to open when a complete journal record does not parse, or is not a record this version knows', async () => {
    await made();
    const journal = await currentJournal(dir);
    await appendFile(journal, '\x1e{"id": "x", "op": "alias", "user": \n');
    let e = await refusal(openRegistry({ dataDir: dir }));
    expectDamaged(e, journal);
    expect(e.message).to.match(/unreadable record at byte \d+/);

    await rm(dir, { recursive: true, force: true });
    await made();
    await appendFile(await currentJournal(dir), `\x1e${JSON.stringify({ id: 'y', op: 'frobnicate', user: 'u' })}\n`);
    e = await refusal(openRegistry({ dataDir: dir }));
    expectDamaged(e, journal);
    expect(await openFilesUnder(dir), 'a refused open leaves no file open').to.deep.equal([]);
  });

  it('a key file that was changed or removed is named as damaged, not handed out', async () => {
    const u = await made();
    const r = await openRegistry({ dataDir: dir });
    regs.push(r);
    const file = path.join(dir, 'registry', 'keys', `${u.keyId}.asc`);
    await writeFile(file, 'something else');
    expectDamaged(await refusal(r.publicKey(r.get(u.username)!)), file);
    await rm(file);
    expectDamaged(await refusal(r.publicKey(r.get(u.username)!)), file);
  });

  it('a following process skips a damaged record appended at runtime, logs it, and still sees later changes', async () => {
    const u = await made();
    let log = '';
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        log += chunk.toString();
        done();
      },
    });
    const reader = await openRegistry({ dataDir: dir, follow: true, logger: createLogger('info', sink) });
    regs.push(reader);
    // Another process, running already, changes the registry after the damage.
    child = await spawnChild({ dataDir: dir, mode: 'writers', prefix: 'd', shared: u.username, aliases: 3, signups: 2 });
    const journal = await currentJournal(dir);
    await appendFile(journal, '\x1e{"this is": not json}\n');
    await sleep(50);
    child.send('go');
    await child.waitFor((l) => l.done === true || 'failed' in l);
    expect(child.lines.filter((l) => 'failed' in l), child.stderr()).to.deep.equal([]);
    const want = child.lines.filter((l) => l.ack === 'add').map((l) => l.username as string);
    for (let i = 0; i < 40 && !(reader.count() === 3 && reader.get(u.username)!.aliases.length === 4); i++) await sleep(100);
    expect(reader.count(), 'the reader kept following after the bad record').to.equal(3);
    for (const name of want) expect(reader.get(name), name).to.not.equal(undefined);
    expect([...reader.get(u.username)!.aliases].sort()).to.deep.equal(['d-a0', 'd-a1', 'd-a2', 'x']);
    expect(log).to.include('registry-damaged');
    expect(log).to.include(journal);
    // Its own writes still work, too.
    await reader.addAlias(u.username, 'mine');
    expect(reader.get(u.username)!.aliases).to.include('mine');
  });
});
