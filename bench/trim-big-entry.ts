/**
 * `npx tsx bench/trim-big-entry.ts [MiB]`: how long the master is held by
 * the consumer's read of a batch and its confirmation (trim) when the log
 * holds big entries.
 *
 * Eight SETs of a value of the given size (20 MiB by default) are logged
 * through the producer. The consumer's read of the next batch (the default
 * 1 MiB budget: one entry) and its confirmation of the head entry are then
 * run on the master, and their times are taken from the master's own
 * SLOWLOG (the script's run, without the round trip). The log is refilled
 * between rounds.
 */
import { createProducer } from '../producer/index.js';
import { Confirmer } from '../consumer/drain/confirm.js';
import { Batch } from '../consumer/drain/batch.js';
import { WORKER_DEFAULTS } from '../consumer/drain/worker.js';
import { QueueKeys } from '../shared/keys.js';
import { createLogger } from '../shared/logger.js';
import { defineScripts } from '../shared/scripts.js';
import { startRedis } from '../test/support/redis-server.js';

const MIB = Number(process.argv[2] ?? 20);
const ENTRIES = 8;
const ROUNDS = 5;

const master = await startRedis({ args: ['--slowlog-log-slower-than', '0', '--slowlog-max-len', '1000'] });
try {
  const client = master.client();
  defineScripts(client);
  const keys = new QueueKeys('qsync', 'default');
  const db = createProducer(master.client());
  const value = Buffer.alloc(MIB * 1024 * 1024, 'x');
  const confirmer = new Confirmer(client, client, keys, 'bench', createLogger('silent'));
  /** Runs fn and returns how long its script ran on the master, in ms. */
  const scriptMs = async (fn: () => Promise<unknown>): Promise<number> => {
    await client.slowlog('RESET');
    await fn();
    const log = (await client.slowlog('GET', 100)) as [number, number, number, string[]][];
    const run = log.find((e) => /^eval/i.test(String(e[3][0])));
    if (!run) throw new Error('no script call in the slowlog');
    return run[2] / 1000;
  };
  const reads: number[] = [];
  const trims: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    await client.del(keys.log);
    for (let i = 0; i < ENTRIES; i++) await db.set(`big${i}`, value);
    let batch: Batch | undefined;
    reads.push(
      await scriptMs(async () => {
        const [, , , , lengths, joined] = await client.qsyncReadBatchBuffer(
          keys.log,
          keys.meta,
          0,
          WORKER_DEFAULTS.batchSize,
          WORKER_DEFAULTS.batchBytes,
          4,
          keys.name,
          'joined',
        );
        batch = new Batch('', null, 0, lengths, joined);
      }),
    );
    if (batch?.count !== 1) throw new Error(`a batch of ${batch?.count} entries; one was expected`);
    const seq = Number(await client.hget(keys.meta, 'seq')) - ENTRIES + 1;
    await client.set(keys.lease, 'bench', 'PX', 60_000);
    trims.push(await scriptMs(() => confirmer.confirm(batch!, [0, seq, 1])));
    if ((await client.llen(keys.log)) !== ENTRIES - 1) throw new Error('the head entry was not trimmed');
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)].toFixed(1);
  const range = (xs: number[]) => `${Math.min(...xs).toFixed(1)} to ${Math.max(...xs).toFixed(1)}`;
  console.log(`log of ${ENTRIES} entries of ${MIB} MiB, ${ROUNDS} rounds, ms the master spent in the script:`);
  console.log(`  read of the next batch   median ${median(reads)} (${range(reads)})`);
  console.log(`  trim of the head entry   median ${median(trims)} (${range(trims)})`);
} finally {
  await master.destroy();
}
