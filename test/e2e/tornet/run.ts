// Debugging by hand: `npx tsx test/e2e/tornet/run.ts [DIR]` starts the private Tor
// network plus a demo onion service in front of a tiny local HTTP server, prints the
// SOCKS port and the onion address, and keeps running until Ctrl-C.
//   curl --socks5-hostname 127.0.0.1:SOCKS http://ONION/
import http from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startTorNetwork } from './index.js';

async function main(): Promise<void> {
  const dir = process.argv[2] ? path.resolve(process.argv[2]) : mkdtempSync(path.join(tmpdir(), 'kzymy-tornet-'));
  const t0 = Date.now();
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('hello from the kzymy tornet demo onion service\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;

  const net = await startTorNetwork({ dir, log: (l) => console.log(l) });
  const stopAll = async (): Promise<void> => {
    await net.stop();
    server.close();
  };
  process.once('SIGINT', () => void stopAll().then(() => process.exit(130)));
  process.once('SIGTERM', () => void stopAll().then(() => process.exit(143)));

  const hs = await net.startOnionService({ targetPort: port, name: 'demo' });
  const answer = await net.waitForOnion(hs.address, { serviceLogFile: hs.logFile });
  console.log(`tornet: onion answered ${answer.status} after ${answer.attempts} attempt(s)`);
  console.log('');
  console.log(`  logs and keys  ${dir}/<node>/ (notice.log, stdout.log, torrc)`);
  console.log(`  socks port     ${net.socksPort}`);
  console.log(`  onion address  ${hs.address}`);
  console.log(`  try            curl --socks5-hostname 127.0.0.1:${net.socksPort} http://${hs.address}/`);
  console.log(`  ready after    ${((Date.now() - t0) / 1000).toFixed(1)} s; Ctrl-C stops every tor`);
  for (const n of net.nodes) console.log(`  ${n.name.padEnd(7)} pid ${n.pid}`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
