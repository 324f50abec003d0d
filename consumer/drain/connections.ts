/**
 * The worker's Redis connections and how their failures are told apart:
 * a link problem (retry forever) from anything else (report).
 */
import { Redis, type RedisOptions } from 'ioredis';
import { isSentinel, OWN_CONNECTION } from '../../shared/config.js';
import { backoffDelay, type BackoffOptions } from './backoff.js';
import { defineScripts } from '../../shared/scripts.js';

export type Side = 'master' | 'replica';

const LINK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ECONNABORTED',
]);
const LINK_MESSAGES = [
  /Connection is closed/i,
  /Stream isn't writeable/i,
  /Command timed out/i,
  /Reached the max retries/i,
  /LOADING/,
  /connect ETIMEDOUT/i,
  /socket hang up/i,
];

/** An error that came from a side, so logs and status can say which link broke. */
export class SideError extends Error {
  constructor(
    readonly side: Side,
    readonly cause: Error,
  ) {
    super(`${side}: ${cause.message}`);
  }
}

export function isLinkError(err: unknown): boolean {
  const e = (err instanceof SideError ? err.cause : err) as NodeJS.ErrnoException | undefined;
  if (!e) return false;
  if (e.code && LINK_CODES.has(e.code)) return true;
  return LINK_MESSAGES.some((re) => re.test(e.message ?? ''));
}

/** A link error in words for the status and logs, instead of ioredis's internal text. */
export function describeError(err: Error): string {
  const e = (err instanceof SideError ? err.cause : err) as NodeJS.ErrnoException;
  if (/Stream isn't writeable|Connection is closed/i.test(e.message)) return 'connection lost; reconnecting';
  if (/Socket timeout/i.test(e.message)) return 'no answer within the timeout; connection reset';
  if (e.code === 'ECONNREFUSED') return 'connection refused';
  return e.message.replace(/\d+ms/, 'N ms');
}

/** Tags a failing promise with the side it talked to. */
export function onSide<T>(side: Side, p: Promise<T>): Promise<T> {
  return p.catch((err: Error) => {
    throw err instanceof SideError ? err : new SideError(side, err);
  });
}

export interface ConnectionOptions {
  backoff?: BackoffOptions;
  /** a command without an answer for this long fails, and the link is reset */
  commandTimeoutMs: number;
}

/**
 * A connection for the worker: reconnects forever with backoff and jitter,
 * fails commands at once while the link is down (the worker decides when to
 * retry), and never replays commands behind the worker's back.
 */
export function connect(options: RedisOptions, { backoff, commandTimeoutMs }: ConnectionOptions, name: string, blockMs = 0): Redis {
  const client = new Redis({
    ...options,
    ...OWN_CONNECTION,
    connectionName: name,
    lazyConnect: false,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    connectTimeout: commandTimeoutMs,
    // A command with no byte of answer for this long means a dead link (a
    // blackhole keeps the socket open): destroy it and reconnect.
    socketTimeout: commandTimeoutMs + blockMs,
    keepAlive: 5000,
    retryStrategy: (times) => backoffDelay(times, backoff),
    reconnectOnError: () => false,
    ...(isSentinel(options) ? followMaster(backoff, commandTimeoutMs) : {}),
  });
  // Errors surface through the commands that failed; this keeps ioredis from
  // printing unhandled 'error' events.
  client.on('error', () => {});
  // ioredis 5.11 keeps the socket timer of a connection that closed with a
  // command in flight, and when it fires it destroys the *next* connection
  // (redis/ioredis#2147). Drop it when the connection closes.
  client.on('close', () => {
    const stale = client as unknown as { socketTimeoutTimer?: NodeJS.Timeout };
    clearTimeout(stale.socketTimeoutTimer);
    stale.socketTimeoutTimer = undefined;
  });
  defineScripts(client);
  return client;
}

/**
 * For a Sentinel group: the connection asks the sentinels for the group's
 * master at each reconnection (Sentinel closes the old master's client
 * connections when it turns it into a replica), and reconnects when the
 * server it is on answers as a replica (READONLY).
 */
function followMaster(backoff: BackoffOptions | undefined, commandTimeoutMs: number): RedisOptions {
  return {
    sentinelRetryStrategy: (times) => backoffDelay(times, backoff),
    sentinelCommandTimeout: commandTimeoutMs,
    reconnectOnError: (err) => /^READONLY\b/.test(err.message),
  };
}

/** Closes connections politely (QUIT), or at once when that fails. */
export async function closeConnections(clients: { quit(): Promise<unknown>; disconnect(): void }[]): Promise<void> {
  for (const c of clients) {
    try {
      await c.quit();
    } catch {
      c.disconnect();
    }
  }
}

/** Waits until a connection is ready, for at most `timeoutMs`, or until `signal` aborts. */
export function whenReady(client: Redis, timeoutMs: number, signal: AbortSignal): Promise<void> {
  if (client.status === 'ready' || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      client.off('ready', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    client.once('ready', done);
    signal.addEventListener('abort', done, { once: true });
  });
}
