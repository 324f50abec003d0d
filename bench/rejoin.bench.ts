/**
 * Bringing an old master back after a failover: `qsync rejoin` (its tail set
 * aside, only the keys the tail touched copied from the new master) against
 * Redis's own full resynchronisation (REPLICAOF the new master) of the same
 * data, in time and in bytes the new master sent.
 */
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { runPromote } from '../consumer/failover/promote.js';
import { runRejoin } from '../consumer/failover/rejoin.js';
import { SyncWorker } from '../consumer/drain/worker.js';
import { createProducer } from '../producer/index.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE, QueueKeys } from '../shared/keys.js';
import { createLogger } from '../shared/logger.js';
import { startRedis, type RedisServer } from '../test/support/redis-server.js';
import { waitForDrain } from '../test/support/fixtures.js';
import { fullSync } from './support/full-sync.js';
import type { Scenario } from './support/result.js';
import { measured, ratio } from './support/stats.js';
import { connected, runConcurrent, value, within } from './support/workload.js';

/** 1M keys, as in the outage; 100 B values (about 150 MB on each server) */
const KEYS = 1_000_000;
const VALUE_BYTES = 100;
/** writes the old master took that never crossed: one key each */
const TAIL = 3000;
const TIMEOUT_MS = 300_000;
const keys = new QueueKeys(DEFAULT_PREFIX, DEFAULT_QUEUE);

/** Bytes a server sent to clients and replicas so far. */
async function bytesSent(client: Redis): Promise<number> {
  const info = await client.info('stats');
  const field = (name: string) => Number(new RegExp(`${name}:(\\d+)`).exec(info)?.[1] ?? 0);
  return field('total_net_output_bytes') + field('total_net_repl_output_bytes');
}

/**
 * A (master) and B (its replica through qsync) with the same KEYS keys, then
 * TAIL writes on A that B never gets, and B promoted: the state an outage of A
 * leaves behind.
 */
async function outage(a: RedisServer, b: RedisServer, ma: Redis, mb: Redis, round: number): Promise<void> {
  await Promise.all([ma.flushall(), mb.flushall()]);
  await within(ma.call('DEBUG', 'POPULATE', KEYS, 'key', VALUE_BYTES), TIMEOUT_MS, 'DEBUG POPULATE');
  await fullSync(a, mb, KEYS);
  const producer = createProducer(await connected(a.client()));
  await producer.set('key:0', value(round, VALUE_BYTES));
  const worker = new SyncWorker({
    master: { host: a.host, port: a.port },
    replica: { host: b.host, port: b.port },
    logger: createLogger('silent'),
  }).start();
  await waitForDrain(ma, mb, { timeoutMs: TIMEOUT_MS });
  await worker.close();
  await runConcurrent(TAIL, 32, (i) => producer.set(`key:${(i * 331 + round) % KEYS}`, value(round * TAIL + i, VALUE_BYTES)));
  producer.disconnect();
  await runPromote({ replica: mb, replicaWhere: b.url, master: null, masterWhere: a.url, keys });
}

export const scenario: Scenario = {
  name: 'rejoin',
  title: 'An old master back after a failover: qsync rejoin against a native full resync',
  method:
    `A master A filled with ${KEYS / 1e6}M string keys of ${VALUE_BYTES} B (DEBUG POPULATE), copied to B (REPLICAOF, then ` +
    'detached) and followed by B through qsync; then the outage: the consumer stops, A takes ' +
    `${TAIL} more SETs through the producer (its tail, one key each), and B is promoted (\`qsync promote\`). ` +
    '`qsync rejoin` (tail parked on B, only its keys copied from B) is timed from the call to its return, against REPLICAOF ' +
    'of A to B right after (repl-diskless-sync-delay 0; the master forks for the RDB), timed until the link is up and the ' +
    'sync finished; bytes are what B sent meanwhile (INFO total_net_output_bytes + total_net_repl_output_bytes). Both over ' +
    'loopback on the same machine. The dataset is built again each round.',
  rounds: 3,
  async run(rounds) {
    const [a, b] = await Promise.all([startRedis(), startRedis()]);
    try {
      const [ma, mb] = [await connected(a.client()), await connected(b.client())];
      await Promise.all([ma.config('SET', 'repl-diskless-sync-delay', '0'), mb.config('SET', 'repl-diskless-sync-delay', '0')]);
      const times: number[] = [];
      const fullTimes: number[] = [];
      const sent: number[] = [];
      const fullSent: number[] = [];
      const copied: number[] = [];
      for (let round = 0; round < rounds; round++) {
        await outage(a, b, ma, mb, round);
        let before = await bytesSent(mb);
        let t0 = performance.now();
        const r = await within(
          runRejoin({ master: mb, replica: ma, masterWhere: b.url, replicaWhere: a.url, keys, queueDb: 0, tail: 'park' }),
          TIMEOUT_MS,
          'rejoin',
        );
        times.push((performance.now() - t0) / 1000);
        sent.push((await bytesSent(mb)) - before);
        if (r.tailEntries !== TAIL) throw new Error(`rejoin found ${r.tailEntries} tail entries, expected ${TAIL}`);
        copied.push(r.repairedKeys);

        before = await bytesSent(mb);
        t0 = performance.now();
        await within(fullSync(b, ma, await mb.dbsize()), TIMEOUT_MS, 'full sync');
        fullTimes.push((performance.now() - t0) / 1000);
        fullSent.push((await bytesSent(mb)) - before);
      }
      return {
        rows: [
          measured(`qsync rejoin: ${TAIL} tail entries, ${KEYS / 1e6}M keys`, 's', times),
          measured(`native full resync (REPLICAOF): ${KEYS / 1e6}M keys`, 's', fullTimes),
          ratio('qsync rejoin ÷ native full resync (time)', times, fullTimes),
          measured(
            'qsync rejoin: bytes the new master sent',
            'MB',
            sent.map((n) => n / 1e6),
          ),
          measured(
            'native full resync: bytes the new master sent',
            'MB',
            fullSent.map((n) => n / 1e6),
          ),
          ratio('qsync rejoin ÷ native full resync (bytes sent)', sent, fullSent),
          measured('qsync rejoin: keys copied', 'keys', copied),
        ],
        headline: 'qsync rejoin ÷ native full resync (time)',
        details: { keys: KEYS, valueBytes: VALUE_BYTES, tailEntries: TAIL },
      };
    } finally {
      await Promise.all([a.destroy(), b.destroy()]);
    }
  },
};
