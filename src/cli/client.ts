#!/usr/bin/env node
// kzymy-client: the user's command line. Thin: commander parses, src/client does
// the work. Every request goes through Tor (socks5h) unless --no-tor names a loopback server.
import { Command, CommanderError, Help, InvalidArgumentError, Option } from 'commander';
import { runAliases, runCatchAll, runDeleteAccount, runKeyUpdate, runSignup, runStatus } from '../client/commands.js';
import { Context, type GlobalOptions } from '../client/context.js';
import { runFetch } from '../client/fetch.js';
import { DEFAULT_PROXY } from '../client/target.js';
import { printable } from '../client/errors.js';
import { quietExperimentalCryptoWarnings } from './warnings.js';
import { exitWith } from './errors.js';
import { version } from './version.js';

quietExperimentalCryptoWarnings();
const PROG = 'kzymy-client';
const out = (line: string): void => void process.stdout.write(line + '\n');

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 1) throw new InvalidArgumentError('give a number of seconds, at least 1.');
  return n;
}

/** The options each command reads, beyond --help; the rest stay out of its --help. */
const CONNECT = ['--config', '--server', '--username', '--key', '--gnupghome', '--proxy', '--no-tor', '--quiet'];
const DELIVER = ['--maildir', '--mda', '--decrypt', '--no-decrypt', '--crlf', '--no-crlf', '--watch'];
const APPLIES: Record<string, Set<string>> = Object.fromEntries(
  Object.entries({
    signup: CONNECT.filter((o) => o !== '--username').concat(['--maildir', '--mda', '--decrypt', '--no-decrypt', '--crlf', '--no-crlf']),
    fetch: [...CONNECT, ...DELIVER],
    status: CONNECT,
    aliases: CONNECT,
    'aliases list': CONNECT,
    'aliases add': CONNECT,
    'aliases remove': CONNECT,
    'aliases block': CONNECT,
    'catch-all': CONNECT,
    key: CONNECT,
    'key update': CONNECT,
    logout: CONNECT,
    'delete-account': CONNECT,
  }).map(([k, v]) => [k, new Set(v)]),
);

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c && c.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** "Example:" lines under a command's --help. */
function examples(...lines: string[]): string {
  return `\nExample${lines.length > 1 ? 's' : ''}:\n${lines.map((l) => `  $ ${l}`).join('\n')}`;
}

const program = new Command(PROG)
  .description(
    'kzymy-client: fetch the mail a kzymy server keeps for you, over its onion address through Tor, and deliver it to a Maildir or an MDA.',
  )
  .version(version(), '-V, --version', 'print the version of kzymy-client')
  .option('--config <file>', 'profile JSON (default $XDG_CONFIG_HOME/kzymy/client.json, else ~/.config/kzymy/client.json)')
  .option('--server <url>', "the server's onion address, http://....onion (saved in the profile)")
  .option('--username <name>', 'your kzymy username (saved)')
  .option('--key <keyid>', 'fingerprint of your key in the GnuPG keyring (saved)')
  .option('--gnupghome <dir>', 'GnuPG home folder (default: gpg\'s own, $GNUPGHOME or ~/.gnupg) (saved)')
  .option('--proxy <url>', `Tor's SOCKS port (default ${DEFAULT_PROXY}) (saved)`)
  .addOption(new Option('--tor', 'go through Tor (the default; undoes a saved --no-tor)').hideHelp())
  .option('--no-tor', 'connect directly: only for a kzymy server on this machine (127.0.0.1, ::1, localhost) (saved)')
  .option('--maildir <dir>', 'deliver into this Maildir (DIR/{tmp,new,cur}) (saved)')
  .option('--mda <command>', 'deliver by running COMMAND with /bin/sh, one message on stdin; exit 0 = delivered, 75 = try later (saved)')
  .option('--decrypt', 'deliver the decrypted original message (gpg) instead of the PGP/MIME file (saved)')
  .option('--no-decrypt', 'deliver the PGP/MIME file as stored (saved)')
  .option('--crlf', 'with --decrypt: keep the CRLF line ends of the mail as sent (default: LF, as for Unix tools) (saved)')
  .option('--no-crlf', 'with --decrypt: deliver LF line ends (saved)')
  .option('--watch <seconds>', 'fetch: poll forever, every SECONDS with random jitter, until SIGINT/SIGTERM', seconds)
  .option('-q, --quiet', 'print only errors')
  .configureHelp({
    showGlobalOptions: true,
    // A command's --help lists only the options it reads (they are parsed anywhere).
    visibleGlobalOptions(cmd: Command): Option[] {
      const all = Help.prototype.visibleGlobalOptions.call(this, cmd);
      const wanted = APPLIES[commandPath(cmd)];
      return wanted ? all.filter((o) => wanted.has(o.long ?? '')) : all;
    },
  })
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride()
  .addHelpText(
    'after',
    '\nExit status: 0 ok, 1 a problem you can fix, 2 wrong usage, 8 another fetch runs with this profile, 75 temporary (Tor or the server unreachable, MDA asked to retry), 76 the server misbehaved (nothing was sent back; do not use it).',
  );

/**
 * Runs `fn` with the command's context; options given on the command line are saved to
 * the profile only if it succeeded. The session is logged out and sockets closed after.
 */
function withContext(fn: (ctx: Context, cmd: Command) => Promise<void>) {
  return async (...args: unknown[]): Promise<void> => {
    const cmd = args[args.length - 1] as Command;
    const ctx = await Context.open(cmd.optsWithGlobals<GlobalOptions>(), out);
    try {
      await fn(ctx, cmd);
      await ctx.commit();
    } finally {
      await ctx.close();
    }
  };
}

program
  .command('signup')
  .description('sign up with a key from your GnuPG keyring (needs --server and --key); saves the profile')
  .addHelpText('after', examples(
    'kzymy-client signup --server http://ONION.onion --key FINGERPRINT --maildir ~/Maildir',
    'kzymy-client signup --no-tor --server http://127.0.0.1:8080 --key FINGERPRINT   # a server on this machine',
  ))
  .action(withContext((ctx) => runSignup(ctx)));

program
  .command('fetch')
  .description('download waiting mail, deliver each message (--maildir or --mda), then have it deleted on the server')
  .addHelpText('after', examples(
    'kzymy-client fetch                      # with the saved profile',
    'kzymy-client fetch --maildir ~/Maildir --decrypt',
    "kzymy-client fetch --mda 'procmail' --watch 300",
  ))
  .action(withContext((ctx) => runFetch(ctx)));

program
  .command('status')
  .description('how many messages wait and their size; key and address policy')
  .addHelpText('after', examples('kzymy-client status'))
  .action(withContext((ctx) => runStatus(ctx)));

const aliases = program.command('aliases').description('address policy: which local parts arrive');
aliases.addHelpText('after', examples('kzymy-client aliases add shop', 'kzymy-client aliases block newsletter', 'kzymy-client aliases list'));
aliases
  .command('list')
  .description('show catch-all, aliases and blocked local parts')
  .addHelpText('after', examples('kzymy-client aliases list'))
  .action(withContext((ctx) => runAliases(ctx, 'list')));
for (const [action, description, example, argument] of [
  ['add', 'let this local part arrive (also with catch-all off); unblocks it', 'kzymy-client aliases add shop      # shop@USERNAME.DOMAIN arrives', 'e.g. shop for shop@USERNAME.DOMAIN'],
  ['remove', 'remove it from the aliases and from the blocked list', 'kzymy-client aliases remove shop', undefined],
  ['block', 'refuse mail to this local part, even with catch-all on', 'kzymy-client aliases block newsletter', undefined],
] as const) {
  aliases
    .command(action)
    .argument('<local-part>', argument)
    .description(description)
    .addHelpText('after', examples(example))
    .action(withContext((ctx, cmd) => runAliases(ctx, action, cmd.args[0])));
}

program
  .command('catch-all')
  .argument('<on|off>', 'on: every local part arrives except blocked ones; off: only aliases')
  .description('switch the catch-all')
  .addHelpText('after', examples('kzymy-client catch-all off   # only aliases arrive'))
  .action(withContext((ctx, cmd) => runCatchAll(ctx, cmd.args[0] ?? '')));

const key = program
  .command('key')
  .description("the account's OpenPGP key")
  .addHelpText('after', examples('kzymy-client key update'));
key
  .command('update')
  .option('--new-key <keyid>', 'move the account to another key in your keyring (authorised by the current one)')
  .description('upload the key again from your keyring (e.g. a new expiry date), or rotate to --new-key')
  .addHelpText('after', examples('kzymy-client key update     # after gpg --quick-set-expire FINGERPRINT 2y', 'kzymy-client key update --new-key NEW_FINGERPRINT'))
  .action(withContext((ctx, cmd) => runKeyUpdate(ctx, cmd.opts<{ newKey?: string }>().newKey)));

program
  .command('logout')
  .description('end the login token kept between runs (it would otherwise end by itself within 30 minutes)')
  .addHelpText('after', examples('kzymy-client logout'))
  .action(
    withContext(async (ctx) => {
      await ctx.session().logout();
      ctx.say('logged out: the next command logs in again');
    }),
  );

program
  .command('delete-account')
  .option('--yes', 'do not ask: required when not on a terminal')
  .description('delete the account with all its waiting mail, for good')
  .addHelpText('after', examples('kzymy-client delete-account', 'kzymy-client delete-account --yes   # from a script'))
  .action(withContext((ctx, cmd) => runDeleteAccount(ctx, Boolean(cmd.opts<{ yes?: boolean }>().yes))));

program.parseAsync(process.argv).then(
  () => process.exit(0),
  (err: unknown) => {
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    // Error sentences may quote the server: no control character reaches the terminal.
    if (err instanceof Error) err.message = printable(err.message);
    exitWith(PROG, err);
  },
);
