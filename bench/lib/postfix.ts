// A private Postfix instance for the benchmark: its own config_directory, queue_directory
// and data_directory under a temporary folder, listening on 127.0.0.1 only, delivering
// every recipient of one domain to one plain Maildir through virtual(8), and optionally a
// second domain to a pipe(8) transport (the gpg-per-message filter, bench/lib/gpgfilter.ts).
// Nothing of the system's Postfix (there is none configured) is read or touched.
import { chmod, chown, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { freePort, run, runOk, sleep, waitUntil } from './util.js';
import { readGreeting } from './smtp.js';

export const POSTFIX = '/usr/sbin/postfix';
const NOBODY = 65534;

export interface PostfixInstance {
  dir: string;
  port: number;
  version: string;
  /** The Maildir's new/ folder, where delivered messages appear. */
  maildirNew: string;
  /** The gpg filter's pipe(8) concurrency (processes at once), if it has one. */
  gpgConcurrency?: number;
  /** Stops the master and kills any process of this instance left behind. */
  stop(): Promise<void>;
}

export interface PipeFilterOptions {
  /** The domain routed to the pipe(8) transport "gpgfilter". */
  domain: string;
  /** pipe(8)'s argv=, run as nobody, once per message (one recipient a delivery). */
  argv: string[];
  /** How many deliveries at once (master.cf maxproc and the destination concurrency limit). */
  concurrency: number;
}

function filterCf(f: PipeFilterOptions | undefined): string {
  if (!f) return '';
  return `# The gpg-per-message filter: ${f.domain} is a relay domain whose transport is pipe(8).
relay_domains = ${f.domain}
transport_maps = inline:{ ${f.domain}=gpgfilter: }
gpgfilter_destination_recipient_limit = 1
gpgfilter_destination_concurrency_limit = ${f.concurrency}
gpgfilter_initial_destination_concurrency = ${f.concurrency}
`;
}

function mainCf(dir: string, domain: string, filter?: PipeFilterOptions): string {
  return `# Private Postfix instance for kzymy's intake benchmark (bench/intake.ts).
compatibility_level = 3.6
config_directory = ${dir}/etc
queue_directory = ${dir}/spool
data_directory = ${dir}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench.invalid
mydomain = bench.invalid
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.0/8
${filter ? '' : 'relay_domains =\n'}local_recipient_maps =
alias_maps =
alias_database =
biff = no
# Every recipient in the benchmark domain goes to one Maildir (a trailing / means Maildir).
virtual_mailbox_domains = ${domain}
virtual_mailbox_base = ${dir}/mail
virtual_mailbox_maps = static:bench/
virtual_uid_maps = static:${NOBODY}
virtual_gid_maps = static:${NOBODY}
virtual_mailbox_limit = 0
message_size_limit = 104857600
# Loopback only, no DNS anywhere.
smtp_host_lookup = native
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
# Log to a file (there is no syslog here); postlogd writes it.
maillog_file_prefixes = ${dir}
maillog_file = ${dir}/maillog
${filterCf(filter)}`;
}

function masterCf(port: number, filter?: PipeFilterOptions): string {
  // No chroot (column 5 = n), otherwise Postfix's defaults.
  return `# service type private unpriv chroot wakeup maxproc command
127.0.0.1:${port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
${filter ? `gpgfilter unix  - n n - ${filter.concurrency} pipe flags=DR user=nobody argv=${filter.argv.join(' ')}\n` : ''}`;
}

/** PIDs of every process whose environment says MAIL_CONFIG=<this instance's etc>. */
async function instancePids(etc: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const env = await readFile(`/proc/${name}/environ`, 'latin1');
      if (env.split('\0').includes(`MAIL_CONFIG=${etc}`)) pids.push(Number(name));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids.filter((p) => p !== process.pid);
}

/** `postfix` prints its errors only to a terminal or the log: show the log's tail. */
async function diagnose(dir: string): Promise<string> {
  try {
    return (await readFile(path.join(dir, 'maillog'), 'utf8')).split('\n').slice(-15).join('\n');
  } catch {
    return '(no maillog written)';
  }
}

export async function startPostfix(base: string, domain: string, filter?: PipeFilterOptions): Promise<PostfixInstance> {
  const dir = path.join(base, 'postfix');
  const etc = path.join(dir, 'etc');
  const mail = path.join(dir, 'mail');
  // virtual(8) delivers as "nobody": every folder on the way must be traversable.
  for (const d of [base, dir]) {
    await mkdir(d, { recursive: true });
    await chmod(d, 0o755);
  }
  await mkdir(etc);
  await mkdir(path.join(dir, 'spool'));
  await mkdir(path.join(dir, 'data'));
  await mkdir(mail);
  const uid = Number((await runOk('id', ['-u', 'postfix'])).stdout);
  const gid = Number((await runOk('id', ['-g', 'postfix'])).stdout);
  await chown(path.join(dir, 'data'), uid, gid);
  await chown(mail, NOBODY, NOBODY);

  const port = await freePort();
  await writeFile(path.join(etc, 'main.cf'), mainCf(dir, domain, filter));
  await writeFile(path.join(etc, 'master.cf'), masterCf(port, filter));

  const version = (await runOk('/usr/sbin/postconf', ['-c', etc, '-h', 'mail_version'])).stdout.trim();
  const started = await run(POSTFIX, ['-c', etc, 'start'], { timeoutMs: 60_000 });
  if (started.code !== 0) {
    throw new Error(`postfix -c ${etc} start failed (exit ${started.code}):\n${await diagnose(dir)}`);
  }

  let stopped = false;
  const instance: PostfixInstance = {
    dir,
    port,
    version,
    maildirNew: path.join(mail, 'bench', 'new'),
    ...(filter ? { gpgConcurrency: filter.concurrency } : {}),
    async stop() {
      if (stopped) return;
      stopped = true;
      await run(POSTFIX, ['-c', etc, 'stop'], { timeoutMs: 30_000 }).catch(() => undefined);
      // master signals its children and exits; give them a moment, then kill what is left.
      for (let i = 0; i < 50; i++) {
        if ((await instancePids(etc)).length === 0) return;
        await sleep(100);
      }
      for (const pid of await instancePids(etc)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    },
  };
  try {
    await waitUntil(async () => (await readGreeting(port).catch(() => '')).startsWith('220'), 'Postfix to greet', 30_000, 100);
  } catch (err) {
    await instance.stop();
    throw new Error(`${(err as Error).message}\n${await diagnose(dir)}`);
  }
  return instance;
}
