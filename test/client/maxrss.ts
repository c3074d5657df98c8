// Loaded into a kzymy-client subprocess by test/client/stream.test.ts (node --import): at
// exit, writes the process's peak resident set size (KiB, getrusage's ru_maxrss) to the file
// $KZYMY_TEST_MAXRSS_FILE, so that the test can bound the client's memory.
import { writeFileSync } from 'node:fs';

const file = process.env.KZYMY_TEST_MAXRSS_FILE;
if (file) process.on('exit', () => writeFileSync(file, String(process.resourceUsage().maxRSS)));
