// Two writers of one registry: the running server (web API alias changes) and the
// operator's `kzymy-server users add` / `users disable`, run at the same time as real
// processes. No change either side acknowledged may be lost or undone.
import { expect } from 'chai';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import { requireBinaries } from '../helpers/env.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { makeFreshGpgKey, requireGpg, type TestKey } from '../helpers/gpg.js';
import { swaks } from '../helpers/swaks.js';
import { api, login, signupApi, type TestServer } from '../web/harness.js';

/** The harness's request helpers need only the web address of a server. */
function webOf(srv: RunningServer): TestServer {
  return { base: `http://127.0.0.1:${srv.webPort}`, port: srv.webPort! } as TestServer;
}

/** The server's answer at RCPT for x@USER.DOMAIN (swaks quits after RCPT: no mail is sent). */
async function rcptReply(srv: RunningServer, user: string): Promise<string> {
  const r = await swaks({ port: srv.smtpPort, to: `x@${user}.${srv.domain}`, extra: ['--quit-after', 'RCPT'] });
  return r.last;
}

async function keyFile(srv: RunningServer, key: TestKey, name: string): Promise<string> {
  const f = path.join(srv.base, `${name}.asc`);
  await writeFile(f, key.publicArmored);
  return f;
}

/** The operations in the registry's journals, in order (RS-framed JSON lines). */
async function journalOps(srv: RunningServer): Promise<Array<Record<string, unknown>>> {
  const dir = path.join(srv.dataDir, 'registry');
  const files = (await readdir(dir)).filter((f) => /^journal\.\d+$/.test(f)).sort((a, b) => Number(a.slice(8)) - Number(b.slice(8)));
  const ops: Array<Record<string, unknown>> = [];
  for (const f of files) {
    for (const rec of (await readFile(path.join(dir, f), 'utf8')).split('\x1e')) {
      if (!rec.endsWith('\n')) continue;
      const r = JSON.parse(rec) as Record<string, unknown>;
      // An add carries the whole user: name it by its username like the other operations.
      ops.push(r.op === 'add' ? { ...r, user: (r.user as { username: string }).username } : r);
    }
  }
  return ops;
}

describe('registry: the server and the operator CLI writing at the same time', function () {
  this.timeout(300_000);
  let srv: RunningServer;

  before(async function () {
    requireGpg(this);
    requireBinaries(this, 'swaks', 'openssl');
    srv = await startServer();
  });
  after(async () => {
    await srv?.cleanup();
  });

  it('keeps every CLI add and disable and every acknowledged API alias change', async function () {
    const web = webOf(srv);
    // The API user, signed up and logged in with real gpg.
    const apiKey = await makeFreshGpgKey('ed25519');
    const apiUser = await signupApi(web, apiKey);
    const token = await login(web, apiUser, apiKey);

    // Twenty more keys: 8 users made beforehand (to be disabled), 12 added during the run.
    const keys = await Promise.all(Array.from({ length: 20 }, () => makeFreshGpgKey('ed25519')));
    const toDisable = await Promise.all(
      keys.slice(0, 8).map(async (k, i) => (await srv.cli('users', 'add', '--key', await keyFile(srv, k, `pre${i}`))).trim()),
    );
    for (const u of toDisable) expect(await rcptReply(srv, u), `${u} before the run`).to.match(/^250 /);
    const addFiles = await Promise.all(keys.slice(8).map((k, i) => keyFile(srv, k, `add${i}`)));

    // The run: API alias changes in three loops, while 20 CLI processes add and disable.
    let cliDone = false;
    const acked: string[] = [];
    const refused: string[] = [];
    let n = 0;
    const aliasLoop = async () => {
      while ((!cliDone || n < 60) && n < 1000) {
        const name = `a${n++}x`;
        const r = await api(web, 'PUT', `/api/v1/aliases/${name}`, undefined, token);
        if (r.status === 200) acked.push(name);
        else refused.push(`${name}: ${r.status} ${JSON.stringify(r.json)}`);
      }
    };
    const loops = [aliasLoop(), aliasLoop(), aliasLoop()];
    const cli = Promise.all([
      ...addFiles.map((f) => srv.cli('users', 'add', '--key', f).then((out) => out.trim())),
      ...toDisable.map((u) => srv.cli('users', 'disable', u)),
    ]).finally(() => (cliDone = true));
    const [results] = await Promise.all([cli, ...loops]);
    const added = results.slice(0, 12);
    for (const u of added) expect(u).to.match(/^[a-z][a-z0-9]{11}$/);
    expect(new Set(added).size).to.equal(12);
    expect(refused, 'alias changes the server refused').to.deep.equal([]);
    expect(acked.length).to.be.at.least(60);
    // The writes really interleaved: API records sit between the CLI's in the journal.
    const ops = await journalOps(srv);
    const cliAt = ops.flatMap((o, i) => ((o.op === 'add' && added.includes(o.user as string)) || (o.op === 'disable' && toDisable.includes(o.user as string)) ? [i] : []));
    expect(cliAt, 'CLI records in the journal').to.have.length(20);
    const between = ops.slice(cliAt[0], cliAt[cliAt.length - 1]).filter((o) => o.op === 'alias').length;
    expect(between, 'API alias records between the first and the last CLI record').to.be.above(0);

    // Every user the CLI added is known to the running server at once.
    const unknown: string[] = [];
    for (const u of added) {
      const reply = await rcptReply(srv, u);
      if (!/^250 /.test(reply)) unknown.push(`${u}: ${reply}`);
    }
    expect(unknown, 'CLI-added users the server refuses at RCPT').to.deep.equal([]);

    // Disabled users stay disabled: nothing the server writes afterwards undoes it.
    await sleep(2000);
    const shows = await Promise.all(toDisable.map((u) => srv.cli('users', 'show', u)));
    toDisable.forEach((u, i) => expect(shows[i], u).to.match(/^state\s+disabled$/m));
    for (const u of toDisable) expect(await rcptReply(srv, u), u).to.match(/^550 5\.1\.1/);

    // Every acknowledged alias change is there, in the server's view and in the CLI's.
    const got = await api(web, 'GET', '/api/v1/aliases', undefined, token);
    expect(got.status).to.equal(200);
    const aliases = got.json.aliases as string[];
    expect(acked.filter((a) => !aliases.includes(a)), 'acknowledged aliases the server lost').to.deep.equal([]);
    const shown = /^aliases\s+(.*)$/m.exec(await srv.cli('users', 'show', apiUser))?.[1]?.split(', ') ?? [];
    expect(acked.filter((a) => !shown.includes(a)), 'acknowledged aliases missing from users show').to.deep.equal([]);

    // And the registry as a whole: every user once, with the right state.
    const list = JSON.parse(await srv.cli('users', 'list', '--json')) as Array<{ username: string; disabled: boolean }>;
    expect(list.map((u) => u.username).sort()).to.deep.equal([apiUser, ...toDisable, ...added].sort());
    for (const u of list) expect(u.disabled, u.username).to.equal(toDisable.includes(u.username));
  });
});
