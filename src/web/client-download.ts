// The single-file kzymy-client (dist/bundle/kzymy-client.mjs, made by `npm run build`),
// offered on the onion pages. It is read once at start and kept in memory (about 0.5 MB),
// so the SHA-256 the pages show is always that of the bytes served, even if the file on
// disk is rebuilt while the server runs.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Where the pages link to it. */
export const CLIENT_PATH = '/client/kzymy-client.mjs';
export const CLIENT_FILE_NAME = 'kzymy-client.mjs';
/** How the pages tell people to run the downloaded file. */
export const CLIENT_RUN = `node ${CLIENT_FILE_NAME}`;

/** Where `npm run build` writes it: two folders up from src/web and from dist/web alike. */
export const DEFAULT_CLIENT_BUNDLE = fileURLToPath(new URL('../../dist/bundle/kzymy-client.mjs', import.meta.url));

export interface ClientBundle {
  bytes: Buffer;
  /** Lower-case hex, as sha256sum prints it. */
  sha256: string;
}

/** The file and its SHA-256, or, when it cannot be read (not built), the reason's code. */
export function loadClientBundle(file: string): ClientBundle | { missing: string } {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    return { missing: String((err as { code?: unknown }).code ?? 'unreadable') };
  }
  if (bytes.length === 0) return { missing: 'empty' };
  return { bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
}

/** The shell lines that fetch the file from `server` (through Tor's SOCKS port unless noTor) and check it. */
export function downloadCommands(server: string, noTor: boolean, sha256: string): { download: string; check: string } {
  const url = `${server}${CLIENT_PATH}`;
  return {
    download: noTor ? `curl -o ${CLIENT_FILE_NAME} ${url}` : `curl --socks5-hostname 127.0.0.1:9050 -o ${CLIENT_FILE_NAME} ${url}`,
    check: `echo "${sha256}  ${CLIENT_FILE_NAME}" | sha256sum -c`,
  };
}

/** The client's signup command for this server. */
export function signupCommand(server: string, noTor: boolean): string {
  return `${CLIENT_RUN} signup --server ${server} ${noTor ? '--no-tor ' : ''}--key FINGERPRINT`;
}
