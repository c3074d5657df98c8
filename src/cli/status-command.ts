// `kzymy-server status`: asks the running server on its control socket (status.ts), judges
// each part (status-judge.ts, status-dns.ts) and prints one line for each, or one JSON object.
import { UserError, type Config } from '../config/index.js';
import { controlSocketPath, requestStatus, type StatusDocument } from './status.js';
import { judge } from './status-judge.js';
import { judgeDns } from './status-dns.js';
import { askSystemTor } from './status-tor.js';
import { formatLine } from './status-lines.js';

/** Exit code of `status` when no server answers on the data dir's control socket. */
export const NO_SERVER_EXIT = 3;

export interface StatusOptions {
  json?: boolean;
  dns?: boolean;
  /** How the server is started, for the sentence when none runs. */
  startHint: string;
}

/** Prints the status; returns the exit code: 0 all ok, 1 a problem, 3 no server runs. */
export async function status(config: Config, out: (line: string) => void, err: (line: string) => void, opts: StatusOptions): Promise<number> {
  const file = controlSocketPath(config);
  let doc: StatusDocument;
  try {
    doc = await requestStatus(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') {
      const text = `no kzymy-server is running with this data dir (${config.dataDir}): start it with "${opts.startHint}", or "systemctl start kzymy" where it is installed as a service.`;
      if (opts.json) out(JSON.stringify({ running: false, dataDir: config.dataDir, problem: text }));
      else err(text);
      return NO_SERVER_EXIT;
    }
    if (code === 'EACCES') throw new UserError(`${file} cannot be opened (permission denied): run status as the user that runs kzymy-server.`);
    throw e;
  }
  const direct = await askSystemTor(config, doc);
  const lines = await judge(doc, direct);
  if (opts.dns) lines.push(...(await judgeDns(doc.domain, doc.smtp.host)));
  const problems = lines.filter((l) => l.mark === 'problem').length;
  if (opts.json) out(JSON.stringify({ running: true, ok: problems === 0, lines, status: doc, ...(direct ? { torAsked: direct } : {}) }));
  else {
    for (const l of lines) out(formatLine(l));
    if (problems) out(`${problems} problem${problems === 1 ? '' : 's'}.`);
  }
  return problems ? 1 : 0;
}
