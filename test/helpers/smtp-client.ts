// A minimal SMTP client over a raw socket, for tests that need to know exactly which
// messages got "250" (swaks is one process a message; smtp-source does not say).
import net from 'node:net';

export interface SendResult {
  /** The reply to the final dot, or the first refusal, or '' if the connection died. */
  reply: string;
}

export function sendRaw(port: number, rcpt: string[], data: Buffer, from = 'sender@example.org', localAddress?: string): Promise<SendResult> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1', localAddress });
    let buf = '';
    let step = 0;
    let rcptIdx = 0;
    const done = (reply: string) => {
      sock.destroy();
      resolve({ reply });
    };
    sock.on('error', () => done(''));
    sock.on('close', () => done(''));
    sock.on('data', (chunk) => {
      buf += chunk.toString('latin1');
      let nl: number;
      while ((nl = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        if (/^\d{3}-/.test(line)) continue; // multi-line reply continues
        const code = Number(line.slice(0, 3));
        if (step === 0 && code === 220) {
          sock.write('EHLO client.example.org\r\n');
          step = 1;
        } else if (step === 1 && code === 250) {
          sock.write(`MAIL FROM:<${from}>\r\n`);
          step = 2;
        } else if ((step === 2 || step === 3) && code === 250) {
          if (rcptIdx < rcpt.length) {
            sock.write(`RCPT TO:<${rcpt[rcptIdx++]}>\r\n`);
            step = 3;
          } else {
            sock.write('DATA\r\n');
            step = 4;
          }
        } else if (step === 4 && code === 354) {
          // Dot-stuff lines that start with "." and end with CRLF . CRLF.
          const text = data.toString('latin1').replace(/(^|\r\n)\./g, '$1..');
          sock.write(Buffer.from(text.endsWith('\r\n') ? text : text + '\r\n', 'latin1'));
          sock.write('.\r\n');
          step = 5;
        } else if (step === 5) {
          sock.write('QUIT\r\n');
          return done(line);
        } else return done(line);
      }
    });
  });
}
