// The project's torrc template (the top-level `torrc`) and how it is filled in.
// The same template serves kzymy's managed tor and the appliance's system tor.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../config/index.js';
import { isV3Onion } from '../config/onion.js';

export interface TorrcValues {
  /** Folder where tor keeps the onion service's keys and writes `hostname`. */
  hiddenServiceDir: string;
  /** Loopback host of the web listener. */
  webHost: string;
  /** Port of the web listener (1-65535: tor needs a real port). */
  webPort: number;
  /** An Onionbalance frontend's onion address: this tor is then one of its backend instances. */
  onionbalanceFrontend?: string | null;
}

/** The file in the onion service's folder where an Onionbalance instance reads its frontend's address. */
export const OB_CONFIG_FILE = 'ob_config';

/** What `ob_config` holds for the frontend `address`. */
export function obConfigText(address: string): string {
  if (!isV3Onion(address)) throw new UserError(`The Onionbalance frontend "${address}" is not a v3 onion address (56 base32 characters and ".onion").`);
  return `MasterOnionAddress ${address}\n`;
}

/**
 * Absolute path of the project's `torrc` template. Resolved from this module's own
 * location, so it works from `src/tor/` (tsx) and from `dist/tor/` (built) alike.
 */
export function torrcTemplatePath(): string {
  return fileURLToPath(new URL('../../torrc', import.meta.url));
}

/** A torrc value: bare when safe, else a quoted string with C escapes (tor accepts both). */
export function torrcValue(value: string): string {
  if (/[\r\n\0]/.test(value)) throw new UserError(`A torrc value cannot contain a line break: ${JSON.stringify(value)}.`);
  if (value !== '' && !/[\s#"\\]/.test(value)) return value;
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** Fills the `{{...}}` fields of the template; refuses unknown or unfilled fields. */
export function renderTorrc(template: string, values: TorrcValues): string {
  const { hiddenServiceDir, webHost, webPort } = values;
  if (!path.isAbsolute(hiddenServiceDir)) {
    throw new UserError(`The onion service folder must be an absolute path; "${hiddenServiceDir}" is not.`);
  }
  if (!Number.isInteger(webPort) || webPort < 1 || webPort > 65535) {
    throw new UserError(`tor needs the web listener's real port (1-65535) to publish it; ${webPort} is not one.`);
  }
  if (!/^[A-Za-z0-9.:-]+$/.test(webHost)) {
    throw new UserError(`The web host "${webHost}" cannot be written into a torrc.`);
  }
  // An IPv6 address needs brackets in HiddenServicePort's target.
  const host = webHost.includes(':') ? `[${webHost}]` : webHost;
  const fields: Record<string, string> = {
    HIDDEN_SERVICE_DIR: torrcValue(hiddenServiceDir),
    WEB_HOST: host,
    WEB_PORT: String(webPort),
  };
  const out = template.replace(/\{\{\s*([A-Z0-9_]+)\s*\}\}/g, (_m, name: string) => {
    const v = fields[name];
    if (v === undefined) throw new UserError(`The torrc template has an unknown field {{${name}}}.`);
    return v;
  });
  const left = out.split('\n').find((l) => !l.trimStart().startsWith('#') && l.includes('{{'));
  if (left) throw new UserError(`The torrc template has a malformed field in: ${left.trim()}`);
  if (!values.onionbalanceFrontend) return out;
  obConfigText(values.onionbalanceFrontend); // checks the address
  return [
    out.replace(/\n+$/, ''),
    '',
    `# One node of several behind the Onionbalance frontend ${values.onionbalanceFrontend}: this onion`,
    `# service also answers introductions made to the frontend, whose address tor reads from`,
    `# ${OB_CONFIG_FILE} in the onion service's folder (MasterOnionAddress).`,
    'HiddenServiceOnionbalanceInstance 1',
    '',
  ].join('\n');
}

/**
 * The appliance's /etc/tor/torrc, for Debian's system tor: the template filled in, then the
 * lines that make the onion service's hostname file (only that: tor keeps the keys 0600)
 * readable by the group debian-tor, which kzymy.service joins.
 */
export function applianceTorrc(template: string, values: TorrcValues): string {
  return [
    '# Written by kzymy scripts/provision.sh from the project torrc; changes are overwritten.',
    renderTorrc(template, values).replace(/\n+$/, ''),
    '',
    `# The appliance: kzymy.service (group debian-tor) reads ${values.hiddenServiceDir}/hostname.`,
    'DataDirectoryGroupReadable 1',
    'HiddenServiceDirGroupReadable 1',
    '',
  ].join('\n');
}
