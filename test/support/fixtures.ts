/**
 * Fixtures most tests share: a master and a replica, an in-process worker,
 * waiting for the queue to drain, and a key-by-key comparison of datasets.
 */
import type { ExecutionContext } from 'ava';
import type { Redis } from 'ioredis';
import { createProducer } from '../../producer/index.js';
import { startRedis, type RedisServer, type RedisServerOptions } from './redis-server.js';
import { SyncWorker, type WorkerOptions } from '../../consumer/drain/worker.js';
import { createLogger } from '../../shared/logger.js';
import { QueueKeys } from '../../shared/keys.js';
import { streamImage } from '../../consumer/verify/streams.js';

export interface Pair {
  master: RedisServer;
  replica: RedisServer;
  destroy(): Promise<void>;
}

export async function startPair(master: RedisServerOptions = {}, replica: RedisServerOptions = {}): Promise<Pair> {
  const [m, r] = await Promise.all([startRedis(master), startRedis(replica)]);
  return {
    master: m,
    replica: r,
    destroy: async () => {
      await Promise.all([m.destroy(), r.destroy()]);
    },
  };
}

function optionsOf(server: RedisServer): { host: string; port: number } {
  return { host: server.host, port: server.port };
}

/** A worker between the pair's servers, started, with quiet logs and short timers. */
export function startWorker(pair: Pair, options: Partial<WorkerOptions> = {}): SyncWorker {
  return new SyncWorker({
    master: optionsOf(pair.master),
    replica: optionsOf(pair.replica),
    logger: createLogger('silent'),
    leaseMs: 1000,
    timeoutMs: 2000,
    recheckMs: 200,
    backoff: { minMs: 20, maxMs: 200 },
    ...options,
  }).start();
}

/** A pair with a producer on its master, for tests of what the producer logs. */
export interface ProducerPair {
  pair: Pair;
  /** the producer, on a connection of its own */
  producer: Redis;
  /** a plain client on the master */
  master: Redis;
  /** starts a worker, waits until the replica caught up and asserts both datasets are equal */
  replicate(): Promise<void>;
}

/** Starts a pair and a producer on its master, all stopped when the test ends. */
export async function producerPair(t: ExecutionContext): Promise<ProducerPair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const master = pair.master.client();
  return {
    pair,
    master,
    producer: createProducer(pair.master.client()),
    async replicate() {
      const worker = startWorker(pair);
      t.teardown(() => worker.close());
      await waitForDrain(master, pair.replica.client());
      t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
    },
  };
}

/** Waits until the replica's watermark reaches the master's sequence. */
export async function waitForDrain(master: Redis, replica: Redis, { queue = 'default', prefix = 'qsync', timeoutMs = 15_000 } = {}): Promise<number> {
  const keys = new QueueKeys(prefix, queue);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // Drained: the watermark is at the master's last entry and no key waits for its copy from the master
    // (a key the replica lost first is held back, and copied after the batch that held it).
    const [seq, [applied, heldPending]] = await Promise.all([master.hget(keys.meta, 'seq'), replica.hmget(keys.applied, 'seq', 'heldPending')]);
    if (seq === applied && Number(heldPending ?? 0) === 0) return Number(seq ?? 0);
    if (Date.now() > deadline) throw new Error(`queue not drained after ${timeoutMs} ms: master seq ${seq}, replica at ${applied}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A value in a form that does not depend on the server: DUMP of a set or hash
 * in hash-table encoding lists members in an order that depends on the
 * server's random hash seed, so those compare sorted. A stream compares as
 * verify compares it (consumer/verify/streams.ts): DUMP holds its layout and
 * its consumers' seen times, which differ by nature.
 */
async function canonicalValue(client: Redis, key: Buffer): Promise<string> {
  const type = await client.type(key);
  const hex = (b: Buffer) => b.toString('hex');
  if (type === 'set') return `set ${((await client.smembersBuffer(key)) as Buffer[]).map(hex).sort().join(',')}`;
  if (type === 'hash') {
    const flat = (await client.callBuffer('HGETALL', key)) as Buffer[];
    const pairs: string[] = [];
    for (let i = 0; i < flat.length; i += 2) pairs.push(`${hex(flat[i])}=${hex(flat[i + 1])}`);
    return `hash ${pairs.sort().join(',')}`;
  }
  if (type === 'zset') return `zset ${((await client.callBuffer('ZRANGE', key, 0, -1, 'WITHSCORES')) as Buffer[]).map(hex).join(',')}`;
  if (type === 'list') return `list ${((await client.lrangeBuffer(key, 0, -1)) as Buffer[]).map(hex).join(',')}`;
  if (type === 'stream') return `stream ${await streamImage(client, key)}`;
  return `${type} ${hex((await client.dumpBuffer(key)) ?? Buffer.alloc(0))}`;
}

async function keysOf(client: Redis): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await client.scanBuffer(cursor, 'COUNT', 1000);
    cursor = next.toString();
    for (const k of keys) out.push(k.toString('hex'));
  } while (cursor !== '0');
  return out;
}

/**
 * Every difference between two servers' data, key by key in dbs 0..15:
 * a key on one side only, a different type or value (DUMP, or the sorted
 * members where DUMP's order depends on the server), a different absolute
 * expiry. qsync's own keys (`qsync:` and `qsync-jobs:` prefixes) are left
 * out. An empty array means equal.
 */
export async function datasetDiff(master: RedisServer, replica: RedisServer, { dbs = 16, ttlToleranceMs = 0 } = {}): Promise<string[]> {
  const diffs: string[] = [];
  for (let db = 0; db < dbs; db++) {
    const m = master.client(db);
    const r = replica.client(db);
    const own = (hex: string) => /^qsync(-jobs)?:/.test(Buffer.from(hex, 'hex').toString('latin1'));
    const mk = new Set((await keysOf(m)).filter((k) => !own(k)));
    const rk = new Set((await keysOf(r)).filter((k) => !own(k)));
    for (const hex of new Set([...mk, ...rk])) {
      const key = Buffer.from(hex, 'hex');
      const name = `db${db} ${/^[\x20-\x7e]*$/.test(key.toString('latin1')) ? key.toString('latin1') : `0x${hex}`}`;
      if (!mk.has(hex)) {
        diffs.push(`${name}: only on the replica`);
        continue;
      }
      if (!rk.has(hex)) {
        diffs.push(`${name}: only on the master`);
        continue;
      }
      const [md, rd, mt, rt] = await Promise.all([m.dumpBuffer(key), r.dumpBuffer(key), m.pexpiretime(key), r.pexpiretime(key)]);
      const same = md && rd && (md.equals(rd) || (await canonicalValue(m, key)) === (await canonicalValue(r, key)));
      if (!same) diffs.push(`${name}: value differs`);
      if (Math.abs(mt - rt) > ttlToleranceMs || mt < 0 !== rt < 0) diffs.push(`${name}: expiry differs (master ${mt}, replica ${rt})`);
    }
    m.disconnect();
    r.disconnect();
  }
  return diffs;
}
