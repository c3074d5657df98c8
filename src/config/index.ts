// The configuration module: typed settings (schema.ts), read from defaults, a JSON file and
// KZYMY_* environment variables (load.ts), and the errors every command shares (user-error.ts).
export { isLoopbackHost } from './hosts.js';
export { EXIT_FIX, EXIT_TEMPFAIL, EXIT_USAGE, UserError } from './user-error.js';
export type { Config, SmtpConfig, WebConfig, TorConfig, LimitsConfig, DnsConfig, RegistryConfig } from './schema.js';
export { ConfigError } from './problems.js';
export { onPath } from './paths.js';
export { loadConfig, type LoadOptions } from './load.js';
