// STUB: interface fixed; implementation in progress.
import type { Readable } from 'node:stream';

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

export class MaildirError extends Error {
  constructor(
    readonly code: MaildirErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'MaildirError';
  }
}

/** maildirRoot/USERNAME/{tmp,new,cur}; files 0600, folders 0700 (qmail's maildir(5)). */
export class MaildirStore {
  constructor(readonly root: string) {}
  static isValidId(_id: string): boolean {
    throw new Error('not implemented');
  }
  async ensureUser(_user: string): Promise<void> {}
  /** Writes tmp/, fsyncs, renames into new/, fsyncs new/. Resolves only when durable; on failure no file remains. */
  async deliver(_user: string, _content: Uint8Array | Readable | AsyncIterable<Uint8Array>): Promise<MessageInfo> {
    throw new Error('not implemented');
  }
  async list(_user: string): Promise<MessageInfo[]> {
    throw new Error('not implemented');
  }
  async read(_user: string, _id: string): Promise<{ info: MessageInfo; stream: Readable }> {
    throw new Error('not implemented');
  }
  async remove(_user: string, _id: string): Promise<void> {}
  async usage(_user: string): Promise<Usage> {
    throw new Error('not implemented');
  }
  async removeUser(_user: string): Promise<void> {}
  async listUsers(): Promise<string[]> {
    throw new Error('not implemented');
  }
  /** Removes every file left in a tmp/ (call at start, before accepting mail). */
  async cleanTmp(): Promise<number> {
    throw new Error('not implemented');
  }
  /** Deletes messages received before `olderThan`. */
  async purge(_olderThan: Date): Promise<{ count: number; bytes: number }> {
    throw new Error('not implemented');
  }
}
