#!/usr/bin/env -S node --max-semi-space-size=4
// kzymy-server: the operator's command line. Thin: parses, loads the
// configuration, calls into the modules, prints. Parsing is commander's.
import { Command, CommanderError } from 'commander';
import { loadConfig, type Config } from '../config/index.js';
import { createLogger, resolveLogFormat } from '../config/log.js';
import { quietExperimentalCryptoWarnings } from './warnings.js';
import { exitWith, UsageError } from './errors.js';
import * as op from './operator.js';
import { runServer } from './server-app.js';
import { dnsPlan, formatPlan } from './dns.js';
import { backup } from './backup.js';
import { restore } from './restore.js';
import { status } from './status-command.js';
import { portArgument, torrcText, type TorrcOptions } from './torrc.js';
import { version } from './version.js';

quietExperimentalCryptoWarnings();
const PROG = 'kzymy-server';
const out = (line: string): void => void process.stdout.write(line + "\n");

const program = new Command(PROG)
  .description('kzymy: a receive-only mail exchanger that encrypts every message to its recipient\'s OpenPGP key.')
  .version(version(), '-V, --version', 'print the version of kzymy-server')
  .option('-c, --config <file>', 'JSON configuration file (else $KZYMY_CONFIG, else built-in defaults)')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

function config(cmd: Command): Config {
  const { config: file } = cmd.optsWithGlobals<{ config?: string }>();
  return loadConfig({ file });
}

program
  .command('start')
  .description('run the SMTP and web listeners (and the managed tor); on a terminal a banner and readable log lines, else JSON lines (log.format)')
  .action(async (_o, cmd: Command) => {
    const cfg = config(cmd);
    const format = resolveLogFormat(cfg.log.format, process.stdout);
    await runServer(cfg, createLogger(cfg.log.level, process.stdout, format), { banner: format === 'pretty' ? out : undefined, logFormat: format });
  });

program
  .command('status')
  .description('ask the running server (DATA_DIR/control.sock): listeners, tor, onion, disk, mail, SMTP replies of the last hour, certificate; exit 1 on a problem, 3 when no server runs')
  .option('--dns', 'also check that the MX, A/AAAA and SPF records of the domain lead to this machine')
  .option('--json', 'one JSON object')
  .action(async (o: { dns?: boolean; json?: boolean }, cmd: Command) => {
    const cfg = config(cmd);
    const startHint = `${PROG} start${cfg.source.file ? ` --config ${cfg.source.file}` : ''}`;
    const code = await status(cfg, out, (line) => process.stderr.write(`${PROG}: ${line}\n`), { json: o.json, dns: o.dns, startHint });
    process.exitCode = code;
  });

program
  .command('init')
  .description('create the data and maildir folders and a self-signed STARTTLS certificate; print what was made')
  .action(async (_o, cmd: Command) => op.init(config(cmd), out));

program
  .command('check')
  .description('validate the configuration and files (not a running server: see status); print ports, paths and the onion address; exit 1 on a problem')
  .action(async (_o, cmd: Command) => {
    const problems = await op.check(config(cmd), out);
    if (problems.length) {
      for (const p of problems) process.stderr.write(`${PROG}: ${p}\n`);
      process.exit(1);
    }
    out('configuration ok (a running server is checked by "kzymy-server status")');
  });

const users = program.command('users').description("the operator's view of the registry (never message contents)");
users
  .command('list')
  .description('every user: state, creation date, key, waiting messages')
  .option('--json', 'one JSON array instead of a table')
  .action(async (o: { json?: boolean }, cmd: Command) => op.usersList(config(cmd), out, Boolean(o.json)));
users
  .command('show')
  .argument('<username>')
  .description("one user's settings and waiting mail")
  .action(async (u: string, _o, cmd: Command) => op.usersShow(config(cmd), u, out));
users
  .command('add')
  .requiredOption('--key <file>', 'ASCII-armored or binary OpenPGP public key')
  .description('register a key without the web flow; prints the new username alone on stdout')
  .action(async (o: { key: string }, cmd: Command) => out(await op.usersAdd(config(cmd), o.key)));
for (const [name, disabled, done, description] of [
  ['disable', true, 'disabled', 'refuse new mail for the user (550 5.1.1); keeps the account and its mail'],
  ['enable', false, 'enabled', 'accept mail for a disabled user again'],
] as const) {
  users
    .command(name)
    .argument('<username>')
    .description(description)
    .action(async (u: string, _o, cmd: Command) => {
      await op.usersSetDisabled(config(cmd), u, disabled);
      out(`${u} ${done}`);
    });
}
users
  .command('delete')
  .argument('<username>')
  .option('--yes', 'confirm: the account and all its waiting mail are deleted')
  .description('delete the account and its Maildir')
  .action(async (u: string, o: { yes?: boolean }, cmd: Command) => {
    if (!o.yes) throw new UsageError(`Deleting ${u} removes the account and all its waiting mail; add --yes to confirm.`);
    await op.usersDelete(config(cmd), u);
    out(`${u} deleted`);
  });

program
  .command('purge')
  .description('apply retention now: delete unfetched mail older than limits.retentionDays')
  .action(async (_o, cmd: Command) => {
    const r = await op.purgeNow(config(cmd));
    out(`purged ${r.count} message${r.count === 1 ? '' : 's'} (${r.bytes} bytes)`);
  });

program
  .command('stats')
  .description('counts: users, waiting messages, bytes, oldest message age')
  .option('--json', 'one JSON object')
  .action(async (o: { json?: boolean }, cmd: Command) => {
    const s = await op.stats(config(cmd));
    if (o.json) return out(JSON.stringify(s));
    out(`users            ${s.users} (${s.active} active, ${s.disabled} disabled)`);
    out(`waiting mail     ${s.waiting} messages, ${s.bytes} bytes`);
    out(`oldest message   ${s.oldestAgeSeconds === null ? '-' : `${Math.floor(s.oldestAgeSeconds / 3600)} h ${Math.floor((s.oldestAgeSeconds % 3600) / 60)} min`}`);
  });

program
  .command('dns')
  .description('print the DNS records the mail domain needs (MX, A/AAAA of the MX host, SPF), from the configuration')
  .option('--json', 'one JSON object: records and notes')
  .addHelpText('after', '\nExample:\n  $ kzymy-server dns --config /etc/kzymy/config.json')
  .action((o: { json?: boolean }, cmd: Command) => {
    const plan = dnsPlan(config(cmd));
    if (o.json) return out(JSON.stringify(plan));
    for (const line of formatPlan(plan)) out(line);
  });

program
  .command('backup')
  .argument('<file>', 'archive to write (tar; gzip-compressed when it ends in .gz or .tgz)')
  .option('--no-onion-keys', "leave the onion service's keys out of the archive")
  .description('write a consistent archive of the registry, the Maildirs, the STARTTLS key and the onion keys, while the server runs')
  .addHelpText(
    'after',
    '\nThe archive is mode 0600: it holds the STARTTLS private key and, unless --no-onion-keys, the onion\n' +
      "service's secret key. Keep it encrypted and offline.\n\nExample:\n  kzymy-server backup /root/kzymy-$(date +%F).tar.gz\n",
  )
  .action(async (file: string, o: { onionKeys: boolean }, cmd: Command) =>
    backup(config(cmd), file, { onionKeys: o.onionKeys, progress: Boolean(process.stderr.isTTY) }, out),
  );

program
  .command('restore')
  .argument('<file>', 'archive written by kzymy-server backup')
  .option('--owner <user[:group]>', 'owner of the restored registry, Maildirs and TLS files (root only; default: the owner of dataDir)')
  .option('--onion-owner <user[:group]>', "owner of the onion service's keys (root only; default: the owner of the folder that holds them)")
  .description('restore a backup onto an empty data folder and Maildir root; the server must be stopped')
  .addHelpText(
    'after',
    '\nVerifies every file against the archive\'s manifest before anything is put in place; refuses a\n' +
      'target that already holds users. Stop kzymy-server (and tor) first.\n\nExample (the appliance, as root):\n' +
      '  systemctl stop kzymy tor\n  node /opt/kzymy/dist/cli/server.js restore --config /etc/kzymy/config.json \\\n' +
      '    --owner kzymy:kzymy --onion-owner debian-tor:debian-tor /root/kzymy-2026-01-01.tar.gz\n',
  )
  .action(async (file: string, o: { owner?: string; onionOwner?: string }, cmd: Command) => restore(config(cmd), file, o, out));

program
  .command('torrc')
  .description("print the project's torrc filled in for a tor that publishes the onion service; each value not given comes from the configuration")
  .option('--hidden-service-dir <dir>', "the onion service's folder (default: the folder of tor.hostnameFile)")
  .option('--web-host <host>', 'the web listener the onion service leads to (default: web.host)')
  .option('--web-port <port>', 'its port (default: web.port)', portArgument)
  .option('--template <file>', "the torrc template (default: the project's torrc)")
  .option('--appliance', "the appliance's /etc/tor/torrc: also lets the group debian-tor (kzymy.service) read the onion hostname")
  .option('--onionbalance-frontend <onion>', "one node of several: an Onionbalance backend instance of this frontend address (default: tor.frontendOnion); tor reads it from ob_config in the onion service's folder")
  .addHelpText(
    'after',
    '\nExample (what scripts/provision.sh installs as /etc/tor/torrc):\n' +
      '  $ kzymy-server torrc --appliance --hidden-service-dir /var/lib/tor/kzymy --web-host 127.0.0.1 --web-port 8080',
  )
  .action(async (o: TorrcOptions, cmd: Command) => {
    let cfg: Config | undefined;
    process.stdout.write(await torrcText(o, () => (cfg ??= config(cmd))));
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  exitWith(PROG, err);
});
