// Types and the error class of kzymy's Maildir store (the project's own code).
import { UserError } from '../config/index.js';

export interface MessageInfo {
  /** Opaque id: the file's base name (maildir(5) unique name). */
  id: string;
  size: number;
  receivedAt: Date;
}

export interface Usage {
  count: number;
  bytes: number;
  oldest: Date | null;
}

export type MaildirErrorCode = 'bad-id' | 'bad-user' | 'not-found';

/** A refusal the caller can show as is: `message` is one human sentence, no stack text. */
export class MaildirError extends UserError {
  constructor(
    readonly code: MaildirErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'MaildirError';
  }
}
