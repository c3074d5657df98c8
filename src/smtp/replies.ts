// Every refusal kzymy's SMTP listener gives, with its basic and enhanced status code
// (RFC 5321, RFC 3463). smtp-server sends `responseCode` and the message as given; the
// patch in patches.ts stops it from prefixing a second, generic enhanced code.

export class SmtpReply extends Error {
  readonly responseCode: number;
  constructor(
    code: number,
    readonly enhanced: string,
    text: string,
  ) {
    super(`${enhanced} ${text}`);
    this.name = 'SmtpReply';
    this.responseCode = code;
  }
}

export const reply = {
  noSuchUser: () => new SmtpReply(550, '5.1.1', 'No such mailbox here'),
  relayDenied: () => new SmtpReply(550, '5.7.1', 'Relay access denied: this server accepts mail only for its own domain'),
  badAddress: () => new SmtpReply(553, '5.1.3', 'Bad recipient address syntax'),
  keyUnusable: () =>
    new SmtpReply(450, '4.7.1', "The recipient's encryption key is not usable right now; try again later"),
  overQuota: () => new SmtpReply(452, '4.2.2', 'Mailbox full; try again later'),
  diskFull: () => new SmtpReply(452, '4.3.1', 'Insufficient system storage; try again later'),
  tooBig: (limit: number) => new SmtpReply(552, '5.3.4', `Message size exceeds the fixed maximum of ${limit} bytes`),
  storeFailed: () => new SmtpReply(451, '4.3.0', 'Local error in processing; the message was not stored, try again later'),
  busy: () => new SmtpReply(451, '4.3.2', 'Too much mail is being encrypted right now; the message was not stored, try again later'),
  shuttingDown: () => new SmtpReply(421, '4.3.2', 'Service shutting down; try again later'),
  /** The words smtp-server itself uses when maxClients is reached. */
  tooManyClients: (name: string) => new SmtpReply(421, '4.7.0', `${name} Too many connected clients, try again in a moment`),
  /** No SMTP worker process is running at the moment (one is being restarted). */
  noWorker: () => new SmtpReply(421, '4.3.2', 'Service not available right now; try again later'),
  tooManyFromAddress: () => new SmtpReply(421, '4.7.0', 'Too many connections from your address; try again later'),
  commandTooSlow: () => new SmtpReply(421, '4.4.2', 'Command line not completed in time; closing connection'),
  dataTooSlow: () =>
    new SmtpReply(421, '4.4.2', 'Message data arrived too slowly; closing connection, the message was not stored'),
};
