// Types, options and the errors of kzymy's Maildir store (the project's own code).
import { UserError } from '../config/user-error.js';

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

export function badUser(): MaildirError {
  return new MaildirError(
    'bad-user',
    'The username must be 1 to 63 lowercase letters, digits or hyphens, starting with a letter or digit.',
  );
}

export function badId(): MaildirError {
  return new MaildirError('bad-id', 'The message id is not valid.');
}

export function notFound(): MaildirError {
  return new MaildirError('not-found', 'There is no such message in this mailbox.');
}

/** The user's Maildir was removed (by this process or another) while it was in use. */
export function userGone(user: string): MaildirError {
  return new MaildirError('not-found', `The mailbox of ${user} no longer exists.`);
}

export interface MaildirStoreOptions {
  /** How long a usage() scan is trusted before the folder is read again (default 30 s). */
  usageTtlMs?: number;
  /** Clock for the usage cache, in ms (tests pass a fake one). */
  now?: () => number;
  /**
   * Told of every message this store adds or removes, after the change is durable: an SMTP
   * worker process passes its changes on to the server process, whose usage counts then
   * include them (see noteChange).
   */
  onChange?: (change: StoreChange) => void;
  /**
   * Asked before the folders of a user are made again after they vanished under a delivery:
   * false when the account was deleted meanwhile by another process, so that a delivery in
   * flight cannot bring its Maildir back.
   */
  mayRecreate?: (user: string) => Promise<boolean>;
}

/** One message added to or removed from a user's Maildir (no content, no address). */
export interface StoreChange {
  kind: 'added' | 'removed';
  user: string;
  id: string;
  size: number;
  receivedAt: number;
}
