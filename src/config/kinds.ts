// The kinds of value a setting takes. Each is a zod schema made for one setting (its key and
// environment variable name it in the sentences), accepting what the configuration file or
// the environment may give and saying in one sentence what is wrong otherwise.
import net from 'node:net';
import os from 'node:os';
import * as z from 'zod';
import { isV3Onion } from './onion.js';

/** The setting a schema is made for. */
export interface Name {
  /** Dotted key in the file: "smtp.port". */
  key: string;
  /** Environment variable that overrides it, if any. */
  env?: string;
}

export interface Kind<T> {
  schema: (name: Name) => z.ZodType<T>;
  /** The value an environment variable's text stands for; undefined leaves the setting unset. */
  fromEnv: (text: string) => unknown;
  /** A path: relative ones are resolved against the file's folder, or the working directory for the environment. */
  isPath?: true;
}

/** Empty text in the environment leaves a text setting unset. */
const unlessEmpty = (text: string): string | undefined => text || undefined;
const asGiven = (text: string): string => text;

/** A DNS name: labels of letters, digits and hyphens, at most 200 characters here. */
export const DNS_NAME = /^(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** More SMTP workers than this buys nothing on any machine kzymy is meant for. */
export const MAX_WORKERS = 64;

const nonEmpty = (name: Name) => {
  const error = `The setting "${name.key}" must be a non-empty string.`;
  return z.string({ error }).refine((v) => v.trim() !== '', { error, abort: true });
};

/** Any non-empty string. */
export function text(): Kind<string> {
  return { schema: nonEmpty, fromEnv: unlessEmpty };
}

/** A non-empty string that is a path. */
export function filePath(): Kind<string> {
  return { schema: nonEmpty, fromEnv: unlessEmpty, isPath: true };
}

/** A non-empty string that passes `test`; `sentence` says why `given` does not. */
export function textThat(test: (v: string) => boolean, sentence: (given: string, name: Name) => string): Kind<string> {
  return {
    schema: (name) => nonEmpty(name).refine(test, { error: (iss) => sentence(String(iss.input), name) }),
    fromEnv: unlessEmpty,
  };
}

/** A DNS name, taken in lower case without a final dot. */
export function dnsName(sentence: (given: string, name: Name) => string): Kind<string> {
  return {
    schema: (name) =>
      nonEmpty(name)
        .transform((v) => v.toLowerCase().replace(/\.$/, ''))
        .pipe(z.string().regex(DNS_NAME, { error: (iss) => sentence(String(iss.input), name) })),
    fromEnv: unlessEmpty,
  };
}

/** One of `values`; `sentence` says that `given` is not. */
export function choice<const V extends readonly [string, ...string[]]>(values: V, sentence: (given: string, name: Name) => string): Kind<V[number]> {
  return {
    schema: (name) => nonEmpty(name).pipe(z.enum(values, { error: (iss) => sentence(String(iss.input), name) })),
    fromEnv: unlessEmpty,
  };
}

/** A number, or text that reads as one (as the environment gives it). */
const toNumber = (v: number | string): number => (typeof v === 'string' && v.trim() !== '' ? Number(v) : typeof v === 'number' ? v : NaN);
const isWhole = (n: number, min: number, max: number): boolean => Number.isInteger(n) && n >= min && n <= max;

/** A whole number from `min` to `max`, written as a number or (in the environment) as text. */
export function whole(min: number, max = Number.MAX_SAFE_INTEGER): Kind<number> {
  return {
    schema: (name) => {
      const error = (iss: { input?: unknown }) => `The setting "${name.key}" must be a whole number from ${min} to ${max}; it is ${JSON.stringify(iss.input)}.`;
      return z
        .union([z.number(), z.string()], { error })
        .refine((v) => isWhole(toNumber(v), min, max), { error })
        .transform(toNumber);
    },
    fromEnv: asGiven,
  };
}

const TRUE = [true, 1, '1', 'true'] as const;
const FALSE = [false, 0, '0', 'false'] as const;

/** true or false; 1 or 0 (also as text, as in the environment). */
export function flag(): Kind<boolean> {
  return {
    schema: (name) =>
      z
        .literal([...TRUE, ...FALSE], {
          error: (iss) => `The setting "${name.key}" must be true or false (1 or 0 in the environment); it is ${JSON.stringify(iss.input)}.`,
        })
        .transform((v) => (TRUE as readonly unknown[]).includes(v)),
    fromEnv: asGiven,
  };
}

/**
 * The number of SMTP workers. Empty: 1 (SMTP in the server process), what measured fastest so
 * far: on the benchmark machine two workers stored 0.7-0.8x of what one process stored
 * (docs/benchmarks.md). "auto": one worker per core the process may use.
 */
export function workers(): Kind<number> {
  return {
    schema: (name) => {
      const error = (iss: { input?: unknown }) =>
        `The setting "${name.key}" (${name.env}) must be "auto" or a whole number from 1 to ${MAX_WORKERS}; it is ${JSON.stringify(iss.input)}.`;
      return z
        .union([z.number(), z.string()], { error })
        .refine((v) => v === '' || v === 'auto' || isWhole(toNumber(v), 1, MAX_WORKERS), { error })
        .transform((v) => (v === '' ? 1 : v === 'auto' ? Math.min(MAX_WORKERS, Math.max(1, os.availableParallelism())) : toNumber(v)));
    },
    fromEnv: asGiven,
  };
}

/** A v3 onion address ("56 base32 characters.onion", any case), or null for none; empty in the environment is none. */
export function onionAddress(): Kind<string | null> {
  return {
    schema: (name) =>
      nonEmpty(name)
        .transform((v) => v.trim().toLowerCase())
        .refine((v) => isV3Onion(v), { error: `The setting "${name.key}" must be a v3 onion address (56 base32 characters and ".onion").` })
        .nullable(),
    fromEnv: (t) => t || null,
  };
}

/** A kzymy username, or null for none; empty in the environment is none. */
export function username(): Kind<string | null> {
  return {
    schema: (name) =>
      nonEmpty(name)
        .refine((v) => /^[a-z][a-z0-9]{1,62}$/.test(v), { error: `The setting "${name.key}" must name a kzymy username.` })
        .nullable(),
    fromEnv: (t) => t || null,
  };
}

/**
 * A postgres:// or postgresql:// URL as node-postgres reads it. An empty host (a unix
 * socket named by ?host=/run/postgresql) is valid there but not for WHATWG URL, which
 * checks the rest (port, escapes) once a host stands in for it.
 */
export function isPostgresUrl(url: string): boolean {
  if (!/^postgres(ql)?:\/\/\S*$/i.test(url)) return false;
  try {
    new URL(url.replace(/^(postgres(?:ql)?:\/\/(?:[^/@?#]*@)?)(?=[/?#]|$)/i, '$1localhost'));
    return true;
  } catch {
    return false;
  }
}

/** A PostgreSQL URL; none (null) unless given. The URL may hold a password: the sentence does not repeat it. */
export function postgresUrl(): Kind<string | null> {
  return {
    schema: (name) =>
      nonEmpty(name)
        .refine(isPostgresUrl, {
          error: `The setting "${name.key}" (${name.env}) must be a PostgreSQL URL such as postgresql://kzymy@db.example/kzymy or, over a unix socket, postgresql:///kzymy?host=/run/postgresql.`,
        })
        .transform((v): string | null => v),
    fromEnv: unlessEmpty,
  };
}

/** A list of strings that each pass `test`; in the environment, separated by commas or spaces. */
export function listOf(test: (v: string) => boolean, sentence: (name: Name) => string): Kind<string[]> {
  return {
    schema: (name) => {
      const error = sentence(name);
      return z.array(z.string({ error }).refine(test, { error }), { error });
    },
    fromEnv: (t) => t.split(/[\s,]+/).filter(Boolean),
  };
}

export const isIp = (v: string): boolean => net.isIP(v) !== 0;
