// Request bodies, in memory only and size-bounded: JSON for the API, forms (urlencoded
// or multipart, through busboy) for the pages.
import type { Context } from 'koa';
import busboy from 'busboy';
import { MAX_KEY_BYTES } from '../pgp/index.js';
import { WebError } from './errors.js';

/** What a refused key form is told about the size of a key. */
const KEY_SIZE = `A public key is at most ${MAX_KEY_BYTES / 1024} KiB.`;

function declaredLength(ctx: Context): number | null {
  const raw = ctx.get('Content-Length');
  if (!raw) return null;
  const n = Number(raw);
  return Number.isFinite(n) ? n : null;
}

/** The JSON object in the body; 415 for another content type, 413 over `limit`, 400 if not an object. */
export async function readJson(ctx: Context, limit: number): Promise<Record<string, unknown>> {
  if (!ctx.is('application/json')) {
    throw new WebError(415, 'unsupported-media-type', 'Send the request body as JSON (Content-Type: application/json).');
  }
  const tooLarge = new WebError(413, 'too-large', `The request body is larger than ${Math.round(limit / 1024)} KiB.`);
  const declared = declaredLength(ctx);
  if (declared !== null && declared > limit) throw tooLarge;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw tooLarge;
    chunks.push(chunk);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new WebError(400, 'bad-json', 'The request body is not valid JSON.');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new WebError(400, 'bad-json', 'The request body must be one JSON object.');
  }
  return parsed as Record<string, unknown>;
}

export interface Form {
  fields: Record<string, string>;
  files: Record<string, Buffer>;
}

export interface FormLimits {
  /** Largest uploaded file, in bytes. */
  fileBytes: number;
  /** Largest text field, in bytes. */
  fieldBytes: number;
}

/** A form post (application/x-www-form-urlencoded or multipart/form-data), held in memory. */
export function readForm(ctx: Context, limits: FormLimits): Promise<Form> {
  if (!ctx.is('application/x-www-form-urlencoded', 'multipart/form-data')) {
    return Promise.reject(new WebError(415, 'unsupported-media-type', 'This form must be sent by a browser form post.'));
  }
  const declared = declaredLength(ctx);
  if (declared !== null && declared > limits.fieldBytes * 3 + limits.fileBytes + 64 * 1024) {
    return Promise.reject(new WebError(413, 'too-large', `The form is far too large. ${KEY_SIZE}`));
  }
  return new Promise<Form>((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      bb = busboy({
        headers: ctx.req.headers,
        limits: { fields: 10, files: 1, parts: 12, fileSize: limits.fileBytes, fieldSize: limits.fieldBytes, fieldNameSize: 64 },
      });
    } catch {
      reject(new WebError(400, 'bad-request', 'The form could not be read.'));
      return;
    }
    const form: Form = { fields: {}, files: {} };
    let failure: WebError | null = null;
    const fail = (e: WebError): void => {
      if (!failure) failure = e;
    };
    bb.on('field', (name, value, info) => {
      if (info.valueTruncated) fail(new WebError(413, 'too-large', `A form field is too large. ${KEY_SIZE}`));
      else form.fields[name] = value;
    });
    bb.on('file', (name, stream) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('limit', () => fail(new WebError(413, 'too-large', `The uploaded file is larger than ${Math.round(limits.fileBytes / 1024)} KiB; a public key is smaller than that.`)));
      stream.on('end', () => {
        if (!stream.truncated) form.files[name] = Buffer.concat(chunks);
      });
    });
    bb.on('fieldsLimit', () => fail(new WebError(413, 'too-large', 'The form has too many fields.')));
    bb.on('filesLimit', () => fail(new WebError(413, 'too-large', 'Upload one key file only.')));
    bb.on('partsLimit', () => fail(new WebError(413, 'too-large', 'The form has too many parts.')));
    bb.on('error', () => reject(new WebError(400, 'bad-request', 'The form could not be read.')));
    bb.on('close', () => (failure ? reject(failure) : resolve(form)));
    ctx.req.pipe(bb);
  });
}
