/**
 * Reading and checking configuration: Redis URLs, numbers, choices. Every
 * failure is a ConfigError with one line naming the bad value (and never a
 * password).
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import type { RedisOptions } from 'ioredis';
import { ConfigError } from './errors.js';

export interface TlsFiles {
  /** CA bundle to verify the server with (PEM) */
  ca?: string;
  /** client certificate (PEM), for servers that require one */
  cert?: string;
  /** client key (PEM) */
  key?: string;
  /** skip server certificate verification (not for production) */
  insecure?: boolean;
}

/** A URL with its password replaced, safe to log. */
export function redactUrl(url: string): string {
  if (SENTINEL_SCHEME.test(url)) return redactSentinelUrl(url);
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString().replace(/\/$/, '');
  } catch {
    return '(unparsable URL)';
  }
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`qsync: cannot read ${what} file '${path}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** A percent-encoded user name or password; a bad escape (`%zz`) is a bad URL, not a crash. */
function decodeUserInfo(part: string, url: string, what: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new ConfigError(`qsync: ${what} '${redactUrl(url)}' has a bad %-escape in its user name or password`);
  }
}

/**
 * ioredis options for a `redis://` or `rediss://` URL:
 * `redis[s]://[user[:password]@]host[:port][/db]`.
 */
export function redisOptionsFromUrl(url: string, what: string, tls: TlsFiles = {}): RedisOptions {
  if (SENTINEL_SCHEME.test(url)) return sentinelOptionsFromUrl(url, what, tls);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(
      `qsync: ${what} '${redactUrl(url) === '(unparsable URL)' ? url.replace(/:[^:@/]*@/, ':***@') : url}' is not a URL (expected redis://host:port or rediss://host:port)`,
    );
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new ConfigError(`qsync: ${what} '${redactUrl(url)}' must start with redis://, rediss:// or redis+sentinel://`);
  }
  if (!u.hostname) throw new ConfigError(`qsync: ${what} '${redactUrl(url)}' has no host`);
  const port = u.port === '' ? 6379 : Number(u.port);
  const dbText = u.pathname.replace(/^\//, '');
  const db = dbText === '' ? 0 : Number(dbText);
  if (!Number.isInteger(db) || db < 0) throw new ConfigError(`qsync: ${what} '${redactUrl(url)}' has a bad db number '${dbText}'`);
  const options: RedisOptions = {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port,
    db,
    username: u.username ? decodeUserInfo(u.username, url, what) : undefined,
    password: u.password ? decodeUserInfo(u.password, url, what) : undefined,
  };
  if (u.protocol === 'rediss:') {
    options.tls = tlsOptions(tls, options.host!);
  } else if (tls.ca || tls.cert || tls.key) {
    throw new ConfigError(`qsync: TLS files were given for ${what} '${redactUrl(url)}', which is not rediss://`);
  }
  return options;
}

/** ioredis TLS options from the files given; `host` (a name, not an IP) is sent as SNI. */
function tlsOptions(tls: TlsFiles, host?: string): ConnectionOptions {
  return {
    // SNI takes host names only; certificates for an IP are still checked against it.
    servername: host && !isIP(host) ? host : undefined,
    rejectUnauthorized: !tls.insecure,
    ca: tls.ca ? readPem(tls.ca, 'CA') : undefined,
    cert: tls.cert ? readPem(tls.cert, 'certificate') : undefined,
    key: tls.key ? readPem(tls.key, 'key') : undefined,
  };
}

/**
 * A Sentinel-managed group: `redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/name[/db][?query]`
 * (`rediss+sentinel://`: TLS to the group's servers). The user and password
 * are the data nodes' (as in a redis:// URL); the sentinels' own, and TLS to
 * the sentinels, are query parameters. Ports default to 26379.
 */
const SENTINEL_SCHEME = /^rediss?\+sentinel:\/\//i;
const SENTINEL_URL = /^(rediss?)\+sentinel:\/\/(?:([^@/?#]*)@)?([^/?#]*)(?:\/([^/?#]*))?(?:\/([^/?#]*))?(?:\?([^#]*))?$/i;
/** Query parameters of a Sentinel URL and what they set. */
const SENTINEL_PARAMS = ['sentinelUsername', 'sentinelPassword', 'sentinelTls'] as const;
const DEFAULT_SENTINEL_PORT = 26379;

function redactSentinelUrl(url: string): string {
  // Any parameter that looks like a password, a misspelt one too.
  return url.replace(/^([^/]*\/\/[^:@/]*:)[^@/]*@/, '$1***@').replace(/([?&][^=&#]*pass[^=&#]*=)[^&#]*/gi, '$1***');
}

/** `host`, `host:port`, `[v6]` or `[v6]:port`, one sentinel of a list. */
function sentinelAddress(text: string, url: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/.exec(text);
  const port = m?.[3] === undefined ? DEFAULT_SENTINEL_PORT : Number(m[3]);
  if (!m || port < 1 || port > 65_535) {
    throw new ConfigError(`qsync: ${what} '${redactSentinelUrl(url)}' has a bad sentinel address '${text}' (expected host:port)`);
  }
  return { host: m[1] ?? m[2], port };
}

/** ioredis options for a Sentinel URL: `{ sentinels, name, username, password, sentinelUsername, sentinelPassword, tls... }`. */
function sentinelOptionsFromUrl(url: string, what: string, tls: TlsFiles): RedisOptions {
  const shown = redactSentinelUrl(url);
  const m = SENTINEL_URL.exec(url);
  if (!m) throw new ConfigError(`qsync: ${what} '${shown}' is not a Sentinel URL (expected redis+sentinel://host:26379,host:26380/mymaster)`);
  const [, scheme, userInfo, hosts, name, dbText, query] = m;
  if (!hosts) throw new ConfigError(`qsync: ${what} '${shown}' names no sentinel`);
  if (!name) throw new ConfigError(`qsync: ${what} '${shown}' names no master group (redis+sentinel://host:26379/mymaster)`);
  const db = dbText === undefined || dbText === '' ? 0 : Number(dbText);
  if (!Number.isInteger(db) || db < 0) throw new ConfigError(`qsync: ${what} '${shown}' has a bad db number '${dbText}'`);
  const params = new URLSearchParams(query ?? '');
  for (const key of params.keys()) {
    if (!(SENTINEL_PARAMS as readonly string[]).includes(key)) {
      throw new ConfigError(`qsync: ${what} '${shown}' has an unknown parameter '${key}' (known: ${SENTINEL_PARAMS.join(', ')})`);
    }
  }
  const sentinelTls = choiceOption(params.get('sentinelTls') ?? undefined, `sentinelTls of ${what}`, ['true', 'false'], 'false') === 'true';
  const [user, password] =
    userInfo === undefined ? [] : [userInfo.split(':')[0], userInfo.includes(':') ? userInfo.slice(userInfo.indexOf(':') + 1) : undefined];
  const sentinels = hosts.split(',').map((h) => sentinelAddress(h, url, what));
  const options: RedisOptions = {
    sentinels,
    name: decodeUserInfo(name, url, what),
    db,
    username: user ? decodeUserInfo(user, url, what) : undefined,
    password: password ? decodeUserInfo(password, url, what) : undefined,
    sentinelUsername: params.get('sentinelUsername') ?? undefined,
    sentinelPassword: params.get('sentinelPassword') ?? undefined,
  };
  const dataTls = scheme.toLowerCase() === 'rediss';
  if (dataTls) {
    // The group's servers are found by address: no host name to send as SNI.
    options.tls = tlsOptions(tls);
    options.enableTLSForSentinelMode = true;
  }
  if (sentinelTls) options.sentinelTLS = tlsOptions(tls, sentinels[0].host);
  if (!dataTls && !sentinelTls && (tls.ca || tls.cert || tls.key)) {
    throw new ConfigError(`qsync: TLS files were given for ${what} '${shown}', which uses no TLS (rediss+sentinel://, or ?sentinelTls=true)`);
  }
  return options;
}

/** Whether options reach a Sentinel-managed group. */
export function isSentinel(options: RedisOptions): boolean {
  return Array.isArray(options.sentinels) && options.sentinels.length > 0;
}

/** Where options lead, for messages: `host:port`, or the group and its sentinels. */
export function describeTarget(options: RedisOptions): string {
  if (isSentinel(options)) return `group '${options.name}' of sentinels ${options.sentinels!.map((s) => `${s.host}:${s.port}`).join(',')}`;
  return `${options.host ?? 'localhost'}:${options.port ?? 6379}`;
}

/** An integer option within bounds. */
export function intOption(value: string | number | undefined, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined || value === '') return fallback;
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`qsync: ${name} must be a whole number from ${min} to ${max}, got '${value}'`);
  }
  return n;
}

/** One of a set of words. */
export function choiceOption<T extends string>(value: string | undefined, name: string, choices: readonly T[], fallback: T): T {
  if (value === undefined || value === '') return fallback;
  if (!(choices as readonly string[]).includes(value)) {
    throw new ConfigError(`qsync: ${name} must be one of ${choices.join(', ')}, got '${value}'`);
  }
  return value as T;
}

/** What a queue or prefix name may hold: it becomes part of key names, so no ':', braces, spaces or control characters. */
const NAME = /^[\w.-]{1,100}$/;

/**
 * A queue or prefix name, the same check for the producer's options and the
 * CLI's flags: a name one accepts and the other refuses would make a queue
 * no consumer can drain.
 */
export function checkName(value: unknown, name: string): string {
  if (typeof value !== 'string' || !NAME.test(value)) {
    throw new ConfigError(
      `qsync: ${name} must be 1 to 100 letters, digits, '.', '_' or '-', got ${typeof value === 'string' ? `'${value}'` : String(value)}`,
    );
  }
  return value;
}

/** A queue or prefix name from a flag, or the default. */
export function nameOption(value: string | undefined, name: string, fallback: string): string {
  return value === undefined ? fallback : checkName(value, name);
}

/** Highest queue db the options take; whether the server has it is checked when connecting. */
export const MAX_QUEUE_DB = 10_000;

/** The db that holds a queue: a whole number from 0; the default is db 0. */
export function queueDbOption(value: string | number | undefined, name: string): number {
  return intOption(value, name, 0, 0, MAX_QUEUE_DB);
}

/**
 * Options every connection qsync opens for itself takes: RESP2. ioredis 6
 * speaks RESP3 by default and flattens pair replies (ZRANGE ... WITHSCORES)
 * back to the RESP2 shape only for the command names it knows; qsync reads
 * replies in the RESP2 shape throughout. ioredis 5 speaks RESP2 and ignores
 * the option. Connections an application hands to the producer are its own.
 */
export const OWN_CONNECTION = { protocol: 2 } as const;
