// How a database failure is worded for the operator, decided by the error's type and code:
// PostgreSQL's own errors by their SQLSTATE, the socket's by errno, node-postgres's codeless
// connection losses by their fixed wording; anything else (a bug) passes through untouched.
import { expect } from 'chai';
import pg from 'pg';
import { databaseError } from '../../src/registry/pg-errors.js';
import { RegistryError } from '../../src/registry/types.js';

const AT = 'postgresql://kzymy@/kzymy';

function serverError(code: string, message: string): pg.DatabaseError {
  const err = new pg.DatabaseError(message, message.length, 'error');
  err.code = code;
  return err;
}

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`connect ${code} /run/postgresql/.s.PGSQL.5432`), { code });
}

function sentence(err: unknown, change = false): string {
  const out = databaseError(AT, err, change);
  expect(out).to.be.instanceOf(RegistryError);
  expect((out as RegistryError).code).to.equal('write-failed');
  expect((out as RegistryError).cause).to.equal(err);
  return (out as RegistryError).message;
}

describe('registry: PostgreSQL errors', () => {
  it('words the server\'s errors by their code, never by their message (it may quote data)', () => {
    const secret = 'duplicate key value violates unique constraint: (alice@example.org)';
    expect(sentence(serverError('28P01', secret))).to.include('(it refused kzymy\'s login)');
    expect(sentence(serverError('57P01', secret))).to.include('(it is shutting down or starting)');
    expect(sentence(serverError('3D000', secret))).to.include('(that database does not exist)');
    expect(sentence(serverError('42501', secret))).to.include('(kzymy\'s role lacks a permission there)');
    expect(sentence(serverError('08006', secret))).to.include('(it cannot be reached)');
    expect(sentence(serverError('XX000', secret))).to.include('(it answered with error XX000)');
    for (const code of ['28P01', 'XX000']) expect(sentence(serverError(code, secret))).not.to.include('alice');
  });

  it('takes a socket that cannot connect, and node-postgres\'s codeless connection losses, as "cannot be reached"', () => {
    expect(sentence(errno('ECONNREFUSED'))).to.equal(
      `The registry database ${AT} cannot be used now (it cannot be reached). Check that PostgreSQL is running and reachable, then try again.`,
    );
    expect(sentence(errno('ENOENT'), true)).to.include('(it cannot be reached), so the change was not made or not confirmed.');
    for (const message of ['Connection terminated unexpectedly', 'Connection terminated due to connection timeout', 'timeout exceeded when trying to connect', 'Query read timeout']) {
      expect(sentence(new Error(message))).to.include('(it cannot be reached)');
    }
    expect(sentence(new AggregateError([errno('ECONNREFUSED'), errno('ECONNREFUSED')], ''))).to.include('(it cannot be reached)');
  });

  it('passes a registry refusal and a bug through as they are', () => {
    const refusal = new RegistryError('duplicate-username', 'That username is taken.');
    expect(databaseError(AT, refusal)).to.equal(refusal);
    // A bug is not the database's failure: it must not be reworded as "try again later".
    const bug = new TypeError('Connection terminated (not really: a TypeError)');
    expect(databaseError(AT, bug)).to.equal(bug);
    const plain = new Error('Received unexpected message from the server');
    expect(databaseError(AT, plain)).to.equal(plain);
  });
});
