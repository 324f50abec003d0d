/**
 * One connection attempt with a clear verdict, for commands that must fail
 * fast and for the worker's start-up check: unreachable, wrong password,
 * TLS problem, a Redis too old for qsync, or a queue db the server does not
 * have. Then what the commands check about the servers they were given:
 * which server it is (run_id), whether it may evict keys, its clock.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { AuthError, ConfigError, TlsError, UnreachableError, type QsyncError } from './errors.js';
import { OWN_CONNECTION } from './config.js';

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
    ...OWN_CONNECTION,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: timeoutMs,
    retryStrategy: () => null,
    // Each sentinel of a group is asked once, then the attempt fails.
    sentinelRetryStrategy: () => null,
    sentinelCommandTimeout: timeoutMs,
    // After a refused connection ioredis still waits this long for the dead
    // socket to close, which would hold a failing command open for seconds.
    disconnectTimeout: 100,
  });
  let lastError: Error | undefined;
  let nameUnknown = false;
  client.on('error', (e: Error) => (lastError = e));
  // A sentinel that answers but knows no such group replies null.
  client.on('sentinelError', (e: Error) => (nameUnknown ||= /invalid reply: null|No such master/.test(e.message)));
  try {
    await client.connect();
    const info = await client.info('server');
    const version = /redis_version:(\d+)\.(\d+)/.exec(info);
    if (version && Number(version[1]) < 7) {
      throw new ConfigError(`qsync: ${what} ${where} runs Redis ${version[1]}.${version[2]}; qsync needs 7.0 or newer`);
    }
    // ioredis reports a failed SELECT of options.db as an 'error' event only
    // and goes on in db 0: ask again, and refuse.
    if (options.db) {
      await client.select(options.db).catch((err: Error) => {
        if (/DB index is out of range/i.test(err.message)) {
          throw new ConfigError(`qsync: ${what} ${where} has no db ${options.db} (its 'databases' setting is lower); check --queue-db`);
        }
        throw err;
      });
    }
    return client;
  } catch (err) {
    client.disconnect();
    if (err instanceof ConfigError) throw err;
    if (nameUnknown && /All sentinels are unreachable/.test((err as Error).message)) {
      throw new ConfigError(`qsync: no sentinel of ${what} ${where} knows a master named '${options.name}'`);
    }
    throw classifyConnectError((lastError ?? err) as Error, what, where);
  }
}

/**
 * The address of the server a connection is on now: for a Sentinel group,
 * the node that was its master when the connection was made. Undefined
 * while not connected.
 */
export function connectedNode(client: Redis): string | undefined {
  const stream = (client as unknown as { stream?: { remoteAddress?: string; remotePort?: number } }).stream;
  if (client.status !== 'ready' || !stream?.remoteAddress) return undefined;
  const host = stream.remoteAddress.replace(/^::ffff:/, '');
  return `${host.includes(':') ? `[${host}]` : host}:${stream.remotePort}`;
}

/** The fields of INFO sections. */
export async function infoFields(client: Redis, ...sections: string[]): Promise<Map<string, string>> {
  const text = await client.info(...sections);
  return new Map(
    text
      .split('\r\n')
      .filter((l) => l.includes(':'))
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]),
  );
}

/** The server's identity: its run_id, the same through any address it is reached by. */
export async function runId(client: Redis): Promise<string> {
  return (await infoFields(client, 'server')).get('run_id') ?? '';
}

/**
 * Refuses two connections that reach the same Redis server (`localhost` and
 * `127.0.0.1`, a DNS alias, a proxy): the replica would be the master itself.
 */
export async function assertDistinct(master: Redis, replica: Redis, masterWhere: string, replicaWhere: string): Promise<void> {
  const [m, r] = await Promise.all([runId(master), runId(replica)]);
  if (m !== '' && m === r) {
    throw new ConfigError(
      `qsync: --master ${masterWhere} and --replica ${replicaWhere} are the same Redis server (run_id ${m.slice(0, 12)}); the replica must be another server`,
    );
  }
}

/**
 * The server's maxmemory-policy, from INFO memory (which an application's
 * user can usually run, as ioredis's ready check does) or else CONFIG GET;
 * null when neither is allowed.
 */
export async function evictionPolicy(client: Redis): Promise<string | null> {
  try {
    return (await infoFields(client, 'memory')).get('maxmemory_policy') ?? null;
  } catch (err) {
    if (!/NOPERM/.test((err as Error).message)) throw err;
  }
  try {
    const [, policy] = (await client.config('GET', 'maxmemory-policy')) as string[];
    return policy ?? null;
  } catch (err) {
    if (/NOPERM/.test((err as Error).message)) return null;
    throw err;
  }
}

/** True for a policy under which Redis removes keys on its own when memory is full (allkeys-*, volatile-*). */
export function canEvict(policy: string | null): boolean {
  return policy !== null && policy !== 'noeviction';
}

/** Where a server's clock stands against this process's, as seen over the round trip of one TIME. */
interface ClockReading {
  /** server time minus local time at the middle of the round trip, ms */
  offsetMs: number;
  rttMs: number;
}

async function readClock(client: Redis): Promise<ClockReading> {
  const sent = performance.timeOrigin + performance.now();
  const [seconds, micros] = await client.time();
  const received = performance.timeOrigin + performance.now();
  return { offsetMs: Number(seconds) * 1000 + Number(micros) / 1000 - (sent + received) / 2, rttMs: received - sent };
}

/** The reading with the shortest round trip of a few: the least disturbed by the network. */
async function bestClock(client: Redis, samples: number): Promise<ClockReading> {
  let best: ClockReading | undefined;
  for (let i = 0; i < samples; i++) {
    const r = await readClock(client);
    if (!best || r.rttMs < best.rttMs) best = r;
  }
  return best!;
}

/** The replica's clock minus the master's, with the error bound half the round trips give. */
export interface ClockOffset {
  offsetMs: number;
  uncertaintyMs: number;
}

/**
 * Measures how far the replica's clock is from the master's with TIME on
 * both, each against this process's clock at the middle of its round trip
 * (so a slow link does not count as an offset; a one-way delay still can,
 * up to the uncertainty).
 */
export async function clockOffset(master: Redis, replica: Redis, samples = 3): Promise<ClockOffset> {
  const [m, r] = await Promise.all([bestClock(master, samples), bestClock(replica, samples)]);
  return { offsetMs: Math.round(r.offsetMs - m.offsetMs), uncertaintyMs: Math.ceil((m.rttMs + r.rttMs) / 2) };
}
