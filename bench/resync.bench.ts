/**
 * Bringing a replica back: how fast `qsync resync` bootstraps one, against
 * Redis's own full synchronisation (REPLICAOF) of the same dataset, and how
 * much cheaper `qsync repair` is than a resync after a queue overflowed.
 */
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { fullSync } from './support/full-sync.js';
import { runResync, type ResyncMethod } from '../consumer/copy/resync.js';
import { runRepair } from '../consumer/copy/repair.js';
import { setLimits } from '../consumer/queue/limits.js';
import { createProducer } from '../producer/index.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE, QueueKeys } from '../shared/keys.js';
import { createLogger } from '../shared/logger.js';
import { startRedis, type RedisServer } from '../test/support/redis-server.js';
import type { Scenario } from './support/result.js';
import { backToBack, measured, ratio, type Row } from './support/stats.js';
import { connected, runConcurrent, value, within } from './support/workload.js';

const KEYS = 2_000_000;
/** 2M keys of 100 B take about 350 MB, the size of the reference measurement in the project's notes */
const VALUE_BYTES = 100;
const SCAN_COUNT = 1000;
/** keys written unqueued before a repair: 0.5% of the dataset */
const DIRTY = 10_000;
const TIMEOUT_MS = 600_000;
const keys = new QueueKeys(DEFAULT_PREFIX, DEFAULT_QUEUE);

/** Fails unless the replica holds the dataset's keys besides its watermark, and no more. */
async function expectKeys(r: Redis, what: string): Promise<void> {
  const size = (await r.dbsize()) - (await r.exists(keys.applied));
  if (size !== KEYS) throw new Error(`${what}: the replica holds ${size} keys, expected ${KEYS}`);
}

/** qsync's own keys leave the master between runs, so that every run starts from the same dataset. */
async function dropQueueState(m: Redis): Promise<void> {
  await m.del(keys.log, keys.meta, keys.lease, keys.status, keys.dirty, keys.repairing, keys.replicas);
}

function options(master: RedisServer, replica: RedisServer) {
  return {
    master: { host: master.host, port: master.port },
    replica: { host: replica.host, port: replica.port },
    scanCount: SCAN_COUNT,
    logger: createLogger('silent'),
  };
}

/** Seconds qsync takes to copy the master to an empty replica (no writes meanwhile), by the method given. */
async function resync(master: RedisServer, replica: RedisServer, m: Redis, r: Redis, method: ResyncMethod): Promise<number> {
  await r.flushall();
  const t0 = performance.now();
  const result = await runResync({ ...options(master, replica), method });
  const seconds = (performance.now() - t0) / 1000;
  if (method === 'auto' && result.method !== 'replication') throw new Error(`resync --method auto copied by ${result.method}, expected replication`);
  await expectKeys(r, `resync --method ${method}`);
  await dropQueueState(m);
  return seconds;
}

/**
 * With the replica just resynced: one write is queued, then DIRTY writes go
 * unqueued past a 1-entry cap under mark-dirty, the cap is lifted, and the
 * repair is timed.
 */
async function repair(master: RedisServer, replica: RedisServer, m: Redis, r: Redis, round: number): Promise<number> {
  const producer = createProducer(await connected(master.client()));
  try {
    await producer.set(`key:${KEYS - 1}`, value(round, VALUE_BYTES));
    await setLimits(m, keys, { maxEntries: 1, policy: 'mark-dirty' });
    await runConcurrent(DIRTY, 64, (i) => producer.set(`key:${(i * 197 + round) % KEYS}`, value(round * DIRTY + i, VALUE_BYTES)));
    await setLimits(m, keys, { clear: true });
  } finally {
    producer.disconnect();
  }
  const t0 = performance.now();
  const result = await runRepair(options(master, replica));
  const seconds = (performance.now() - t0) / 1000;
  if (result.copied !== DIRTY) throw new Error(`repair copied ${result.copied} keys, expected the ${DIRTY} dirty ones`);
  await expectKeys(r, 'repair');
  const sample = `key:${(7 * 197 + round) % KEYS}`;
  if ((await m.get(sample)) !== (await r.get(sample))) throw new Error(`repair: ${sample} differs between master and replica`);
  return seconds;
}

/** Seconds of a native full sync of the master's dataset; the server is emptied again after. */
async function fullSyncThenEmpty(master: RedisServer, server: Redis): Promise<number> {
  const seconds = await fullSync(master, server, KEYS);
  await server.flushall();
  return seconds;
}

export const scenario: Scenario = {
  name: 'resync',
  title: 'Bootstrapping and repairing a replica: qsync resync and repair against a native full sync',
  method:
    `A master filled with ${KEYS / 1e6}M string keys of ${VALUE_BYTES} B (DEBUG POPULATE), no writes meanwhile. ` +
    '`qsync resync` by its default method (auto: the replica server REPLICAOFs the master, then qsync takes over at the ' +
    'sequence the copy carries), timed from the call to the handover, against REPLICAOF on another server ' +
    '(repl-diskless-sync-delay 0), timed until the link is up and the sync finished (the master forks for the RDB). Both over ' +
    'loopback on the same machine, alternating which goes first each round. Then `qsync resync --method copy` (no fork: ' +
    `SCAN COUNT ${SCAN_COUNT}, DUMP/RESTORE in atomic batches) to the same replica, and on it \`qsync repair\` after ` +
    `${DIRTY / 1000}k SETs went unqueued (a 1-entry cap under mark-dirty, lifted before the repair), timed from the call to ` +
    'the handover, against the default resync of the same round.',
  rounds: 3,
  async run(rounds) {
    const [master, replica, native] = await Promise.all([startRedis(), startRedis(), startRedis()]);
    try {
      const m = await connected(master.client());
      const r = await connected(replica.client());
      await within(m.call('DEBUG', 'POPULATE', KEYS, 'key', VALUE_BYTES), TIMEOUT_MS, 'DEBUG POPULATE');
      await m.config('SET', 'repl-diskless-sync-delay', '0');
      const datasetMB = Math.round(Number(/used_memory_dataset:(\d+)/.exec(await m.info('memory'))![1]) / 1e6);
      const n = await connected(native.client());
      const resyncs: number[] = [];
      const copies: number[] = [];
      const fulls: number[] = [];
      const repairs: number[] = [];
      for (let round = 0; round < rounds; round++) {
        const [full, copy] = await backToBack(
          round % 2 === 0,
          () => within(fullSyncThenEmpty(master, n), TIMEOUT_MS, 'full sync'),
          () => within(resync(master, replica, m, r, 'auto'), TIMEOUT_MS, 'resync'),
        );
        fulls.push(full);
        resyncs.push(copy);
        copies.push(await within(resync(master, replica, m, r, 'copy'), TIMEOUT_MS, 'resync --method copy'));
        repairs.push(await within(repair(master, replica, m, r, round), TIMEOUT_MS, 'repair'));
        await dropQueueState(m);
      }
      const rows: Row[] = [
        measured(
          'qsync resync: keys per second',
          'keys/s',
          resyncs.map((s) => KEYS / s),
        ),
        measured(`qsync resync: ${KEYS / 1e6}M keys`, 's', resyncs),
        measured(`native full sync (REPLICAOF): ${KEYS / 1e6}M keys`, 's', fulls),
        ratio('qsync resync ÷ native full sync (time)', resyncs, fulls, { op: '<=', value: 1.5 }),
        measured(
          'qsync resync --method copy: keys per second',
          'keys/s',
          copies.map((s) => KEYS / s),
        ),
        measured(`qsync resync --method copy: ${KEYS / 1e6}M keys`, 's', copies),
        ratio('qsync resync --method copy ÷ native full sync (time)', copies, fulls),
        measured(`qsync repair: ${DIRTY / 1000}k dirty keys of ${KEYS / 1e6}M`, 's', repairs),
        ratio('qsync repair ÷ qsync resync (time)', repairs, resyncs),
      ];
      return {
        rows,
        headline: 'qsync resync ÷ native full sync (time)',
        details: { keys: KEYS, valueBytes: VALUE_BYTES, datasetMB, scanCount: SCAN_COUNT, dirtyKeys: DIRTY },
      };
    } finally {
      await Promise.all([master.destroy(), replica.destroy(), native.destroy()]);
    }
  },
};
