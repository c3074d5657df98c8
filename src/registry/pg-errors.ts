// How the PostgreSQL engine words a database failure for the operator: the URL without its
// password, why the call failed in a few words a person can act on (never the server's
// message: it may quote data), and the database's unique violations as registry refusals.
import pg from 'pg';
import { RegistryError } from './types.js';
import { duplicateKey } from './refusals.js';

/** The URL without its password (in the user part or as a `password` parameter), for the operator. */
export function withoutPassword(url: string): string {
  // Not WHATWG URL: it refuses postgresql://user@/db?host=/run/postgresql, which libpq and pg accept.
  return url
    .replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@?#]*):[^@/?#]*@/i, '$1@')
    .replace(/([?&])password=[^&#]*&?/gi, '$1')
    .replace(/[?&]$/, '');
}

const CONNECTION_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOENT', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'EACCES']);

/**
 * node-postgres and pg-pool report a lost or timed-out connection as a plain `Error` with no
 * code ("Connection terminated unexpectedly", "Connection terminated due to connection
 * timeout", "timeout exceeded when trying to connect", "Query read timeout"). Their wording
 * is the only mark they carry, so it is matched here, once, and only on a plain Error.
 */
const DRIVER_CONNECTION_LOSS = /^(Connection terminated|timeout exceeded when trying to connect|Query read timeout)/;

/** Why a database call failed, in a few words a person can act on; null when it is not the database's failure. */
function reason(err: unknown): string | null {
  if (err instanceof pg.DatabaseError) {
    const code = err.code ?? '';
    if (/^08/.test(code)) return 'it cannot be reached';
    if (code === '57P01' || code === '57P02' || code === '57P03') return 'it is shutting down or starting';
    if (code === '28P01' || code === '28000') return 'it refused kzymy\'s login';
    if (code === '3D000') return 'that database does not exist';
    if (code === '42501') return 'kzymy\'s role lacks a permission there';
    return code ? `it answered with error ${code}` : 'it did not answer as expected';
  }
  if (err instanceof AggregateError) return err.errors.length > 0 ? reason(err.errors[0]) : null;
  if (!(err instanceof Error)) return null;
  const code = (err as NodeJS.ErrnoException).code;
  if (code !== undefined && CONNECTION_ERRORS.has(code)) return 'it cannot be reached';
  if (err.constructor === Error && DRIVER_CONNECTION_LOSS.test(err.message)) return 'it cannot be reached';
  return null;
}

/**
 * A failure of the database at `location` as a sentence ('write-failed', which the web
 * answers with 503; `change` when it failed a change). A RegistryError, and anything that is
 * not the database's failure (a bug: a TypeError, say), is returned as it is.
 */
export function databaseError(location: string, err: unknown, change = false): unknown {
  if (err instanceof RegistryError) return err;
  const why = reason(err);
  if (why === null) return err;
  return new RegistryError(
    'write-failed',
    `The registry database ${location} cannot be used now (${why})${change ? ', so the change was not made or not confirmed' : ''}. ` +
      'Check that PostgreSQL is running and reachable, then try again.',
    { cause: err },
  );
}

/** Turns the database's unique violations into the registry's refusals. */
export function uniqueViolation(err: unknown): never {
  const e = err as { code?: string; constraint?: string };
  if (e.code === '23505' && e.constraint === 'users_fingerprint_unique') throw duplicateKey();
  if (e.code === '23505' && e.constraint === 'users_pkey') throw new RegistryError('duplicate-username', 'That username is taken.');
  throw err;
}
