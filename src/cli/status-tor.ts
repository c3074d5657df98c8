// The tor and onion lines of `kzymy-server status`: from what the server follows on tor's
// control socket, or from what this command asked the system tor itself.
import type { Config } from '../config/index.js';
import { askTor, type TorAnswer } from '../tor/control.js';
import type { StatusDocument } from './status.js';
import { statusLines, type StatusLine } from './status-lines.js';

/**
 * What `status` itself learnt from the system tor's control socket (tor.controlSocket), asked
 * when the server could not: on the appliance the service's sandbox hides /run/tor, on
 * purpose (the control port can reconfigure tor), while the operator's command runs outside
 * it with the group debian-tor.
 */
export type DirectTor = { socket: string; answer: TorAnswer } | { socket: string; error: string };

/** Asks the system tor when the server does not follow it; null when the server does. */
export async function askSystemTor(config: Config, doc: StatusDocument): Promise<DirectTor | null> {
  if (doc.tor.mode !== 'system' || doc.tor.control === 'connected') return null;
  const socket = config.tor.controlSocket;
  try {
    return { socket, answer: await askTor(socket, doc.tor.onion) };
  } catch (e) {
    return { socket, error: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
  }
}

/** The tor line (bootstrap) and the onion line (published?) of a status document. */
export function judgeTor(t: StatusDocument['tor'], direct: DirectTor | null): StatusLine[] {
  const { lines, add } = statusLines();
  const torName = t.mode === 'managed' ? 'The managed tor' : 'The system tor';
  const controlSaid = t.control === 'connected';
  const asked = direct && 'answer' in direct ? direct : null;
  if (asked) {
    // The server cannot see tor; this command asked tor's control socket itself.
    const b = asked.answer.bootstrap;
    const via = `asked by this command on ${asked.socket}`;
    if (b && b.percent >= 100) add('ok', 'tor', `${torName} has bootstrapped (100%: ${b.summary}; ${via}).`);
    else add('problem', 'tor', `${torName} has bootstrapped ${b?.percent ?? 0}% (${b?.summary ?? 'no report yet'}; ${via}): it is not connected to the Tor network yet; its log says why.`);
  } else if (!controlSaid) {
    const why = t.socket ? `its control socket ${t.socket} cannot be used${t.reason ? ` (${t.reason})` : ''}` : 'kzymy has no control socket for it';
    const also = direct && 'error' in direct ? `, nor could this command use ${direct.socket} (${direct.error}${direct.error === 'EACCES' ? ': run status as root or as a member of the group debian-tor' : ''})` : '';
    add('unknown', 'tor', `Whether ${torName.toLowerCase()} has bootstrapped is unknown: ${why}${also}.`);
  } else if (t.bootstrap && t.bootstrap.percent >= 100) add('ok', 'tor', `${torName} has bootstrapped (100%: ${t.bootstrap.summary}).`);
  else add('problem', 'tor', `${torName} has bootstrapped ${t.bootstrap?.percent ?? 0}% (${t.bootstrap?.summary ?? 'no report yet'}): it is not connected to the Tor network yet; its log says why.`);

  if (!t.onion) add('problem', 'onion', `No onion address yet: tor has not written ${t.hostnameFile}.`);
  else if (asked) {
    // After the fact tor tells only whether it holds a current descriptor for the service
    // (GETINFO hs/service/desc/id/ADDR); which directories accepted it is told live only
    // (HS_DESC UPLOADED events), and the server, which follows those, cannot see tor here.
    const d = asked.answer.descriptor;
    const up = (asked.answer.bootstrap?.percent ?? 0) >= 100;
    const rev = d?.revision != null ? ` (revision ${d.revision})` : '';
    if (d && up) add('ok', 'onion', `http://${t.onion}/ is published as far as tor tells: it holds the service's current descriptor${rev} and is on the Tor network, and it uploads each descriptor to the directories once its introduction points are up (which directories took it is not told after the fact).`);
    else if (d) add('problem', 'onion', `http://${t.onion}/ is not reachable now: tor holds a descriptor${rev} but is not connected to the Tor network.`);
    else add('problem', 'onion', `http://${t.onion}/ is not published yet: tor has not built its descriptor (it does once it has bootstrapped; this takes a minute or two).`);
  } else if (t.publishedAt) add('ok', 'onion', `http://${t.onion}/ is published (descriptor uploaded ${t.publishedAt}, ${t.uploads ?? 1} upload${t.uploads === 1 ? '' : 's'}).`);
  else if (controlSaid) add('problem', 'onion', `http://${t.onion}/ is not published yet: tor has not uploaded its descriptor (this takes a minute or two after bootstrap).`);
  else add('unknown', 'onion', `The address is http://${t.onion}/; whether tor has published it is unknown.`);
  return lines;
}
