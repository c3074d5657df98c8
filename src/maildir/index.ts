// Public face of kzymy's Maildir store (src/maildir): deliver atomically, list, read,
// delete, per qmail's maildir(5). The project's own code: the `maildir-tools` package
// named in the original design card does not exist on npm (SPEC section 6).
export { MaildirError, type MaildirErrorCode, type MessageInfo, type Usage } from './errors.js';
export { MaildirStore, type MaildirStoreOptions } from './store.js';
export { encodeHostname, isValidId, isValidUsername, uniqueName, sizeFromName, timeFromName } from './names.js';
export { fsyncPath } from './dirsync.js';
