// Server-rendered pages: no JavaScript, no external URL, one local stylesheet.
// Every value goes through the `html` tag, which escapes it.
import { CLIENT_FILE_NAME, CLIENT_PATH, downloadCommands, signupCommand } from './client-download.js';
import { html, type SafeHtml } from './html.js';
import { STYLE_INTEGRITY } from './style.js';

function layout(title: string, main: SafeHtml): string {
  return html`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${title} - kzymy</title>
<link rel="stylesheet" href="/style.css" integrity="${STYLE_INTEGRITY}">
</head>
<body>
<header><a href="/">kzymy</a></header>
<main>
${main}
</main>
<footer>
<p>kzymy receives mail only; it never sends any. This page uses no JavaScript and loads nothing from elsewhere.</p>
</footer>
</body>
</html>
`.value;
}

/** "0123 4567 ..." for reading aloud and comparing. */
export function groupFingerprint(fpr: string): string {
  return fpr.replace(/(.{4})(?=.)/g, '$1 ');
}

function errorBox(message: string | undefined): SafeHtml {
  return message ? html`<p class="error" id="error">${message}</p>` : html``;
}

/** The single-file kzymy-client as the pages offer it. */
export interface ClientView {
  /** Hex SHA-256 of the file served; null when this server has none to offer (not built). */
  sha256: string | null;
  bytes: number;
  /** The address clients use: http://ONION, or in development this listener's own origin. */
  server: string;
  /** Development on loopback: no Tor in the commands. */
  noTor: boolean;
}

/** Where to get kzymy-client and how to check it, or a sentence saying this server has none. */
function clientDownload(v: ClientView): SafeHtml {
  if (!v.sha256) {
    return html`<p id="client-missing">This server has no copy of kzymy-client to offer right now: it was
started without building it. Ask its operator, or build it from kzymy's source with
<code>npm run build</code> (it makes <code>dist/bundle/kzymy-client.mjs</code>).</p>`;
  }
  const c = downloadCommands(v.server, v.noTor, v.sha256);
  const url = `${v.server}${CLIENT_PATH}`;
  return html`<p>kzymy-client is one file, <a id="client-link" href="${CLIENT_PATH}" download>${CLIENT_FILE_NAME}</a>
(${Math.max(1, Math.round(v.bytes / 1024))} KiB), that needs only Node.js 20 or later, GnuPG and Tor.
Its SHA-256 is <code id="client-sha256">${v.sha256}</code>. Download it${v.noTor ? '' : ' through Tor'}, and check it
(<code>sha256sum</code> answers <code>${CLIENT_FILE_NAME}: OK</code>):</p>
<pre><code id="client-download">${c.download}
${c.check}</code></pre>
${
  v.noTor
    ? html``
    : html`<p class="hint">Or with torsocks: <code>torsocks curl -o ${CLIENT_FILE_NAME} ${url}</code>. While Tor Browser
runs, its own Tor listens on port 9150: write <code>127.0.0.1:9150</code> in the curl line and give
kzymy-client <code>--proxy socks5h://127.0.0.1:9150</code> (its profile keeps it). The link above, opened in
Tor Browser, downloads the same file.</p>`
}`;
}

export interface HomeView {
  domain: string;
  /** How to get kzymy-client from this server. */
  client: ClientView;
  /** This service's onion address, when tor has published it. */
  onion?: string | null;
  csrf: string;
  error?: string;
  keyText?: string;
}

export function homePage(v: HomeView): string {
  return layout(
    'Pseudonymous mail, for receiving',
    html`<h1>An address that leads nowhere</h1>
<p>kzymy gives you mail addresses that are not tied to you: every address
<code>anything@USERNAME.${v.domain}</code> reaches you. Each message is encrypted to your
OpenPGP key the moment it arrives, and you fetch it over this onion service.
kzymy receives mail only.</p>
${v.onion ? html`<p>This service: <code id="onion">${v.onion}</code></p>` : html``}
${errorBox(v.error)}
<form method="post" action="/signup" enctype="multipart/form-data">
<input type="hidden" name="csrf" value="${v.csrf}">
<label for="key">Your OpenPGP public key</label>
<textarea id="key" name="key" rows="10" spellcheck="false" autocomplete="off" aria-describedby="key-hint">${v.keyText ?? ''}</textarea>
<p class="hint" id="key-hint">Paste the ASCII-armored public key: <code>gpg --armor --export YOUR-KEY-ID</code>.
Public part only, at most 64 KiB.</p>
<label for="keyfile">Or upload the key file</label>
<input type="file" id="keyfile" name="keyfile" accept=".asc,.gpg,.pgp,.key,.txt,application/pgp-keys,text/plain">
<button type="submit">Continue</button>
</form>

<h2>How signing up works</h2>
<ol>
<li>You give a public key. The server shows its fingerprint and a short message encrypted to it.</li>
<li>You decrypt the message with <code>gpg --decrypt</code> and send back the code on its <code>code:</code> line: that proves the key is yours.</li>
<li>You get a random username, and mail for <code>anything@USERNAME.${v.domain}</code> waits for you, encrypted.</li>
</ol>

<h2 id="client">Get kzymy-client</h2>
<p>You fetch your mail with kzymy-client, over Tor; it can also sign you up instead of the
form above.</p>
${clientDownload(v.client)}
<p>Then sign up with a key from your GnuPG keyring (<code>gpg --fingerprint</code> shows its fingerprint):</p>
<pre><code id="client-signup">${signupCommand(v.client.server, v.client.noTor)}</code></pre>

<h2>What kzymy protects, and what it does not</h2>
<ul class="protect">
<li><strong>Protected:</strong> stored mail. It is encrypted to your key on arrival; the server never keeps it in plain text and holds no secret of yours, no password.</li>
<li><strong>Protected:</strong> where you are. Signup and pickup happen only over this onion service; the server stores your public key, your username and your settings, nothing that locates you.</li>
<li><strong>Not protected:</strong> mail on its way to the server. Senders deliver it over ordinary SMTP; it is not secret in transit.</li>
<li><strong>Not protected:</strong> the address itself. The services that send to it see it, and can link everything sent there.</li>
<li><strong>Not protected:</strong> metadata. The operator sees when mail arrives for your username and how large it is.</li>
<li><strong>Your part:</strong> use a fresh key for each identity (one key, one account: reusing a key links identities), and fetch from a clean system over Tor.</li>
</ul>`,
  );
}

export interface ChallengeView {
  fingerprint: string;
  challenge: string;
  signupId: string;
  csrf: string;
  expiresAt: Date;
  attemptsLeft: number;
  error?: string;
}

function hhmm(d: Date): string {
  return d.toISOString().slice(11, 16);
}

export function challengePage(v: ChallengeView): string {
  return layout(
    'Prove the key is yours',
    html`<h1>Prove the key is yours</h1>
<p>Key fingerprint:</p>
<p><code class="fpr" id="fingerprint">${groupFingerprint(v.fingerprint)}</code></p>
<p>Check that this is your key (<code>gpg --fingerprint</code>). The message below is
encrypted to it and holds a short code.</p>
${errorBox(v.error)}
<h2>1. Decrypt the message</h2>
<p>Save the whole block, from <code>-----BEGIN</code> to <code>-----END</code>, in a file
named <code>challenge.asc</code>, then run:</p>
<pre><code>gpg --decrypt challenge.asc</code></pre>
<p class="hint">Or run <code>gpg --decrypt</code>, paste the block and press Ctrl-D.</p>
<pre id="challenge">${v.challenge}</pre>
<p>gpg prints six lines. Check them before you answer: the first is
<code>kzymy challenge v1</code>, then <code>purpose: signup</code>, <code>server:</code> with the
address of this site, <code>username: -</code> and <code>fingerprint:</code> with your key's
fingerprint. The last line is <code>code:</code> followed by the code, like
<code>code: k7qm-2xwd-9fne-h4tr</code>. If gpg prints anything else, do not send it.</p>
<h2>2. Send the code back</h2>
<form method="post" action="/signup/confirm">
<input type="hidden" name="signup" value="${v.signupId}">
<input type="hidden" name="csrf" value="${v.csrf}">
<label for="code">The code from the <code>code:</code> line</label>
<textarea id="code" name="code" rows="2" required maxlength="2000" autocomplete="off" spellcheck="false" autocapitalize="none" aria-describedby="code-hint"></textarea>
<p class="hint" id="code-hint">Paste the code (e.g. <code>k7qm-2xwd-9fne-h4tr</code>) or the whole <code>code:</code> line;
the six lines gpg printed work too. This signup stays open until ${hhmm(v.expiresAt)} UTC;
${v.attemptsLeft} ${v.attemptsLeft === 1 ? 'attempt is' : 'attempts are'} left. Nothing is created before the right code comes back.</p>
<button type="submit">Create my account</button>
</form>`,
  );
}

export interface DoneView {
  username: string;
  domain: string;
  fingerprint: string;
  onion: string | null;
  command: string;
  /** How to get kzymy-client from this server. */
  client: ClientView;
}

export function donePage(v: DoneView): string {
  const mailDomain = `${v.username}.${v.domain}`;
  return layout(
    'Your account is ready',
    html`<h1>Your account is ready</h1>
<p class="ok">Write these down now: this page is shown once.</p>
<dl>
<dt>Username</dt>
<dd><code id="username">${v.username}</code></dd>
<dt>Mail domain</dt>
<dd><code id="mail-domain">${mailDomain}</code></dd>
<dt>Example addresses</dt>
<dd><code>anything@${mailDomain}</code></dd>
<dd><code>newsletter@${mailDomain}</code>, <code>shop@${mailDomain}</code></dd>
<dt>Onion address</dt>
<dd>${v.onion ? html`<code id="onion">${v.onion}</code>` : html`<span id="onion">not published yet: use the address you opened this page with</span>`}</dd>
<dt>Key</dt>
<dd><code class="fpr">${groupFingerprint(v.fingerprint)}</code></dd>
</dl>
<p>Every address at <code>${mailDomain}</code> reaches you (catch-all is on); you can block
single addresses or switch to a list of aliases with <code>kzymy-client aliases</code> and
<code>kzymy-client catch-all</code>.</p>
<h2>Fetch your mail</h2>
<p>A welcome message is waiting: fetching it proves the whole chain works. On your
system with Tor running and your key in GnuPG, get kzymy-client.</p>
${clientDownload(v.client)}
<p>Then fetch your mail into the Maildir <code>~/Maildir</code>:</p>
<pre id="command"><code>${v.command}</code></pre>
<p>Mail is deleted from the server only after it has been delivered on your side.</p>`,
  );
}

export function errorPage(status: number, title: string, message: string): string {
  return layout(
    title,
    html`<h1>${title}</h1>
<p class="error" id="error">${message}</p>
<p><a href="/">Back to the start</a></p>
<p class="hint">HTTP status ${status}.</p>`,
  );
}
