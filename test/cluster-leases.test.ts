/**
 * Shard leases of a cluster queue: consumers share a real 3-master source
 * cluster's shards fairly, take over a dead consumer's shards once its leases
 * expire, free a closed consumer's shards at once, and never hold one shard
 * two at a time.
 */
import test, { type ExecutionContext } from 'ava';
import { randomUUID } from 'node:crypto';
import type { Cluster } from 'ioredis';
import { ShardLeases } from '../consumer/cluster/leases.js';
import { clusterQueueKey } from '../shared/cluster.js';
import { ConfigError } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';
import { liveShardLeases, startCluster, type LocalCluster } from './support/redis-cluster.js';

const PREFIX = 'qsync';
const NAME = 'default';
const LEASE_MS = 1000;

let cluster: LocalCluster;
let admin: Cluster;
test.before(async () => {
  cluster = await startCluster({ masters: 3 });
  admin = cluster.client();
});
test.after.always(async () => {
  await cluster?.destroy();
});

function shardIds(): string[] {
  return cluster.masters.map((m) => m.id);
}

interface Consumer {
  id: string;
  leases: ShardLeases;
}

function consumers(queue: string, n: number, leaseMs = LEASE_MS): Consumer[] {
  return Array.from({ length: n }, (_, i) => {
    const id = `consumer-${i + 1}`;
    return {
      id,
      leases: new ShardLeases(cluster.client(), { prefix: PREFIX, queue, name: NAME, consumerId: id, leaseMs, logger: createLogger('silent') }),
    };
  });
}

/** Live shard leases of the queue: node id -> holder. */
function holders(queue: string): Promise<Map<string, string>> {
  return liveShardLeases(admin, clusterQueueKey(PREFIX, queue, 'shards', NAME));
}

/**
 * Every running consumer balances once; then no shard is held by two
 * consumers (by what each one believes it holds) and each belief matches the
 * hash. Returns how many shards each consumer holds, by id.
 */
async function round(t: ExecutionContext, queue: string, all: Consumer[], running: Consumer[], shards: string[]): Promise<Record<string, number>> {
  const held = await Promise.all(running.map((c) => c.leases.balance(shards)));
  const hash = await holders(queue);
  for (const shard of shards) {
    const believers = all.filter((c) => c.leases.holds(shard)).map((c) => c.id);
    t.true(believers.length <= 1, `shard ${shard} held by ${believers.join(' and ')}`);
    if (believers.length === 1) t.is(hash.get(shard), believers[0], `the hash names the holder of ${shard}`);
  }
  return Object.fromEntries(running.map((c, i) => [c.id, held[i].size]));
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('one consumer alone holds every shard', async (t) => {
  const queue = `q-${randomUUID()}`;
  const all = consumers(queue, 1);
  const held = await all[0].leases.balance(shardIds());
  t.deepEqual([...held].sort(), shardIds().sort());
  for (const id of shardIds()) t.true(all[0].leases.holds(id));
  t.deepEqual([...(await holders(queue)).values()], ['consumer-1', 'consumer-1', 'consumer-1']);
  await all[0].leases.close();
});

test('three consumers balance to one shard each, a dead one’s shard moves to the others after the lease time', async (t) => {
  const queue = `q-${randomUUID()}`;
  const all = consumers(queue, 3);
  const shards = shardIds();
  // The first consumer starts alone and takes everything; the others join.
  t.deepEqual(await round(t, queue, all, all.slice(0, 1), shards), { 'consumer-1': 3 });
  let counts: Record<string, number> = {};
  for (let i = 0; i < 4; i++) counts = await round(t, queue, all, all, shards);
  t.deepEqual(counts, { 'consumer-1': 1, 'consumer-2': 1, 'consumer-3': 1 });

  // consumer-3 dies: no more renewals, no close. Its shard stays its own until its lease expires.
  const [survivors, dead] = [all.slice(0, 2), all[2]];
  const deadShard = [...(await holders(queue))].find(([, holder]) => holder === dead.id)![0];
  const diedAt = Date.now();
  counts = await round(t, queue, all, survivors, shards);
  t.deepEqual(counts, { 'consumer-1': 1, 'consumer-2': 1 }, 'the lease of the dead consumer holds until it expires');
  while (Date.now() - diedAt < LEASE_MS * 3) {
    await pause(LEASE_MS / 3);
    counts = await round(t, queue, all, survivors, shards);
  }
  t.deepEqual(Object.values(counts).sort(), [1, 2]);
  t.false(dead.leases.holds(deadShard));
  const hash = await holders(queue);
  t.deepEqual([...hash.keys()].sort(), [...shards].sort(), 'every shard is held');
  t.true(['consumer-1', 'consumer-2'].includes(hash.get(deadShard)!));
  await Promise.all(all.map((c) => c.leases.close()));
});

test('four shards and three consumers: two hold one each, one holds two, none stays idle', async (t) => {
  const queue = `q-${randomUUID()}`;
  const all = consumers(queue, 3);
  const shards = [...shardIds(), 'f'.repeat(40)];
  t.deepEqual(await round(t, queue, all, all.slice(0, 1), shards), { 'consumer-1': 4 });
  for (let i = 0; i < 3; i++) await round(t, queue, all, all.slice(0, 2), shards);
  let counts: Record<string, number> = {};
  for (let i = 0; i < 4; i++) counts = await round(t, queue, all, all, shards);
  t.deepEqual(Object.values(counts).sort(), [1, 1, 2]);
  t.is((await holders(queue)).size, 4, 'every shard is held');
  await Promise.all(all.map((c) => c.leases.close()));
});

test('a closed consumer’s shards are free at once and taken by the next balance', async (t) => {
  const queue = `q-${randomUUID()}`;
  const all = consumers(queue, 2, 60_000);
  const shards = shardIds();
  for (let i = 0; i < 3; i++) await round(t, queue, all, all, shards);
  const before = await holders(queue);
  t.is([...before.values()].filter((h) => h === 'consumer-2').length > 0, true, 'consumer-2 holds a shard before it closes');

  await all[1].leases.close();
  t.deepEqual(
    [...(await holders(queue)).values()].filter((h) => h === 'consumer-2'),
    [],
    'no lease is left to consumer-2',
  );
  for (const id of shards) t.false(all[1].leases.holds(id));
  t.is(await admin.zscore(clusterQueueKey(PREFIX, queue, 'consumers', NAME), 'consumer-2'), null, 'consumer-2 left the registry');
  // With a lease of a minute, only the release can make its shards free so soon.
  t.deepEqual(await round(t, queue, all, all.slice(0, 1), shards), { 'consumer-1': 3 });
  t.deepEqual((await all[1].leases.balance(shards)).size, 0, 'a closed consumer takes nothing');
  await all[0].leases.close();
  t.deepEqual(await holders(queue), new Map());
});

test('a new shard is taken by one of the consumers, a shard that is no master any more is dropped', async (t) => {
  const queue = `q-${randomUUID()}`;
  const all = consumers(queue, 3);
  const shards = shardIds();
  for (let i = 0; i < 4; i++) await round(t, queue, all, all, shards);
  const added = 'f'.repeat(40);
  const counts = await round(t, queue, all, all, [...shards, added]);
  t.deepEqual(Object.values(counts).sort(), [1, 1, 2]);
  const holder = (await holders(queue)).get(added);
  t.truthy(holder, 'the new shard has a holder');
  t.true(all.find((c) => c.id === holder)!.leases.holds(added));

  // The node is no master any more: its holder gives it up on its next balance.
  await round(t, queue, all, all, shards);
  t.false((await holders(queue)).has(added));
  t.is(await admin.hexists(clusterQueueKey(PREFIX, queue, 'shards', NAME), added), 0);
  await Promise.all(all.map((c) => c.leases.close()));
});

test('an expired lease of a node that is no master any more leaves the hash', async (t) => {
  const queue = `q-${randomUUID()}`;
  const shardsKey = clusterQueueKey(PREFIX, queue, 'shards', NAME);
  const gone = 'e'.repeat(40);
  await admin.hset(shardsKey, gone, 'someone-else 1', shardIds()[0], 'someone-else 99999999999999');
  const [c] = consumers(queue, 1);
  t.deepEqual([...(await c.leases.balance(shardIds()))].sort(), shardIds().slice(1).sort(), 'a lease held by another consumer is left alone');
  t.is(await admin.hexists(shardsKey, gone), 0);
  t.is(await admin.hget(shardsKey, shardIds()[0]), 'someone-else 99999999999999');
  await c.leases.close();
  t.deepEqual(await admin.hkeys(shardsKey), [shardIds()[0]], 'close releases only its own leases');
});

test('a lease that is not "<consumer id> <expiry ms>" is an error naming it, and nothing is overwritten', async (t) => {
  const queue = `q-${randomUUID()}`;
  const shardsKey = clusterQueueKey(PREFIX, queue, 'shards', NAME);
  await admin.hset(shardsKey, shardIds()[1], 'garbage');
  const [c] = consumers(queue, 1);
  await t.throwsAsync(c.leases.balance(shardIds()), { message: new RegExp(`shard lease ${shardIds()[1]} in .* is "garbage"`) });
  t.deepEqual(await admin.hgetall(shardsKey), { [shardIds()[1]]: 'garbage' });
  t.false(c.leases.holds(shardIds()[0]));
});

test('bad options and shard ids are refused with the value named', async (t) => {
  const options = { prefix: PREFIX, queue: 'q', name: NAME, consumerId: 'c', leaseMs: LEASE_MS, logger: createLogger('silent') };
  const client = cluster.client();
  t.throws(() => new ShardLeases(client, { ...options, leaseMs: 0 }), {
    instanceOf: ConfigError,
    message: 'lease time 0 is not a positive number of ms',
  });
  t.throws(() => new ShardLeases(client, { ...options, consumerId: '' }), {
    instanceOf: ConfigError,
    message: 'consumer id "" is not a non-empty string',
  });
  await t.throwsAsync(new ShardLeases(client, options).balance(['a b']), {
    instanceOf: ConfigError,
    message: 'shard id "a b" is not a cluster node id',
  });
});
