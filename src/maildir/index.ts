// Public face of kzymy's Maildir store (src/maildir): deliver atomically, list, read,
// delete, per qmail's maildir(5). The project's own code: there is no Maildir
// library on npm worth depending on.
export { MaildirError, type MaildirErrorCode, type MaildirStoreOptions, type MessageInfo, type StoreChange, type Usage } from './errors.js';
export { MaildirStore } from './store.js';
export { writeMessage, type DeliverOptions, type MaildirFolder, type MessageContent, type WriteOptions, type Written } from './writer.js';
export { encodeHostname, isValidId, isValidUsername, uniqueName, sizeFromName, timeFromName } from './names.js';
export { DirSyncer } from './dirsync.js';
