/**
 * qsync consume on Redis Cluster: a 3-shard source drained to a 2-shard
 * cluster and to a standalone server, through reshards of thousands of slots
 * on either side, a source shard failing over and a consumer killed; each
 * ends with the same data on both sides, counters proving every entry was
 * applied once.
 */
// Serial: each test starts whole clusters (up to a dozen redis-server processes);
// run side by side on 2 cores they starve the 1 s leases these tests use.
import test, { type ExecutionContext } from 'ava';
import { Writable } from 'node:stream';
import type { Cluster, Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { ClusterConsumer } from '../consumer/cluster/consumer.js';
import { slotKeys, slotOf } from '../shared/cluster.js';
import { createLogger } from '../shared/logger.js';
import { startCluster, type ClusterNode, type LocalCluster } from './support/redis-cluster.js';
import { startRedis, type RedisServer } from './support/redis-server.js';
import { runCli, spawnCli } from './support/cli.js';
import { eventually } from './support/wait.js';
import { ConfigError, ExitCode } from '../shared/errors.js';

const PREFIX = 'qsync';
const QUEUE = 'default';

/** Keys in many slots of every shard; `counters` INCR keys and plain SETs. */
function workloadKeys(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `user:${i}`);
}

/** A workload of INCRs (exactly-once shows in the counts) and SETs, `rounds` writes per key, sequential per key. */
async function workload(producer: Cluster, keys: string[], rounds: number, concurrency = 16): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= keys.length * rounds) return;
      const key = keys[i % keys.length];
      const round = Math.floor(i / keys.length);
      await producer.incr(`${key}:count`);
      if (round % 3 === 0) await producer.set(`${key}:last`, `r${round}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/** Every key of the nodes (qsync's own left out), as key -> DUMP hex and expiry. */
async function dataset(nodes: Redis[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) {
        if (key.startsWith(`${PREFIX}:`)) continue;
        const [dump, expiry] = await Promise.all([node.dumpBuffer(key), node.pexpiretime(key)]);
        out.set(key, `${dump?.toString('hex')} ${expiry}`);
      }
    } while (cursor !== '0');
  }
  return out;
}

function mastersOf(cluster: LocalCluster): Redis[] {
  return cluster.masters.map((m) => m.admin);
}

/** The differences between the source's data and the target's. */
async function differences(source: LocalCluster, target: Redis[]): Promise<string[]> {
  const [a, b] = await Promise.all([dataset(mastersOf(source)), dataset(target)]);
  const diffs: string[] = [];
  for (const [k, v] of a) if (b.get(k) !== v) diffs.push(`${k}: ${b.has(k) ? 'differs' : 'missing on the target'}`);
  for (const k of b.keys()) if (!a.has(k)) diffs.push(`${k}: only on the target`);
  return diffs;
}

/** Waits until every slot's log of the source is empty and the target's watermark of each slot is at its sequence. */
async function drained(source: LocalCluster, target: Redis[], timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let behind = 0;
    const seqs = new Map<number, string>();
    for (const m of source.masters) {
      const slots = await slotsOf(m);
      const pipe = m.admin.pipeline();
      for (const s of slots) pipe.hget(slotKeys(PREFIX, QUEUE, s).meta, 'seq');
      const replies = (await pipe.exec()) ?? [];
      replies.forEach(([err, seq], i) => {
        if (!err && seq !== null) seqs.set(slots[i], String(seq));
      });
    }
    for (const [slot, seq] of seqs) {
      const key = slotKeys(PREFIX, QUEUE, slot).applied;
      let applied: string | null = null;
      for (const t of target) {
        applied = await t.hget(key, 'seq').catch(() => null);
        if (applied !== null) break;
      }
      if (applied !== seq) behind++;
    }
    if (behind === 0) return;
    if (Date.now() > deadline) throw new Error(`${behind} slots not drained after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function slotsOf(node: ClusterNode): Promise<number[]> {
  const ranges = (await node.admin.call('CLUSTER', 'SLOTS')) as [number, number, [string, number, string]][];
  const out: number[] = [];
  for (const [a, b, [, , id]] of ranges) if (id === node.id) for (let s = a; s <= b; s++) out.push(s);
  return out;
}

/** Waits until the target caught up, then checks both sides hold the same data and each key's counter its count. */
async function endsEqual(t: ExecutionContext, source: LocalCluster, target: Redis[], keys: string[], count: (i: number) => number): Promise<void> {
  await drained(source, target, 60_000);
  t.deepEqual(await differences(source, target), []);
  t.deepEqual(
    await counts(source, keys),
    keys.map((_, i) => count(i)),
  );
}

function consumerOf(
  source: LocalCluster,
  target: { host: string; port: number },
  id?: string,
  { user, logs }: { user?: { username: string; password: string }; logs?: string[] } = {},
): ClusterConsumer {
  const destination =
    logs &&
    new Writable({
      write(chunk, _encoding, done) {
        logs.push(String(chunk));
        done();
      },
    });
  return new ClusterConsumer({
    master: { host: '127.0.0.1', port: source.masters[1].server.port, ...user },
    replica: target,
    logger: logs ? createLogger('info', destination) : createLogger(process.env.QSYNC_TEST_LOGS ? 'info' : 'silent'),
    leaseMs: 1000,
    timeoutMs: 2000,
    recheckMs: 200,
    backoff: { minMs: 20, maxMs: 200 },
    id,
  });
}

async function counts(source: LocalCluster, keys: string[]): Promise<number[]> {
  const client = source.client();
  try {
    return await Promise.all(keys.map(async (k) => Number(await client.get(`${k}:count`))));
  } finally {
    client.disconnect();
  }
}

/** A source cluster and a producer on it (the cluster producer: each write logged in its slot's queue). */
async function sourceAndProducer(
  t: ExecutionContext,
  spec = { masters: 3, replicasPerMaster: 0 },
): Promise<{ source: LocalCluster; producer: Cluster }> {
  const source = await startCluster(spec);
  t.teardown(() => source.destroy());
  return { source, producer: createProducer(source.client()) };
}

test.serial('a 3-shard source drains to a 2-shard target: equal data, every INCR applied once', async (t) => {
  const { source, producer } = await sourceAndProducer(t);
  const target = await startCluster({ masters: 2 });
  t.teardown(() => target.destroy());
  const keys = workloadKeys(300);
  await workload(producer, keys.slice(0, 150), 4);
  const consumer = consumerOf(source, { host: '127.0.0.1', port: target.masters[0].server.port });
  t.teardown(() => consumer.close());
  await consumer.start();
  await workload(producer, keys, 4);
  await endsEqual(t, source, mastersOf(target), keys, (i) => (i < 150 ? 8 : 4));
  t.is(consumer.shards.length, 3);
  t.true(
    consumer.shards.every((s) => s.state === 'streaming' || s.state === 'idle'),
    JSON.stringify(consumer.shards),
  );
  // Counted once trimmed from the source, just after the target's watermark moved.
  const expected = keys.length * 4 + 150 * 4 + Math.ceil(4 / 3) * 300 + 2 * 150;
  await eventually(() => consumer.applied >= expected || undefined, 5000, `${expected} entries counted`);
  t.is(consumer.applied, expected);
});

test.serial('a 3-shard source drains to a standalone target, and the shards publish their status', async (t) => {
  const { source, producer } = await sourceAndProducer(t);
  const target: RedisServer = await startRedis();
  t.teardown(() => target.destroy());
  const consumer = consumerOf(source, { host: target.host, port: target.port });
  t.teardown(() => consumer.close());
  await consumer.start();
  const keys = workloadKeys(200);
  await workload(producer, keys, 3);
  const replica = target.client();
  await endsEqual(t, source, [replica], keys, () => 3);
  for (const m of source.masters) {
    const [, flags] = (await m.admin.config('GET', 'notify-keyspace-events')) as [string, string];
    t.regex(flags, /K/, 'keyspace events on');
    t.regex(flags, /l|A/, 'list events on');
  }
  const status = await source.client().hgetall(`${PREFIX}:{${QUEUE}:cluster}:shard-status`);
  t.deepEqual(Object.keys(status).sort(), source.masters.map((m) => m.id).sort());
  for (const v of Object.values(status)) t.is(JSON.parse(v).consumer, consumer.id);
});

test.serial('qsync consume drains a cluster; killed mid-stream (SIGKILL), a new one finishes with every INCR applied once', async (t) => {
  const { source, producer } = await sourceAndProducer(t);
  const target = await startCluster({ masters: 2 });
  t.teardown(() => target.destroy());
  const args = ['consume', '--master', source.url, '--replica', target.url, '--lease-ms', '1000', '--timeout-ms', '2000'];
  const first = spawnCli(args);
  t.teardown(() => first.kill('SIGKILL'));
  await first.waitForLog((l) => l.msg === 'shard worker starts', 20_000, 'a shard worker starting');
  const keys = workloadKeys(200);
  const writing = workload(producer, keys, 12, 8);
  await eventually(
    async () => (await Promise.all(target.masters.map((m) => m.admin.dbsize()))).reduce((a, b) => a + b) > 50 || undefined,
    20_000,
    'entries on the target',
  );
  first.kill('SIGKILL');
  t.is((await first.exited).signal, 'SIGKILL');
  const second = spawnCli(args);
  t.teardown(() => second.kill('SIGKILL'));
  await writing;
  await endsEqual(t, source, mastersOf(target), keys, () => 12);
  second.kill('SIGTERM');
  t.is((await second.exited).code, 0);
});

/** `count` slots of a master, from its first. */
async function someSlots(node: ClusterNode, count: number): Promise<number[]> {
  return (await slotsOf(node)).slice(0, count);
}

/**
 * A 3-shard source drained to a 2-shard target by a consumer in this process
 * while a workload runs and `change` changes the topology: both sides end
 * equal, every counter at its count.
 */
async function drainsThrough(
  t: ExecutionContext,
  change: (source: LocalCluster, target: LocalCluster, consumer: ClusterConsumer) => Promise<void>,
  spec = { masters: 3, replicasPerMaster: 0 },
): Promise<ClusterConsumer> {
  const { source, producer } = await sourceAndProducer(t, spec);
  const target = await startCluster({ masters: 2 });
  t.teardown(() => target.destroy());
  const consumer = consumerOf(source, { host: '127.0.0.1', port: target.masters[0].server.port });
  t.teardown(() => consumer.close());
  await consumer.start();
  const keys = workloadKeys(300);
  const writing = workload(producer, keys, 10, 8);
  await change(source, target, consumer);
  await writing;
  await endsEqual(t, source, mastersOf(target), keys, () => 10);
  return consumer;
}

test.serial('thousands of slots resharded on the source under load: drained by their new owner, every INCR once', async (t) => {
  await drainsThrough(t, async (source) => {
    await source.migrate(source.masters[0], source.masters[1], await someSlots(source.masters[0], 3000));
    t.is((await slotsOf(source.masters[1])).length, 5461 + 3000);
  });
});

test.serial('thousands of slots resharded on the target under load: each batch applies where its slot is, every INCR once', async (t) => {
  await drainsThrough(t, async (_source, target) => {
    await target.migrate(target.masters[0], target.masters[1], await someSlots(target.masters[0], 4000));
  });
});

test.serial('a source shard failing over to its cluster replica gets a worker on the promoted node, with no restart', async (t) => {
  let promoted: ClusterNode | undefined;
  const consumer = await drainsThrough(
    t,
    async (source) => {
      promoted = source.replicas[0];
      await source.failover(promoted);
    },
    { masters: 3, replicasPerMaster: 1 },
  );
  const shards = consumer.shards;
  t.true(
    shards.some((s) => s.id === promoted!.id && s.state !== 'standby'),
    JSON.stringify(shards),
  );
  t.is(shards.length, 3);
});

test.serial(
  'a batch meeting its target slot half moved (the watermark moved, a key it writes not yet) waits for the move, and applies once',
  async (t) => {
    const { source, producer } = await sourceAndProducer(t);
    const target = await startCluster({ masters: 2 });
    t.teardown(() => target.destroy());
    const key = 'moving:count';
    const slot = slotOf(key);
    const [from, to] = (await target.ownerOf(slot)) === target.masters[0] ? target.masters : [target.masters[1], target.masters[0]];
    const consumer = consumerOf(source, { host: '127.0.0.1', port: from.server.port });
    t.teardown(() => consumer.close());
    await consumer.start();
    for (let i = 0; i < 5; i++) await producer.incr(key);
    await drained(source, mastersOf(target));
    // The slot starts moving: the watermark goes first, the key stays behind for now.
    await to.admin.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id);
    await from.admin.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id);
    await from.admin.call('MIGRATE', '127.0.0.1', to.server.port, '', 0, 5000, 'REPLACE', 'KEYS', slotKeys(PREFIX, QUEUE, slot).applied);
    for (let i = 0; i < 5; i++) await producer.incr(key);
    await new Promise((r) => setTimeout(r, 1500));
    t.is(await to.admin.call('CLUSTER', 'COUNTKEYSINSLOT', slot), 1, 'the watermark alone on the node the key has not reached');
    const rest = (await from.admin.call('CLUSTER', 'GETKEYSINSLOT', slot, 1000)) as string[];
    await from.admin.call('MIGRATE', '127.0.0.1', to.server.port, '', 0, 5000, 'REPLACE', 'KEYS', ...rest);
    for (const node of [to, from, ...target.masters.filter((m) => m !== to && m !== from)])
      await node.admin.call('CLUSTER', 'SETSLOT', slot, 'NODE', to.id);
    await target.settled();
    await endsEqual(t, source, mastersOf(target), [key.replace(/:count$/, '')], () => 10);
  },
);

test.serial('a slot whose entry the target refuses halts alone, reported in the shard status; the other slots drain', async (t) => {
  const { source, producer } = await sourceAndProducer(t);
  const target = await startCluster({ masters: 2 });
  t.teardown(() => target.destroy());
  const targetClient = target.client();
  const consumer = consumerOf(source, { host: '127.0.0.1', port: target.masters[0].server.port });
  t.teardown(() => consumer.close());
  await consumer.start();
  await producer.rpush('bad:list', 'a');
  await drained(source, mastersOf(target));
  // The list becomes a string on the target (same expiry, none): the next RPUSH is refused there.
  await targetClient.set('bad:list', 's');
  await producer.rpush('bad:list', 'b');
  const keys = workloadKeys(100);
  await workload(producer, keys, 2);
  const slot = slotOf('bad:list');
  const shard = await eventually(() => consumer.shards.find((s) => s.detail?.slots), 10_000, 'a slot in trouble');
  const slots = shard.detail!.slots as Record<string, { state: string; reason: string }>;
  t.deepEqual(Object.keys(slots), [String(slot)]);
  t.is(slots[slot].state, 'halted');
  t.is(consumer.state, 'halted');
  const copies = await eventually(
    async () => {
      const values = await Promise.all(keys.map((k) => targetClient.get(`${k}:count`)));
      return values.every((v) => v === '2') ? values : undefined;
    },
    30_000,
    'the other slots drained',
  );
  t.is(copies.length, keys.length);
  const published = await eventually(
    async () => {
      const v = await source.client().hget(`${PREFIX}:{${QUEUE}:cluster}:shard-status`, shard.id);
      const parsed = v ? JSON.parse(v) : undefined;
      return parsed?.detail?.slots?.[slot] ? parsed : undefined;
    },
    5000,
    'the slot in the published status',
  );
  t.is(published.detail.slots[slot].state, 'halted');
  t.regex(published.detail.slots[slot].reason, /refused/);
});

test.serial('two consumers share the source shards; when one closes, the other drains them all', async (t) => {
  const { source, producer } = await sourceAndProducer(t);
  const target = await startCluster({ masters: 2 });
  t.teardown(() => target.destroy());
  const targetNode = { host: '127.0.0.1', port: target.masters[0].server.port };
  const [a, b] = [consumerOf(source, targetNode, 'consumer-a'), consumerOf(source, targetNode, 'consumer-b')];
  t.teardown(() => Promise.all([a.close(), b.close()]).then(() => {}));
  await Promise.all([a.start(), b.start()]);
  const working = (c: ClusterConsumer) => c.shards.filter((s) => s.state !== 'standby').map((s) => s.id);
  await eventually(
    () => (working(a).length + working(b).length === 3 && working(a).length > 0 && working(b).length > 0) || undefined,
    10_000,
    'shards shared',
  );
  t.deepEqual(
    working(a).filter((id) => working(b).includes(id)),
    [],
    'no shard drained by both',
  );
  const keys = workloadKeys(200);
  await workload(producer, keys, 3);
  await a.close();
  await workload(producer, keys, 3);
  await eventually(() => working(b).length === 3 || undefined, 10_000, 'every shard with the consumer left');
  await endsEqual(t, source, mastersOf(target), keys, () => 6);
});

test.serial('a source whose ACL refuses CONFIG is drained by the sweep of the logs alone, with a warning', async (t) => {
  const { source, producer } = await sourceAndProducer(t);
  for (const n of [...source.masters, ...source.replicas]) await n.admin.call('ACL', 'SETUSER', 'sync', 'on', '>pw', '~*', '&*', '+@all', '-config');
  const target = await startRedis();
  t.teardown(() => target.destroy());
  const logs: string[] = [];
  const consumer = consumerOf(source, { host: target.host, port: target.port }, undefined, { user: { username: 'sync', password: 'pw' }, logs });
  t.teardown(() => consumer.close());
  await consumer.start();
  const keys = workloadKeys(100);
  await workload(producer, keys, 3);
  await endsEqual(t, source, [target.client()], keys, () => 3);
  const warnings = logs.map((l) => JSON.parse(l)).filter((l) => /cannot turn on keyspace notifications/.test(l.msg));
  t.is(warnings.length, 3, 'one warning per source master');
  for (const m of source.masters) t.is(((await m.admin.config('GET', 'notify-keyspace-events')) as string[])[1], '');
});

test.serial('three qsync consume processes share three shards; the shard of one SIGKILLed moves to the others, every INCR once', async (t) => {
  const { source, producer } = await sourceAndProducer(t);
  const target = await startCluster({ masters: 2 });
  t.teardown(() => target.destroy());
  const args = ['consume', '--master', source.url, '--replica', target.url, '--lease-ms', '1000', '--timeout-ms', '2000'];
  const processes = [spawnCli(args), spawnCli(args), spawnCli(args)];
  t.teardown(() => {
    for (const p of processes) p.kill('SIGKILL');
  });
  const client = source.client();
  const holders = async () =>
    Object.values(await client.hgetall(`${PREFIX}:{${QUEUE}:cluster}:shard-status`)).map((v) => JSON.parse(v).consumer as string);
  await eventually(async () => new Set(await holders()).size === 3 || undefined, 30_000, 'a shard for each process');
  const keys = workloadKeys(200);
  const writing = workload(producer, keys, 6, 8);
  // The consumer id is in every log line of a process.
  const victim = (await holders())[0];
  const index = processes.findIndex((p) => p.logs().some((l) => l.consumer === victim));
  t.true(index >= 0, 'the process holding the first shard');
  processes[index].kill('SIGKILL');
  await eventually(
    async () => (!(await holders()).includes(victim) && new Set(await holders()).size === 2) || undefined,
    30_000,
    'its shard taken over',
  );
  await writing;
  await endsEqual(t, source, mastersOf(target), keys, () => 6);
  for (const [i, p] of processes.entries()) {
    if (i === index) continue;
    p.kill('SIGTERM');
    t.is((await p.exited).code, 0);
  }
});

test.serial('qsync consume refuses a standalone master with a cluster replica, and a queue db other than 0 on a cluster, in one line', async (t) => {
  const target = await startCluster({ masters: 1 });
  t.teardown(() => target.destroy());
  const standalone = await startRedis();
  t.teardown(() => standalone.destroy());
  const mixed = await runCli(['consume', '--master', standalone.url, '--replica', target.url]);
  t.is(mixed.code, ExitCode.usage);
  t.is(mixed.stderr.length, 1, mixed.stderr.join('\n'));
  t.regex(mixed.stderr[0], /--replica .* is a Redis Cluster node but --master .* is a standalone server/);
  const db = await runCli(['consume', '--master', target.url, '--replica', standalone.url, '--queue-db', '2']);
  t.is(db.code, ExitCode.usage);
  t.is(db.stderr.length, 1, db.stderr.join('\n'));
  t.regex(db.stderr[0], /--queue-db 2 cannot be used with --master .*, a Redis Cluster node/);
});

test.serial('ClusterConsumer refuses a master that is not a cluster node, in one line', async (t) => {
  const standalone = await startRedis();
  t.teardown(() => standalone.destroy());
  const consumer = new ClusterConsumer({
    master: { host: standalone.host, port: standalone.port },
    replica: { host: standalone.host, port: standalone.port },
    logger: createLogger('silent'),
  });
  const err = await t.throwsAsync(consumer.start(), { instanceOf: ConfigError });
  t.regex(err!.message, new RegExp(`master 127\\.0\\.0\\.1:${standalone.port} is not a Redis Cluster node`));
  await consumer.close();
});
