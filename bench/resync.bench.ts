/**
 * How fast `qsync resync` bootstraps a replica, against Redis's own full
 * synchronisation (REPLICAOF) of the same dataset.
 */
import { performance } from 'node:perf_hooks';
import { fullSync } from './support/full-sync.js';
import type { Redis } from 'ioredis';
import { runResync } from '../consumer/resync.js';
import { createLogger } from '../shared/logger.js';
import { startRedis, type RedisServer } from '../test/support/redis-server.js';
import type { Scenario } from './support/result.js';
import { backToBack, measured, ratio, type Row } from './support/stats.js';
import { connected, within } from './support/workload.js';

const KEYS = 2_000_000;
const VALUE_BYTES = 32;
const SCAN_COUNT = 1000;
const TIMEOUT_MS = 600_000;

/** Seconds qsync takes to copy the master to an empty replica (no writes meanwhile). */
async function resync(master: RedisServer, replica: RedisServer): Promise<number> {
  const t0 = performance.now();
  const result = await runResync({
    master: { host: master.host, port: master.port },
    replica: { host: replica.host, port: replica.port },
    scanCount: SCAN_COUNT,
    logger: createLogger('silent'),
  });
  const seconds = (performance.now() - t0) / 1000;
  if (result.copied !== KEYS) throw new Error(`resync copied ${result.copied} keys, expected ${KEYS}`);
  return seconds;
}

/** Seconds of a native full sync of the master's dataset; the replica is emptied again after. */
async function fullSyncThenEmpty(master: RedisServer, replica: Redis): Promise<number> {
  const seconds = await fullSync(master, replica, KEYS);
  await replica.flushall();
  return seconds;
}

export const scenario: Scenario = {
  name: 'resync',
  title: 'Bootstrapping a replica: qsync resync against a native full sync',
  method:
    `A master filled with ${KEYS / 1e6}M string keys of ${VALUE_BYTES} B (DEBUG POPULATE), no writes meanwhile. ` +
    `\`qsync resync\` (SCAN COUNT ${SCAN_COUNT}, DUMP/RESTORE in atomic batches) to an empty replica, timed from the call to ` +
    'the handover, against REPLICAOF on another empty server, timed until the link is up and the sync finished (the ' +
    "master forks for the RDB). Both over loopback on the same machine, alternating which goes first each round.",
  rounds: 2,
  async run(rounds) {
    const [master, replica, native] = await Promise.all([startRedis(), startRedis(), startRedis()]);
    try {
      const m = await connected(master.client());
      await within(m.call('DEBUG', 'POPULATE', KEYS, 'key', VALUE_BYTES), TIMEOUT_MS, 'DEBUG POPULATE');
      const n = await connected(native.client());
      const ours: number[] = [];
      const theirs: number[] = [];
      for (let r = 0; r < rounds; r++) {
        const [full, copy] = await backToBack(r % 2 === 0, () => within(fullSyncThenEmpty(master, n), TIMEOUT_MS, 'full sync'), () => within(resync(master, replica), TIMEOUT_MS, 'resync'));
        theirs.push(full);
        ours.push(copy);
      }
      const rows: Row[] = [
        measured('qsync resync: keys per second', 'keys/s', ours.map((s) => KEYS / s)),
        measured(`qsync resync: ${KEYS / 1e6}M keys`, 's', ours),
        measured(`native full sync (REPLICAOF): ${KEYS / 1e6}M keys`, 's', theirs),
        ratio('qsync resync ÷ native full sync (time)', ours, theirs),
      ];
      return { rows, headline: 'qsync resync ÷ native full sync (time)', details: { keys: KEYS, valueBytes: VALUE_BYTES, scanCount: SCAN_COUNT } };
    } finally {
      await Promise.all([master.destroy(), replica.destroy(), native.destroy()]);
    }
  },
};
