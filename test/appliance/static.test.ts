// Cheap checks of the appliance files, each shown to catch a deliberately broken
// copy too: Vagrantfile (vagrant validate), shell scripts (shellcheck), the rendered
// torrc (tor --verify-config), the systemd unit (systemd-analyze verify, any warning
// fails) and the nftables rule set (nft -c in a private network namespace).
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireBinaries, tempDir } from '../helpers/env.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const scripts = path.join(repo, 'scripts');

interface Result {
  code: number;
  /** stdout and stderr together. */
  out: string;
}

/** Runs a command to its end; never throws for a non-zero exit. */
function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { cwd: opts.cwd ?? repo, env: { ...process.env, ...opts.env }, maxBuffer: 16 * 1024 * 1024, timeout: 90_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 127) : 0;
        resolve({ code, out: `${stdout}${stderr}`.trim() });
      },
    );
  });
}

/** A copy of `file` in `dir`, with `edit` applied; the edit must change something. */
async function brokenCopy(file: string, dir: string, name: string, edit: (text: string) => string): Promise<string> {
  const text = await readFile(file, 'utf8');
  const broken = edit(text);
  expect(broken, `the deliberate break of ${name} must change it`).to.not.equal(text);
  const dest = path.join(dir, name);
  await mkdir(path.dirname(dest), { recursive: true });
  await writeFile(dest, broken, { mode: 0o755 });
  return dest;
}

/** Files in scripts/ that are shell scripts (by extension or shebang). */
function shellScripts(): string[] {
  return readdirSync(scripts)
    .map((f) => path.join(scripts, f))
    .filter((f) => f.endsWith('.sh') || /^#!.*\b(ba)?sh\b/.test(readFileSync(f, 'utf8').split('\n', 1)[0]))
    .sort();
}

describe('appliance: static checks', function () {
  this.timeout(120_000);

  describe('Vagrantfile (vagrant validate --ignore-provider)', function () {
    before(function () {
      requireBinaries(this, 'vagrant');
    });

    /** vagrant validate in a scratch copy, so that no .vagrant/ lands in the checkout. */
    async function validate(vagrantfile: string): Promise<Result> {
      const { dir, cleanup } = await tempDir('kzymy-vagrant-');
      try {
        await copyFile(vagrantfile, path.join(dir, 'Vagrantfile'));
        await mkdir(path.join(dir, 'scripts'));
        await copyFile(path.join(scripts, 'provision.sh'), path.join(dir, 'scripts', 'provision.sh'));
        return await run('vagrant', ['validate', '--ignore-provider'], {
          cwd: dir,
          env: { VAGRANT_CHECKPOINT_DISABLE: '1', VAGRANT_NO_COLOR: '1' },
        });
      } finally {
        await cleanup();
      }
    }

    it('validates', async () => {
      const r = await validate(path.join(repo, 'Vagrantfile'));
      expect(r.code, r.out).to.equal(0);
      expect(r.out).to.match(/validated successfully/);
    });

    it('builds the appliance as documented', () => {
      const v = readFileSync(path.join(repo, 'Vagrantfile'), 'utf8');
      expect(v).to.match(/config\.vm\.box\s*=\s*"debian\/trixie64"/);
      expect(v).to.match(/provider\s+"libvirt"/);
      expect(v).to.match(/provider\s+"virtualbox"/);
      expect(v).to.match(/forwarded_port".*guest:\s*25\b/);
      expect(v).to.match(/synced_folder\s+"\.",\s*"\/vagrant"/);
      expect(v).to.match(/provision\s+"shell",\s*path:\s*"scripts\/provision\.sh"/);
    });

    it('fails on a Vagrantfile with a syntax error', async function () {
      const { dir, cleanup } = await tempDir('kzymy-broken-');
      try {
        const bad = await brokenCopy(path.join(repo, 'Vagrantfile'), dir, 'Vagrantfile', (t) => t.replace(/\nend\s*$/, '\n'));
        const r = await validate(bad);
        expect(r.code, r.out).to.not.equal(0);
        expect(r.out).to.match(/syntax error|unexpected/i);
      } finally {
        await cleanup();
      }
    });

    it('fails on a Vagrantfile with a misspelt setting', async function () {
      const { dir, cleanup } = await tempDir('kzymy-broken-');
      try {
        const bad = await brokenCopy(path.join(repo, 'Vagrantfile'), dir, 'Vagrantfile', (t) =>
          t.replace('config.vm.hostname =', 'config.vm.hostnme ='),
        );
        const r = await validate(bad);
        expect(r.code, r.out).to.not.equal(0);
        expect(r.out).to.match(/hostnme/);
      } finally {
        await cleanup();
      }
    });
  });

  describe('shell scripts (shellcheck)', function () {
    before(function () {
      requireBinaries(this, 'shellcheck');
    });

    it('finds the appliance scripts', () => {
      const names = shellScripts().map((f) => path.basename(f));
      expect(names).to.include.members(['provision.sh', 'test-appliance.sh', 'kzymy-server.sh']);
    });

    it('passes shellcheck for every script in scripts/', async () => {
      const files = shellScripts();
      const r = await run('shellcheck', ['--external-sources', ...files]);
      expect(r.code, r.out).to.equal(0);
      expect(r.out).to.equal('');
    });

    it('fails on a script with an unquoted-variable bug', async () => {
      const { dir, cleanup } = await tempDir('kzymy-broken-');
      try {
        const bad = await brokenCopy(path.join(scripts, 'provision.sh'), dir, 'provision.sh', (t) =>
          t.replace('"$SRC_ABS/" "$APP/")', '$SRC_ABS/ "$APP/")'),
        );
        const r = await run('shellcheck', ['--external-sources', bad]);
        expect(r.code, r.out).to.not.equal(0);
        expect(r.out).to.match(/SC2086/);
      } finally {
        await cleanup();
      }
    });
  });

  describe('torrc for the system tor (tor --verify-config)', function () {
    before(function () {
      requireBinaries(this, 'tor', 'bash');
    });

    /** The torrc provisioning installs, rendered by provision.sh itself. */
    async function rendered(): Promise<string> {
      const r = await run('bash', [path.join(scripts, 'provision.sh'), '--print-torrc', repo]);
      expect(r.code, r.out).to.equal(0);
      return r.out;
    }

    /** tor --verify-config with a scratch DataDirectory (nothing of the host's tor is touched). */
    async function verify(torrc: string): Promise<Result> {
      const { dir, cleanup } = await tempDir('kzymy-torrc-');
      try {
        const file = path.join(dir, 'torrc');
        await writeFile(file, torrc);
        return await run('tor', ['--verify-config', '--defaults-torrc', '/dev/null', '-f', file, '--DataDirectory', path.join(dir, 'data')]);
      } finally {
        await cleanup();
      }
    }

    it('renders every field of the template for the appliance', async () => {
      const torrc = await rendered();
      const lines = torrc.split('\n').filter((l) => l.trim() && !l.trimStart().startsWith('#'));
      expect(lines.join('\n')).to.not.include('{{');
      expect(lines).to.include.members([
        'HiddenServiceDir /var/lib/tor/kzymy',
        'HiddenServicePort 80 127.0.0.1:8080',
        'HiddenServicePoWDefensesEnabled 1',
        'HiddenServiceDirGroupReadable 1',
      ]);
    });

    it('is accepted by tor --verify-config', async () => {
      const r = await verify(await rendered());
      expect(r.code, r.out).to.equal(0);
      expect(r.out).to.match(/Configuration was valid/);
    });

    it('fails on a torrc with a bad option', async () => {
      const torrc = (await rendered()).replace('HiddenServicePoWDefensesEnabled 1', 'HiddenServicePoWDefenseEnabled 1');
      const r = await verify(torrc);
      expect(r.code, r.out).to.not.equal(0);
      expect(r.out).to.match(/Unknown option 'HiddenServicePoWDefenseEnabled'/);
    });

    it('fails when the template has a field provisioning does not fill', async () => {
      const { dir, cleanup } = await tempDir('kzymy-broken-');
      try {
        await brokenCopy(path.join(repo, 'torrc'), dir, 'torrc', (t) => `${t}ContactInfo {{CONTACT}}\n`);
        const r = await run('bash', [path.join(scripts, 'provision.sh'), '--print-torrc', dir]);
        expect(r.code, r.out).to.not.equal(0);
        expect(r.out).to.match(/\{\{CONTACT\}\}/);
      } finally {
        await cleanup();
      }
    });
  });

  describe('systemd unit (systemd-analyze verify, any warning fails)', function () {
    before(function () {
      requireBinaries(this, 'systemd-analyze');
    });

    /** systemd-analyze verify of a copy named kzymy.service; ExecStart must exist on this host. */
    async function verify(unit: string): Promise<Result> {
      const { dir, cleanup } = await tempDir('kzymy-unit-');
      try {
        // The appliance's node is Debian's /usr/bin/node; elsewhere point at this one.
        const text = existsSync('/usr/bin/node') ? unit : unit.replaceAll('/usr/bin/node', process.execPath);
        const file = path.join(dir, 'kzymy.service');
        await writeFile(file, text);
        return await run('systemd-analyze', ['verify', '--man=no', file], { env: { SYSTEMD_LOG_COLOR: '0' } });
      } finally {
        await cleanup();
      }
    }

    const unitText = (): string => readFileSync(path.join(scripts, 'kzymy.service'), 'utf8');

    it('verifies without a single warning', async () => {
      const r = await verify(unitText());
      expect(r.code, r.out).to.equal(0);
      expect(r.out, 'systemd-analyze verify printed warnings').to.equal('');
    });

    it('runs as kzymy with only CAP_NET_BIND_SERVICE and the systemd sandbox', () => {
      const settings = unitText()
        .split('\n')
        .filter((l) => /^[A-Za-z]+=/.test(l));
      expect(settings).to.include.members([
        'User=kzymy',
        'AmbientCapabilities=CAP_NET_BIND_SERVICE',
        'CapabilityBoundingSet=CAP_NET_BIND_SERVICE',
        'NoNewPrivileges=yes',
        'ProtectSystem=strict',
        'ProtectHome=yes',
        'PrivateTmp=yes',
        'PrivateDevices=yes',
        'ProtectKernelTunables=yes',
        'ProtectKernelModules=yes',
        'ProtectKernelLogs=yes',
        'ProtectControlGroups=yes',
        'RestrictNamespaces=yes',
        'ReadWritePaths=/var/lib/kzymy',
        'SystemCallFilter=@system-service @pkey',
        'SystemCallFilter=~@privileged @resources',
        'Restart=on-failure',
      ]);
      // V8's JIT needs writable+executable memory: this setting kills node.
      expect(settings.join('\n')).to.not.match(/^MemoryDenyWriteExecute=yes/m);
    });

    it('fails on a unit with a misspelt key', async () => {
      const r = await verify(unitText().replace('ProtectSystem=strict', 'ProtectSytem=strict'));
      expect(r.out).to.match(/Unknown key (name )?'ProtectSytem'/);
    });

    it('fails on a unit whose program does not exist', async () => {
      const r = await verify(unitText().replace('ExecStart=/usr/bin/node', 'ExecStart=/usr/bin/kzymy-no-such-node'));
      expect(r.code === 0 && r.out === '', 'verify must complain').to.equal(false);
      expect(r.out).to.match(/kzymy-no-such-node/);
    });
  });

  describe('nftables rule set (nft -c -f in a private network namespace)', function () {
    before(function () {
      requireBinaries(this, 'nft', 'unshare');
    });

    const ruleset = path.join(scripts, 'nftables.conf');

    it('is accepted by nft -c', async () => {
      const r = await run('unshare', ['-rn', 'nft', '-c', '-f', ruleset]);
      expect(r.code, r.out).to.equal(0);
    });

    it('lets in SSH, SMTP, loopback and replies only', async () => {
      const r = await run('unshare', ['-rn', 'sh', '-c', 'nft -f "$1" && nft list ruleset', 'nft', ruleset]);
      expect(r.code, r.out).to.equal(0);
      const input = r.out.slice(r.out.indexOf('chain input'), r.out.indexOf('chain forward'));
      expect(input).to.match(/hook input priority filter; policy drop;/);
      expect(input).to.match(/iif "lo" accept/);
      expect(input).to.match(/ct state established,related accept/);
      const ports = [...input.matchAll(/dport (\{[^}]*\}|\d+)/g)].map((m) => m[1]);
      expect(ports).to.deep.equal(['{ 22, 25 }']);
      expect(r.out).to.match(/hook forward priority filter; policy drop;/);
    });

    it('fails on a rule set with a syntax error', async () => {
      const { dir, cleanup } = await tempDir('kzymy-broken-');
      try {
        const bad = await brokenCopy(ruleset, dir, 'nftables.conf', (t) => t.replace('tcp dport { 22, 25 }', 'tcp dport { 22, 25'));
        const r = await run('unshare', ['-rn', 'nft', '-c', '-f', bad]);
        expect(r.code, r.out).to.not.equal(0);
        expect(r.out).to.match(/syntax error/);
      } finally {
        await cleanup();
      }
    });
  });
});
