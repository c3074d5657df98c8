// Two narrow adjustments to smtp-server 3.x that its options do not offer. Hand-written
// because no option exists; guarded so that an incompatible smtp-server fails loudly at
// start instead of misbehaving.
//
// 1. The greeting pause. smtp-server waits a hard-coded 100 ms before "220" to catch
//    clients that talk before the greeting ("early talkers"). kzymy makes the pause
//    configurable (smtp.greetingDelayMs, default 0; see docs/threat-model.md): mail is
//    only accepted for random per-user subdomains, so the pause buys little, and it caps
//    one-message-per-connection intake at sessions / 0.1 s.
// 2. Enhanced status codes. smtp-server prefixes every reply with an enhanced code looked
//    up from the basic code alone (550 -> 5.1.1), so "550 5.7.1 relay denied" would come
//    out as "550 5.1.1 5.7.1 ...". A reply text that already starts with an enhanced code
//    is sent as it is, and an over-long command line is reported as such.
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;
let applied = false;

interface ConnectionInternals {
  _server: { options: { maxClients?: number; greetingDelayMs?: number }; connections: Set<unknown> };
  name: string;
  _setListeners(cb: () => void): void;
  connectionReady(): void;
  send(code: number, data?: unknown, context?: unknown): void;
}

export function applySmtpServerPatches(): void {
  if (applied) return;
  const proto = SMTPConnection.prototype as unknown as ConnectionInternals & Record<string, unknown>;
  for (const name of ['init', 'send', '_setListeners', 'connectionReady']) {
    if (typeof proto[name] !== 'function') {
      throw new Error(`This version of smtp-server lacks SMTPConnection.${name}; kzymy's patches need review.`);
    }
  }

  proto.init = function init(this: ConnectionInternals) {
    this._setListeners(() => {
      const opts = this._server.options;
      if (opts.maxClients && this._server.connections.size > opts.maxClients) {
        return this.send(421, '4.7.0 ' + this.name + ' Too many connected clients, try again in a moment');
      }
      const delay = opts.greetingDelayMs ?? 100;
      if (delay <= 0) return setImmediate(() => this.connectionReady());
      setTimeout(() => this.connectionReady(), delay).unref();
    });
  };

  const send = proto.send;
  proto.send = function patchedSend(this: ConnectionInternals, code: number, data?: unknown, context?: unknown) {
    // An over-long command line ends the session with 421; its generic 4.4.2 ("timeout")
    // would mislead the client, so say what happened: a syntax problem (X.5.0).
    if (code === 421 && data === 'Error: Command line too long') data = '4.5.0 Command line too long; closing connection';
    if (typeof data === 'string' && ENHANCED.test(data)) context = false;
    return send.call(this, code, data, context);
  };
  applied = true;
}
