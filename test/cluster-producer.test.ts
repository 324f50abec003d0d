/**
 * The producer on a Redis Cluster: each write and its entry are one script on
 * the shard that owns the write's hash slot, in that slot's log; groups and
 * scripts work within one slot, and fail whole with CROSSSLOT across slots.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { ReplyError } from 'ioredis';
import { createProducer, ConfigError, ReservedKeyError, UnsupportedCommandError } from '../producer/index.js';
import { slotKeys, slotOf } from '../shared/cluster.js';
import { decodeEntry } from '../shared/entry.js';
import { startCluster, type LocalCluster } from './support/redis-cluster.js';
import { startRedis } from './support/redis-server.js';
import { ClusterConsumer } from '../consumer/cluster/consumer.js';
import { createLogger } from '../shared/logger.js';

const PREFIX = 'qsync';

/** A queue of its own for each test. */
const newQueue = () => `q${randomBytes(4).toString('hex')}`;

/** Slot `slot`'s entries, read on the node that owns the slot: seq and commands as text. */
async function slotLog(cluster: LocalCluster, queue: string, slot: number): Promise<{ seq: number; commands: string[][] }[]> {
  const owner = await cluster.ownerOf(slot);
  const raw = await owner.admin.lrangeBuffer(slotKeys(PREFIX, queue, slot).log, 0, -1);
  return raw.map((r) => {
    const e = decodeEntry(r);
    return { seq: e.seq, commands: e.commands.map((c) => c.map(String)) };
  });
}

/** Keys on every master, qsync's or not. */
async function keysEverywhere(cluster: LocalCluster): Promise<string[]> {
  const all = await Promise.all(cluster.masters.map((m) => m.admin.keys('*')));
  return all.flat().sort();
}

let shared: LocalCluster;
test.before(async () => {
  shared = await startCluster({ masters: 3 });
});
test.after.always(async () => {
  await shared?.destroy();
});

test('writes of many kinds to keys on every shard land with one entry each in their own slot’s log, seqs 1..n per slot', async (t) => {
  const queue = newQueue();
  const db = createProducer(shared.client(), { queue });
  const keys = Array.from({ length: 30 }, (_, i) => `${queue}:k${i}`);
  // Issued in the same tick: the writes of several slots share the tick and go out one call per slot.
  const replies = await Promise.all(
    keys.flatMap((k) => [db.set(k, 'v'), db.incr(`${k}:n`), db.hset(`${k}:h`, 'f', '1'), db.sadd(`${k}:s`, 'a', 'b'), db.sadd(`${k}:s`, 'a')]),
  );
  t.deepEqual(
    replies,
    keys.flatMap(() => ['OK', 1, 1, 2, 0]),
  );
  // A write logged in its deterministic form (the full script) and one whose key has an expiry.
  t.is(await db.set(keys[0], 'w', 'EX', 100), 'OK');
  t.is(await db.getdel(keys[1]), 'v');

  const expected = new Map<number, string[][]>();
  const expect = (key: string, ...command: string[]) => {
    const slot = slotOf(key);
    expected.set(slot, [...(expected.get(slot) ?? []), command]);
  };
  for (const k of keys) {
    expect(k, 'set', k, 'v');
    expect(`${k}:n`, 'incr', `${k}:n`);
  }
  for (const k of keys) {
    expect(`${k}:h`, 'hset', `${k}:h`, 'f', '1');
    expect(`${k}:s`, 'sadd', `${k}:s`, 'a', 'b');
  }
  const owners = new Set<number>();
  for (const [slot, commands] of expected) {
    const log = await slotLog(shared, queue, slot);
    owners.add((await shared.ownerOf(slot)).server.port);
    t.deepEqual(
      log.map((e) => e.seq),
      log.map((_, i) => i + 1),
      `slot ${slot}: seqs 1..n`,
    );
    const logged = log.map((e) => e.commands);
    t.true(
      logged.every((c) => c.length === 1),
      `slot ${slot}: one command an entry`,
    );
    // Leaves out the two writes checked below.
    const plain = logged.map((c) => c[0]).filter((c) => c[0] !== 'del' && (c[0] !== 'set' || c.length === 3));
    // Per key, the order the writes were issued in; the slot's own writes only.
    for (const key of new Set(commands.map((c) => c[1]))) {
      t.deepEqual(
        plain.filter((c) => c[1] === key),
        commands.filter((c) => c[1] === key),
        `slot ${slot}, key ${key}`,
      );
    }
  }
  t.is(owners.size, 3, 'the keys are spread over every shard');
  const first = await slotLog(shared, queue, slotOf(keys[0]));
  t.is(first.at(-1)?.commands[0][0], 'set');
  t.regex(first.at(-1)?.commands[0].join(' ') ?? '', new RegExp(`^set ${keys[0]} w PXAT \\d+$`));
  const second = await slotLog(shared, queue, slotOf(keys[1]));
  t.deepEqual(second.at(-1)?.commands, [['del', keys[1]]]);
});

test('a Cluster client with enableAutoPipelining logs each write in its own slot’s log', async (t) => {
  const queue = newQueue();
  const client = shared.client({ enableAutoPipelining: true });
  client.defineCommand('bump', { numberOfKeys: 1, lua: "return redis.call('INCRBY', KEYS[1], ARGV[1])" });
  const db = createProducer(client, { queue });
  const keys = Array.from({ length: 30 }, (_, i) => `${queue}:k${i}`);
  t.deepEqual(
    await Promise.all(
      keys.flatMap((k) => [db.set(k, 'v'), db.get(k), (db as unknown as { bump: (k: string, n: number) => Promise<number> }).bump(`${k}:n`, 2)]),
    ),
    keys.flatMap(() => ['OK', 'v', 2]),
  );
  const loggedFor = async (key: string) => (await slotLog(shared, queue, slotOf(key))).filter((e) => e.commands[0][1] === key).map((e) => e.commands);
  for (const k of keys) {
    t.deepEqual(await loggedFor(k), [[['set', k, 'v']]]);
    t.deepEqual(await loggedFor(`${k}:n`), [[['incrby', `${k}:n`, '2']]]);
  }
});

test('a hash-tagged multi(), pipeline() and user scripts in one slot each make one entry in that slot’s log', async (t) => {
  const queue = newQueue();
  const client = shared.client();
  client.defineCommand('setBoth', { numberOfKeys: 2, lua: "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('SET', KEYS[2], ARGV[1])" });
  const db = createProducer(client, { queue });
  const tag = `{${queue}}`;
  const slot = slotOf(tag);

  t.deepEqual(await db.multi().set(`${tag}:a`, '1').incr(`${tag}:b`).get(`${tag}:a`).exec(), [
    [null, 'OK'],
    [null, 1],
    [null, '1'],
  ]);
  t.is(await db.eval("redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCR', KEYS[2])", 2, `${tag}:c`, `${tag}:b`, 'x'), 2);
  t.is(await (db as unknown as { setBoth: (...a: string[]) => Promise<string> }).setBoth(`${tag}:d`, `${tag}:e`, 'y'), 'OK');
  t.deepEqual(await db.pipeline().set(`${tag}:f`, 'z').incr(`${tag}:b`).exec(), [
    [null, 'OK'],
    [null, 3],
  ]);
  t.deepEqual(await db.multi().eval("return redis.call('INCR', KEYS[1])", 1, `${tag}:b`).lpush(`${tag}:l`, 'e').exec(), [
    [null, 4],
    [null, 1],
  ]);

  t.deepEqual(await slotLog(shared, queue, slot), [
    {
      seq: 1,
      commands: [
        ['set', `${tag}:a`, '1'],
        ['incr', `${tag}:b`],
      ],
    },
    {
      seq: 2,
      commands: [
        ['set', `${tag}:c`, 'x'],
        ['incr', `${tag}:b`],
      ],
    },
    {
      seq: 3,
      commands: [
        ['set', `${tag}:d`, 'y'],
        ['set', `${tag}:e`, 'y'],
      ],
    },
    { seq: 4, commands: [['set', `${tag}:f`, 'z']] },
    { seq: 5, commands: [['incr', `${tag}:b`]] },
    {
      seq: 6,
      commands: [
        ['incr', `${tag}:b`],
        ['lpush', `${tag}:l`, 'e'],
      ],
    },
  ]);
});

test('a multi(), MSET or script across slots fails with CROSSSLOT and nothing is written or logged; a write without a key is refused', async (t) => {
  const queue = newQueue();
  const db = createProducer(shared.client(), { queue });
  const [a, b] = [`${queue}:a`, `${queue}:b`];
  t.not(slotOf(a), slotOf(b));
  const crossSlot = { instanceOf: ReplyError, message: /^CROSSSLOT / };
  await t.throwsAsync(db.multi().set(a, '1').incr(b).exec(), crossSlot);
  await t.throwsAsync(db.mset(a, '1', b, '2'), crossSlot);
  await t.throwsAsync(db.eval("redis.call('SET', KEYS[1], '1') return redis.call('SET', KEYS[2], '1')", 2, a, b), crossSlot);
  await t.throwsAsync(db.multi().incr(a).eval("return redis.call('SET', KEYS[1], '1')", 1, b).exec(), crossSlot);
  await t.throwsAsync(db.flushall(), { instanceOf: UnsupportedCommandError, message: /FLUSHALL has no key/ });
  await t.throwsAsync(db.eval("return redis.call('SET', 'k', '1')", 0), { instanceOf: UnsupportedCommandError, message: /names no key/ });
  // A pipeline whose writes go to two masters: ioredis refuses it before sending anything.
  const owners = await Promise.all([a, b].map((k) => shared.ownerOf(slotOf(k))));
  const elsewhere = Array.from({ length: 100 }, (_, i) => `${queue}:p${i}`);
  const c = await Promise.all(elsewhere.map((k) => shared.ownerOf(slotOf(k))));
  const other = elsewhere[c.findIndex((o) => o !== owners[0])];
  await t.throwsAsync(db.pipeline().set(a, '1').set(other, '1').exec(), { message: /same slots allocation group/ });
  await t.throwsAsync(db.pipeline().incr(a).mset(a, '1', b, '2').exec(), { message: /should belong to the same slot/ });
  const ours = (await keysEverywhere(shared)).filter((k) => k.includes(queue));
  t.deepEqual(ours, []);
});

test('the producer refuses keys in qsync’s per-slot namespace, and a queueDb other than 0', async (t) => {
  const queue = newQueue();
  const client = shared.client();
  const db = createProducer(client, { queue });
  const own = slotKeys(PREFIX, queue, 42).log;
  await t.throwsAsync(db.rpush(own, 'x'), { instanceOf: ReservedKeyError });
  t.throws(() => createProducer(client, { queueDb: 1 }), {
    instanceOf: ConfigError,
    message: 'qsync: queueDb must be 0 on a Redis Cluster (a cluster has db 0 only), got 1',
  });
  t.is(await shared.masters[0].admin.exists(own), 0);
});

test('waitReplicated counts the replicas that applied, in every slot this producer wrote to, the slot’s log up to its last write', async (t) => {
  const queue = newQueue();
  const db = createProducer(shared.client(), { queue });
  t.is(await db.waitReplicated(2, 10), 2, 'nothing logged yet: nothing to wait for');
  const [a, b] = [`${queue}:a`, `${queue}:b`];
  t.not(slotOf(a), slotOf(b));
  await db.set(a, '1');
  await db.set(a, '2');
  await db.incr(b);
  /** Records a replica's watermark in a slot's replicas hash, as its consumer's confirm does. */
  const confirm = async (key: string, name: string, value: string) => {
    const slot = slotOf(key);
    await (await shared.ownerOf(slot)).admin.hset(slotKeys(PREFIX, queue, slot).replicas, name, value);
  };
  await confirm(a, 'r1', '2:20:2');
  await confirm(a, 'r2', '1:10:1');
  let settled = false;
  const waiting = db.waitReplicated(1, 0).finally(() => {
    settled = true;
  });
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.false(settled, "r1 has not confirmed b's slot yet");
  await confirm(b, 'r1', '1:10:1');
  t.is(await waiting, 1);
  await confirm(b, 'r2', 'detached:1:too far behind');
  t.is(await db.waitReplicated(2, 100), 1, 'r2 is behind in the first slot and detached in the second');
  await confirm(a, 'r2', '2:20:2');
  await confirm(b, 'r2', '1:10:1');
  t.is(await db.waitReplicated(2, 0), 2);
  await t.throwsAsync(db.waitReplicated(-1, 0), {
    instanceOf: ConfigError,
    message: 'waitReplicated: numReplicas must be a whole number from 0, got -1',
  });
});

test('waitReplicated resolves once qsync consume applied every write of the producer, from every shard', async (t) => {
  const queue = newQueue();
  const target = await startRedis();
  t.teardown(() => target.destroy());
  const consumer = await new ClusterConsumer({
    master: { host: '127.0.0.1', port: shared.masters[0].server.port },
    replica: { host: '127.0.0.1', port: target.port },
    queue,
    logger: createLogger('silent'),
    leaseMs: 1000,
    timeoutMs: 2000,
  }).start();
  t.teardown(() => consumer.close());
  const db = createProducer(shared.client(), { queue });
  const replica = target.client();
  const keys = Array.from({ length: 20 }, (_, i) => `${queue}:k${i}`);
  for (const value of ['1', '2']) {
    await Promise.all(keys.map((k) => db.set(k, value)));
    t.is(await db.waitReplicated(1, 20_000), 1);
    t.deepEqual(
      await replica.mget(...keys),
      keys.map(() => value),
    );
  }
});

test('a blocking pop waits for a write from another producer and logs what it popped', async (t) => {
  const queue = newQueue();
  const db = createProducer(shared.client(), { queue });
  const other = createProducer(shared.client(), { queue });
  const list = `${queue}:list`;
  const popped = db.blpop(list, 5);
  await new Promise((resolve) => setTimeout(resolve, 300));
  await other.rpush(list, 'job');
  t.deepEqual(await popped, [list, 'job']);
  t.deepEqual(
    (await slotLog(shared, queue, slotOf(list))).map((e) => e.commands),
    [[['rpush', list, 'job']], [['lpop', list, '1']]],
  );
});

test('a master of the cluster that may evict keys refuses every write, naming that master', async (t) => {
  const cluster = await startCluster({ masters: 2 });
  t.teardown(() => cluster.destroy());
  const last = cluster.masters[1];
  await last.admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
  const db = createProducer(cluster.client(), { queue: newQueue() });
  await t.throwsAsync(db.set('k', '1'), {
    instanceOf: ConfigError,
    message: new RegExp(`the master 127.0.0.1:${last.server.port}'s maxmemory-policy is allkeys-lru`),
  });
  t.deepEqual(await keysEverywhere(cluster), []);
});

test('writes during a slot migration each land exactly once, with their entry, in the slot’s log that moved with the slot', async (t) => {
  const cluster = await startCluster({ masters: 2 });
  t.teardown(() => cluster.destroy());
  const queue = newQueue();
  const client = cluster.client({ retryDelayOnTryAgain: 5, maxRedirections: 1000 });
  const db = createProducer(client, { queue });
  // Writes to new keys wait (TRYAGAIN) until the slot has moved; on a producer of their own, they hold up no one else's.
  const creator = createProducer(client, { queue });
  const tag = `{${queue}}`;
  const slot = slotOf(tag);
  const from = await cluster.ownerOf(slot);
  const to = cluster.masters.find((m) => m !== from) ?? cluster.masters[0];
  // Keys of the slot, so that the migration takes a while.
  for (let i = 0; i < 1000; i += 100) await db.mset(Object.fromEntries(Array.from({ length: 100 }, (_, j) => [`${tag}:f${i + j}`, 'x'])));
  let done = false;
  const counts = { incr: 0, set: 0, rpush: 0 };
  // Writes to an existing key, to new keys, and to a list, each writer one at a time.
  const writer = async (write: (n: number) => Promise<unknown>, name: keyof typeof counts) => {
    while (!done) {
      await write(counts[name]);
      counts[name]++;
    }
  };
  const writers = Promise.all([
    writer(() => db.incr(`${tag}:n`), 'incr'),
    writer((n) => creator.set(`${tag}:new${n}`, String(n)), 'set'),
    writer((n) => db.rpush(`${tag}:list`, String(n)), 'rpush'),
  ]);
  // The slot's queue keys, the counter and the list move first: writes to them go on, on the new owner (ASK).
  const own = slotKeys(PREFIX, queue, slot);
  await cluster.migrate(from, to, [slot], 20, { first: [own.meta, own.log, `${tag}:n`, `${tag}:list`], pauseMs: 10 });
  done = true;
  await writers;
  t.log(`writes during the migration: ${JSON.stringify(counts)}`);
  t.is((await cluster.ownerOf(slot)).id, to.id);
  t.true(counts.incr > 0 && counts.set > 0 && counts.rpush > 0);
  t.is(await to.admin.get(`${tag}:n`), String(counts.incr));
  t.is(await to.admin.llen(`${tag}:list`), counts.rpush);
  t.is(await to.admin.exists(...Array.from({ length: counts.set }, (_, n) => `${tag}:new${n}`)), counts.set);
  const log = await slotLog(cluster, queue, slot);
  t.deepEqual(
    log.map((e) => e.seq),
    log.map((_, i) => i + 1),
  );
  for (const name of ['incr', 'set', 'rpush'] as const) {
    t.is(log.filter((e) => e.commands[0][0] === name).length, counts[name], `${name} entries`);
  }
  t.is(await from.admin.call('CLUSTER', 'COUNTKEYSINSLOT', slot), 0);
});

test('writes go on through a shard’s failover to its cluster replica, each once, the slot’s log continuing its seqs', async (t) => {
  const cluster = await startCluster({ masters: 2, replicasPerMaster: 1 });
  t.teardown(() => cluster.destroy());
  const queue = newQueue();
  const db = createProducer(cluster.client({ retryDelayOnFailover: 20, retryDelayOnClusterDown: 20, maxRedirections: 100 }), { queue });
  const tag = `{${queue}}`;
  const slot = slotOf(tag);
  const before = await cluster.ownerOf(slot);
  const replica = cluster.replicas[cluster.masters.indexOf(before)];
  let done = false;
  let writes = 0;
  const writer = (async () => {
    while (!done) {
      await db.incr(`${tag}:n`);
      writes++;
    }
  })();
  await new Promise((resolve) => setTimeout(resolve, 200));
  await cluster.failover(replica);
  const at = writes;
  // Writes after the failover, on the promoted replica.
  while (writes < at + 50) await new Promise((resolve) => setTimeout(resolve, 20));
  done = true;
  await writer;
  t.is((await cluster.ownerOf(slot)).id, replica.id);
  t.is(await replica.admin.get(`${tag}:n`), String(writes));
  const log = await slotLog(cluster, queue, slot);
  t.deepEqual(
    log.map((e) => e.seq),
    Array.from({ length: writes }, (_, i) => i + 1),
  );
});
