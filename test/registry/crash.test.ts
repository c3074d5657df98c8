// A writer killed (SIGKILL) at a random moment in the middle of its changes: every change
// it got acknowledged is there afterwards, the registry opens, and new changes work. A
// record cut short by a crash is void, and the records after it are intact.
import { expect } from 'chai';
import { appendFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { openRegistry, type Registry } from '../../src/registry/index.js';
import { tempDir } from '../helpers/env.js';
import { spawnChild, reap, key, currentJournal, expectAcknowledged, type Child, type Line } from './child.js';
import { describeEngines } from './engines.js';

describeEngines('registry: a writer killed mid-change', (e) => {
  let child: Child | undefined;
  afterEach(async () => {
    await reap(child);
    child = undefined;
  });

  it('keeps every acknowledged change across several SIGKILLs and takes new changes after each', async () => {
    const acks: Line[] = [];
    for (let round = 0; round < 3; round++) {
      child = await spawnChild({ ...e.store, mode: 'loop', prefix: `r${round}`, parallel: 4 });
      child.send('go');
      // Let it get some changes acknowledged, then kill it at a random moment.
      const running = child;
      await child.waitFor(() => running.lines.filter((l) => l.ack === 'add').length >= 3 && running.lines.some((l) => l.ack === 'alias'));
      await sleep(20 + Math.floor(Math.random() * 200));
      child.proc.kill('SIGKILL');
      const { signal } = await child.exited;
      expect(signal).to.equal('SIGKILL');
      expect(child.lines.filter((l) => 'failed' in l), child.stderr()).to.deep.equal([]);
      acks.push(...child.lines.filter((l) => 'ack' in l));
      child = undefined;

      const reg = await e.open();
      expectAcknowledged(reg, acks);
      const u = await reg.add(key(`AFTER${round}`));
      await reg.addAlias(u.username, `after-${round}`);
      acks.push({ ack: 'add', username: u.username, fingerprint: `AFTER${round}` }, { ack: 'alias', user: u.username, local: `after-${round}` });
      await reg.close();
      const again = await e.open();
      expectAcknowledged(again, acks);
      await again.close();
    }
    expect(acks.filter((l) => l.ack === 'add').length).to.be.greaterThan(8);
  });
});

describe('registry: a journal record cut short by a crash', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let regs: Registry[] = [];
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(async () => {
    await Promise.all(regs.map((r) => r.close()));
    regs = [];
    await cleanup();
  });

  it('skips a record cut short by a crash and keeps the records after it', async () => {
    const reg = await openRegistry({ dataDir: dir });
    regs.push(reg);
    const u = await reg.add(key('T0RN'));
    await reg.addAlias(u.username, 'before');
    // What a crash mid-append leaves: RS and part of the record's JSON, no LF.
    const half = JSON.stringify({ id: 'torn-by-hand', op: 'alias', user: u.username, local: 'torn' }).slice(0, 30);
    await appendFile(await currentJournal(dir), `\x1e${half}`);
    // Another process was not told: it opens (strict) and appends after the torn bytes.
    const other = await openRegistry({ dataDir: dir });
    regs.push(other);
    expect(other.get(u.username)!.aliases).to.deep.equal(['before']);
    await other.addAlias(u.username, 'after1');
    await other.setDisabled(u.username, true);
    const v = await other.add(key('T0RN2'));
    await reg.refresh();
    for (const r of [reg, other, await openRegistry({ dataDir: dir })]) {
      if (!regs.includes(r)) regs.push(r);
      expect(r.get(u.username)!.aliases).to.deep.equal(['before', 'after1']);
      expect(r.get(u.username)!.disabled).to.equal(true);
      expect(r.get(v.username)?.fingerprint).to.equal('T0RN2');
    }
    // A torn record followed by nothing yet (the crash was the last thing): still opens.
    await appendFile(await currentJournal(dir), `\x1e${half}`);
    const last = await openRegistry({ dataDir: dir });
    regs.push(last);
    expect(last.count()).to.equal(2);
    await last.addAlias(v.username, 'later');
    const check = await openRegistry({ dataDir: dir });
    regs.push(check);
    expect(check.get(v.username)!.aliases).to.deep.equal(['later']);
  });
});
