// src/tor: torrc rendering, the managed tor child, the onion hostname.
export { renderTorrc, torrcTemplatePath, torrcValue, obConfigText, OB_CONFIG_FILE, type TorrcValues } from './torrc.js';
export { readOnionAddress, isV3Onion } from './onion.js';
export { startManagedTor, managedTorrc, managedControlSocket, type ManagedTor, type StartManagedTorOptions } from './managed.js';
export { watchTor, parseBootstrap, parseKeywords, type TorWatch, type TorState, type TorBootstrap } from './control.js';
