// Unit tests for maildir(5) unique names and id checks (kzymy's own Maildir code).
import { expect } from 'chai';
import {
  encodeHostname,
  isValidId,
  isValidUsername,
  MaildirStore,
  sizeFromName,
  timeFromName,
  uniqueName,
} from '../../src/maildir/index.js';
import { withClockStepped } from '../helpers/env.js';

describe('maildir names', () => {
  it('makes SECONDS.M<usec>P<pid>Q<counter>R<hex>.<host> names', () => {
    const name = uniqueName(Date.UTC(2024, 0, 2, 3, 4, 5, 678) + 0.9);
    const m = /^(\d+)\.M(\d+)P(\d+)Q(\d+)R([0-9a-f]{16})\.(.+)$/.exec(name);
    expect(m, name).to.not.equal(null);
    expect(Number(m![1])).to.equal(Date.UTC(2024, 0, 2, 3, 4, 5) / 1000);
    expect(Number(m![2])).to.be.within(678_000, 678_999);
    expect(Number(m![3])).to.equal(process.pid);
    expect(isValidId(name)).to.equal(true);
    expect(timeFromName(name)).to.equal(Date.UTC(2024, 0, 2, 3, 4, 5, 678));
  });

  it('takes the time from the wall clock, also after the system clock was stepped', async () => {
    // The monotonic clock (performance.now()) does not move with the step; names must not follow it.
    await withClockStepped(3_600_000, (now) => {
      const before = now();
      expect(timeFromName(uniqueName())).to.be.within(before, now());
    });
  });

  it('never repeats a name within a process', () => {
    const names = new Set<string>();
    for (let i = 0; i < 10_000; i++) names.add(uniqueName(1_700_000_000_000));
    expect(names.size).to.equal(10_000);
  });

  it('encodes / and : in the hostname as \\057 and \\072, and anything odd likewise', () => {
    expect(encodeHostname('a/b:c')).to.equal('a\\057b\\072c');
    expect(encodeHostname('mx,1_x')).to.equal('mx\\0541\\137x');
    expect(encodeHostname('mail.example.com')).to.equal('mail.example.com');
    expect(encodeHostname('')).to.equal('localhost');
    for (const h of ['a/b:c', '..', '.hidden', 'é', 'x'.repeat(300)]) {
      expect(isValidId(`1.M1P1Q1R00.${encodeHostname(h)}`), h).to.equal(true);
    }
  });

  it('reads the size from ,S= and the time from the leading seconds', () => {
    expect(sizeFromName('1700000000.M5P1Q1Rab.host,S=1234')).to.equal(1234);
    expect(sizeFromName('1700000000.M5P1Q1Rab.host,S=1234:2,S')).to.equal(1234);
    expect(sizeFromName('1700000000.M5P1Q1Rab.host,S=12,W=14:2,')).to.equal(12);
    expect(sizeFromName('1700000000.M5P1Q1Rab.host')).to.equal(null);
    expect(sizeFromName('1700000000.M5P1Q1Rab.host:2,S=5')).to.equal(null);
    expect(timeFromName('1700000000.M5P1Q1Rab.host')).to.equal(1_700_000_000_000);
    expect(timeFromName('1700000000.123_4.host')).to.equal(1_700_000_000_000);
    expect(timeFromName('1700000000.M250000P1.host')).to.equal(1_700_000_000_250);
    expect(timeFromName('message-one')).to.equal(null);
  });

  it('refuses ids with /, .., NUL, odd characters, empty or over 255 characters', () => {
    for (const bad of [
      '',
      '/',
      'a/b',
      '..',
      '.',
      '../x',
      'x..y',
      '.hidden',
      'a\0b',
      'a b',
      'a\nb',
      'é',
      'x'.repeat(256),
    ]) {
      expect(MaildirStore.isValidId(bad), JSON.stringify(bad)).to.equal(false);
    }
    for (const good of ['1700000000.M5P1Q1Rab.host,S=3', 'x:2,FS', 'a\\057b', 'x'.repeat(255), 'A-Z=ok']) {
      expect(MaildirStore.isValidId(good), good).to.equal(true);
    }
  });

  it('accepts only lowercase usernames of 1 to 63 characters', () => {
    for (const good of ['a', 'alice', 'x9-y', '0abc', 'a'.repeat(63)]) expect(isValidUsername(good), good).to.equal(true);
    for (const bad of ['', 'Alice', '-a', 'a_b', 'a.b', '../x', 'a/b', 'a'.repeat(64), 'tmp\0']) {
      expect(isValidUsername(bad), bad).to.equal(false);
    }
  });
});
