/**
 * One connection attempt with a clear verdict, for commands that must fail
 * fast and for the worker's start-up check: unreachable, wrong password,
 * TLS problem, or a Redis too old for qsync.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { AuthError, ConfigError, TlsError, UnreachableError, type QsyncError } from './errors.js';

const TLS_HINTS = /(ssl|tls|certificate|cert_|self.signed|wrong version number|EPROTO)/i;
const AUTH_HINTS = /(WRONGPASS|NOAUTH|NOPERM|invalid password|invalid username)/i;

/** Maps a connection error to the error a user should see. */
export function classifyConnectError(err: Error & { code?: string }, what: string, where: string): QsyncError {
  const text = `${err.code ?? ''} ${err.message}`;
  if (AUTH_HINTS.test(text)) return new AuthError(`qsync: ${what} ${where} refused the credentials: ${err.message.split('\n')[0]}`);
  if (TLS_HINTS.test(text)) return new TlsError(`qsync: TLS with ${what} ${where} failed: ${err.code ?? err.message.split('\n')[0]}`);
  return new UnreachableError(`qsync: cannot reach ${what} ${where}: ${err.code ?? err.message.split('\n')[0]}`);
}

/** Opens a connection once (no retries) and checks the server is Redis 7 or newer. */
export async function probe(options: RedisOptions, what: string, where: string, timeoutMs = 5000): Promise<Redis> {
  const client = new Redis({
    ...options,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: timeoutMs,
    retryStrategy: () => null,
    // After a refused connection ioredis still waits this long for the dead
    // socket to close, which would hold a failing command open for seconds.
    disconnectTimeout: 100,
  });
  let lastError: Error | undefined;
  client.on('error', (e: Error) => (lastError = e));
  try {
    await client.connect();
    const info = await client.info('server');
    const version = /redis_version:(\d+)\.(\d+)/.exec(info);
    if (version && Number(version[1]) < 7) {
      throw new ConfigError(`qsync: ${what} ${where} runs Redis ${version[1]}.${version[2]}; qsync needs 7.0 or newer`);
    }
    return client;
  } catch (err) {
    client.disconnect();
    if (err instanceof ConfigError) throw err;
    throw classifyConnectError((lastError ?? err) as Error, what, where);
  }
}
