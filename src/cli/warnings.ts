// Node prints an ExperimentalWarning the first time openpgp uses Web Crypto's Ed25519.
// It says nothing an operator or user can act on, so the command lines drop that one
// warning and print every other warning as Node would.
const DROP = /Ed25519|X25519/;

export function quietExperimentalCryptoWarnings(): void {
  process.removeAllListeners('warning');
  process.on('warning', (w: Error) => {
    if (w.name === 'ExperimentalWarning' && DROP.test(w.message)) return;
    process.stderr.write(`${w.name}: ${w.message}\n`);
  });
}
