// The one stylesheet, served from /style.css (CSP: style-src 'self', no inline style).
// Mobile first: readable at 360 px, nothing wider than the screen.
import { createHash } from 'node:crypto';

export const STYLE_CSS = `*,*::before,*::after{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;color:#1b1b1f;background:#f7f7f4}
header,main,footer{max-width:44rem;margin:0 auto;padding:0 1rem}
header{padding-top:1rem;padding-bottom:.5rem;border-bottom:1px solid #d8d8d0}
header a{font-weight:700;font-size:1.25rem;color:#1b1b1f;text-decoration:none}
footer{margin-top:2rem;padding-top:1rem;padding-bottom:2rem;border-top:1px solid #d8d8d0;color:#55555a;font-size:.875rem}
h1{font-size:1.5rem;line-height:1.25;margin:1.25rem 0 .75rem}
h2{font-size:1.2rem;margin:1.75rem 0 .5rem}
a{color:#1a4f9c}
p,ul,ol,dl{margin:.5rem 0 1rem}
li{margin:.25rem 0}
code,pre,kbd{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.875rem}
code{overflow-wrap:anywhere;background:#ecece6;padding:0 .2em;border-radius:3px}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#fff;border:1px solid #c9c9c0;border-radius:4px;padding:.75rem;margin:.5rem 0 1rem;max-width:100%}
pre code{background:none;padding:0}
label{display:block;font-weight:600;margin:1rem 0 .25rem}
textarea,input[type=text],input[type=file]{display:block;width:100%;max-width:100%;font:inherit;padding:.5rem;border:1px solid #8a8a80;border-radius:4px;background:#fff;color:inherit}
textarea{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.8rem;min-height:10rem;resize:vertical}
input[type=text]{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;letter-spacing:.05em}
input[type=file]{padding:.35rem;background:transparent;border-style:dashed}
button{display:inline-block;margin-top:1rem;font:inherit;font-weight:600;padding:.6rem 1.2rem;border:0;border-radius:4px;background:#1a4f9c;color:#fff;cursor:pointer}
button:hover,button:focus{background:#143d79}
:focus-visible{outline:3px solid #f0b429;outline-offset:2px}
.hint{color:#55555a;font-size:.9rem;margin-top:.25rem}
.error{border-left:4px solid #b3261e;background:#fbeaea;padding:.5rem .75rem;color:#6b1410}
.ok{border-left:4px solid #2e7d32;background:#e9f5ea;padding:.5rem .75rem}
.fpr{font-size:1rem;letter-spacing:.03em}
dl{display:grid;grid-template-columns:minmax(0,1fr);gap:.1rem}
dt{font-weight:600;margin-top:.5rem}
dd{margin:0;overflow-wrap:anywhere}
.protect li{margin:.4rem 0}
@media (min-width:40rem){body{font-size:17px}h1{font-size:1.8rem}}
`;

/** Subresource integrity of the stylesheet, for the <link>. */
export const STYLE_INTEGRITY = 'sha384-' + createHash('sha384').update(STYLE_CSS).digest('base64');
