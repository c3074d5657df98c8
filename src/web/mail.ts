// Messages the web itself puts in a Maildir (welcome, key-expiry notices): a raw
// RFC 5322 message built in memory, encrypted to the user's key like any mail, then
// delivered. The plaintext never touches the disk.
import { randomBytes } from 'node:crypto';
import type { User } from '../registry/index.js';
import { rfc5322Date, sealMessage } from '../pgp/index.js';
import { CLIENT_RUN } from './client-download.js';
import type { Web } from './context.js';

export interface TextMail {
  to: string;
  subject: string;
  body: string;
  date: Date;
}

/** A plain-text message, CRLF line ends, 7-bit (the text is kept ASCII). */
export function buildMail(domain: string, mail: TextMail): Buffer {
  const headers = [
    'Return-Path: <>',
    `Delivered-To: ${mail.to}`,
    `From: kzymy <postmaster@${domain}>`,
    `To: <${mail.to}>`,
    `Subject: ${mail.subject}`,
    `Date: ${rfc5322Date(mail.date)}`,
    `Message-ID: <${randomBytes(12).toString('hex')}@${domain}>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    'Auto-Submitted: auto-generated',
  ];
  const body = mail.body.replace(/\r?\n/g, '\r\n');
  return Buffer.from(headers.join('\r\n') + '\r\n\r\n' + body + (body.endsWith('\r\n') ? '' : '\r\n'), 'utf8');
}

/** Encrypts `plaintext` to the user's key and delivers it to her Maildir. */
export async function deliverEncrypted(web: Web, user: User, plaintext: Buffer, date: Date): Promise<void> {
  const { keys, maildir, config } = web.deps;
  const key = await keys.get(user.fingerprint, user.keyId, () => web.deps.registry.publicKey(user));
  // Sealed like intake's mail (protected headers), so that mail clients show its From and Subject.
  const file = await sealMessage(plaintext, { key, domain: config.domain, date });
  plaintext.fill(0);
  await maildir.deliver(user.username, file);
}

/** The fetch command the pages and the welcome message show, for the file the pages offer. */
export function fetchCommand(server: string, username: string, fingerprint: string, noTor: boolean): string {
  return `${CLIENT_RUN} fetch --server ${server} ${noTor ? '--no-tor ' : ''}--username ${username} --key ${fingerprint} --maildir ~/Maildir --decrypt`;
}

export function welcomeMail(web: Web, user: User, server: string, noTor: boolean, date: Date): Buffer {
  const domain = web.deps.config.domain;
  const mailDomain = `${user.username}.${domain}`;
  const body = [
    'Welcome to kzymy.',
    '',
    `Your username is ${user.username}. Every address at ${mailDomain} reaches you, for`,
    `example anything@${mailDomain} or shop@${mailDomain}.`,
    '',
    'This message was encrypted to your key on the server, like all your mail,',
    'and fetched over the onion service: reading it proves the whole chain works.',
    '',
    'Fetch your mail with:',
    '',
    `  ${fetchCommand(server, user.username, user.fingerprint, noTor)}`,
    '',
    `Key: ${user.fingerprint}`,
    '',
    'Mail that waits unfetched is deleted after ' + String(web.deps.config.limits.retentionDays) + ' days.',
    'Remember: mail travels to this server unencrypted, and the services that send',
    'it see your address. Use a fresh key for each identity.',
  ].join('\n');
  return buildMail(domain, { to: `welcome@${mailDomain}`, subject: 'Welcome to kzymy', body, date });
}
