// The changelog is kept: the version the package carries has its entry, newest first.
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..');

describe('CHANGELOG.md', function () {
  it('has an entry for the package version and keeps releases newest first', async function () {
    const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const text = await readFile(path.join(ROOT, 'CHANGELOG.md'), 'utf8');
    const headings = [...text.matchAll(/^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$/gm)].map((m) => ({ version: m[1]!, date: m[2] }));
    expect(headings.map((h) => h.version)).to.include(pkg.version);
    const released = headings.filter((h) => h.version !== 'Unreleased');
    for (const h of released) expect(h.date, `${h.version} has a date`).to.match(/^\d{4}-\d{2}-\d{2}$/);
    const dates = released.map((h) => h.date!);
    expect(dates, 'newest first').to.deep.equal([...dates].sort().reverse());
    if (headings[0]?.version === 'Unreleased') expect(headings.indexOf(headings[0])).to.equal(0);
  });
});
