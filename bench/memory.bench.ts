/**
 * What a queued entry costs the master in memory, against the size of the
 * command it replays.
 */
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { QueueKeys, DEFAULT_PREFIX, DEFAULT_QUEUE } from '../shared/keys.js';
import { startRedis } from '../test/support/redis-server.js';
import type { Scenario } from './support/result.js';
import { measured, ratio, type Row } from './support/stats.js';
import { connected, key, value, writeSets } from './support/workload.js';

const ENTRIES = 100_000;
const VALUE_SIZES = [32, 1024];
const keys = new QueueKeys(DEFAULT_PREFIX, DEFAULT_QUEUE);

async function usedMemory(client: Redis): Promise<number> {
  return Number(/^used_memory:(\d+)/m.exec(await client.info('memory'))![1]);
}

/** Bytes of `SET key value` on the wire (RESP), averaged over the workload's keys. */
function respBytes(valueBytes: number): number {
  const bulk = (s: string) => `$${Buffer.byteLength(s)}\r\n`.length + Buffer.byteLength(s) + 2;
  let sum = 0;
  for (let i = 0; i < ENTRIES; i++) sum += '*3\r\n'.length + bulk('SET') + bulk(key(i)) + bulk(value(i, valueBytes));
  return sum / ENTRIES;
}

interface Sample {
  queue: number;
  entry: number;
  data: number;
}

/** One fill of ENTRIES SETs on an empty server; memory is read before, after, and after deleting the log. */
async function sample(plain: Redis, producer: Redis, valueBytes: number): Promise<Sample> {
  await plain.flushall();
  const empty = await usedMemory(plain);
  await writeSets(producer, ENTRIES, 64, valueBytes);
  const full = await usedMemory(plain);
  const entries = await plain.lrangeBuffer(keys.log, 0, -1);
  const entry = entries.reduce((sum, e) => sum + e.length, 0) / entries.length;
  await plain.del(keys.log);
  const withoutLog = await usedMemory(plain);
  return { queue: (full - withoutLog) / ENTRIES, entry, data: (withoutLog - empty) / ENTRIES };
}

export const scenario: Scenario = {
  name: 'memory',
  title: 'Master memory per queued entry',
  method:
    `${ENTRIES / 1000}k SETs of distinct keys through the producer on an emptied master, with no worker draining. The queue's cost is ` +
    '`used_memory` (INFO memory) before deleting the log minus after, per entry; the keys themselves cost the rest of the ' +
    'growth from the empty server. It is compared with the bytes of the SET command on the wire (RESP) and of the ' +
    'packed entry (cmsgpack), for a small and a large value.',
  rounds: 3,
  async run(rounds) {
    const server = await startRedis();
    try {
      const plain = await connected(server.client());
      const producer = createProducer(await connected(server.client()));
      const rows: Row[] = [];
      for (const size of VALUE_SIZES) {
        const samples: Sample[] = [];
        for (let r = 0; r < rounds; r++) samples.push(await sample(plain, producer, size));
        const resp = samples.map(() => respBytes(size));
        const queue = samples.map((s) => s.queue);
        rows.push(
          measured(`${size} B values: master memory per queued entry`, 'bytes', queue),
          measured(
            `${size} B values: packed entry`,
            'bytes',
            samples.map((s) => s.entry),
          ),
          measured(`${size} B values: SET command on the wire`, 'bytes', resp),
          measured(
            `${size} B values: master memory per key (the data itself)`,
            'bytes',
            samples.map((s) => s.data),
          ),
          ratio(`${size} B values: queued entry ÷ command on the wire`, queue, resp),
          ratio(
            `${size} B values: queued entry ÷ key`,
            queue,
            samples.map((s) => s.data),
          ),
        );
      }
      return { rows, headline: `${VALUE_SIZES[0]} B values: queued entry ÷ command on the wire`, details: { entries: ENTRIES } };
    } finally {
      await server.destroy();
    }
  },
};
