// `kzymy-server torrc`: the project's torrc template filled in for a tor that publishes this
// server's onion service; with --appliance, the appliance's /etc/tor/torrc (what
// scripts/provision.sh installs). Each value not given comes from the configuration.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { InvalidArgumentError } from 'commander';
import { UserError, type Config } from '../config/index.js';
import { errnoPhrase } from '../config/errno.js';
import { applianceTorrc, renderTorrc, torrcTemplatePath } from '../tor/torrc.js';

export interface TorrcOptions {
  hiddenServiceDir?: string;
  webHost?: string;
  webPort?: number;
  template?: string;
  appliance?: boolean;
  onionbalanceFrontend?: string;
}

/** commander's parser of --web-port: a whole number (renderTorrc checks the range). */
export function portArgument(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('give a port number, 1-65535.');
  return Number(value);
}

/** The torrc text; `config` is read only when a value is not given. */
export async function torrcText(opts: TorrcOptions, config: () => Config): Promise<string> {
  const file = opts.template ? path.resolve(opts.template) : torrcTemplatePath();
  let template: string;
  try {
    template = await readFile(file, 'utf8');
  } catch (err) {
    throw new UserError(`The torrc template ${file} cannot be read: ${errnoPhrase(err) ?? String(err)}.`);
  }
  const values = {
    hiddenServiceDir: opts.hiddenServiceDir ?? path.dirname(config().tor.hostnameFile),
    webHost: opts.webHost ?? config().web.host,
    webPort: opts.webPort ?? config().web.port,
    // Onion addresses are case-insensitive; tor and the configuration use lower case.
    onionbalanceFrontend: opts.onionbalanceFrontend?.trim().toLowerCase() ?? config().tor.frontendOnion,
  };
  return (opts.appliance ? applianceTorrc : renderTorrc)(template, values);
}
