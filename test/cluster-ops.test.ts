/**
 * The operator commands on Redis Clusters: `qsync status` shows a cluster
 * queue's depth per source shard and in total, its shard leases and states,
 * and is loud about a slot in trouble; `qsync verify` compares a cluster with
 * a cluster of another shape or with a standalone server, both ways; `limit`
 * and `dlq` refuse a cluster without touching it.
 */
import test, { type ExecutionContext } from 'ava';
import { createProducer } from '../producer/index.js';
import { clusterQueueKey, slotKeys, slotOf } from '../shared/cluster.js';
import { isClusterNode } from '../shared/cluster-detect.js';
import { ExitCode } from '../shared/errors.js';
import { runCli } from './support/cli.js';
import { startCluster, type LocalCluster } from './support/redis-cluster.js';
import { startRedis, type RedisServer } from './support/redis-server.js';

async function clusterFor(t: ExecutionContext, masters: number): Promise<LocalCluster> {
  const cluster = await startCluster({ masters });
  t.teardown(() => cluster.destroy());
  return cluster;
}

async function serverFor(t: ExecutionContext): Promise<RedisServer> {
  const server = await startRedis();
  t.teardown(() => server.destroy());
  return server;
}

/** Writes `count` SETs to keys tagged `tag` through the cluster producer: entries in the log of that tag's slot. */
async function writeInSlot(cluster: LocalCluster, tag: string, count: number, value = 'v'): Promise<number> {
  const producer = createProducer(cluster.client());
  for (let i = 0; i < count; i++) await producer.set(`k:{${tag}}:${i}`, value);
  return slotOf(tag);
}

interface ShardRow {
  node: string;
  depth: number;
  busySlots: number;
  state: string;
  lagEntries: number | null;
  maxSlotLagEntries: number | null;
  lease: { consumer: string } | null;
  troubleSlots: { slot: number; state: string }[];
}

async function status(
  ...args: string[]
): Promise<{ code: number | null; rows: { depth: number; lagEntries: number | null; state: string; shards: ShardRow[] }[] }> {
  const run = await runCli(['status', ...args, '--json']);
  return { code: run.code, rows: JSON.parse(run.stdout.join('\n')) };
}

test('isClusterNode tells a cluster node from a standalone server', async (t) => {
  const [cluster, server] = await Promise.all([clusterFor(t, 1), serverFor(t)]);
  t.true(await isClusterNode({ port: cluster.masters[0].server.port }, 2000));
  t.false(await isClusterNode({ port: server.port }, 2000));
});

test('status shows a cluster queue depth per source shard and in total, with no consumer', async (t) => {
  const cluster = await clusterFor(t, 3);
  // Tags whose slots fall on the first and second master (of 3 equal shares).
  const first = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].find((tag) => slotOf(tag) < 5461)!;
  const second = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].find((tag) => slotOf(tag) >= 5461 && slotOf(tag) < 10922)!;
  await writeInSlot(cluster, first, 5);
  await writeInSlot(cluster, second, 3);

  const { code, rows } = await status('--master', cluster.url);
  t.is(code, ExitCode.ok);
  t.is(rows.length, 1);
  const [row] = rows;
  t.is(row.depth, 8);
  t.is(row.state, 'no-consumer');
  t.is(row.lagEntries, null);
  t.deepEqual(
    row.shards.map((s) => [s.node, s.depth, s.busySlots, s.state]),
    cluster.masters.map((m, i) => [m.id, [5, 3, 0][i], [1, 1, 0][i], 'no-consumer']),
  );

  const text = await runCli(['status', '--master', cluster.url]);
  t.is(text.code, ExitCode.ok);
  t.regex(text.stdout.join('\n'), /depth\s+8 entries in 2 of 16384 slots/);
});

test("status with --replica shows how far each shard's slots are behind on the target", async (t) => {
  const [cluster, target] = await Promise.all([clusterFor(t, 3), serverFor(t)]);
  const slot = await writeInSlot(cluster, 'x', 6);
  const applied = target.client();
  t.teardown(() => applied.disconnect());
  await applied.hset(slotKeys('qsync', 'default', slot).applied, 'seq', 2);

  const { code, rows } = await status('--master', cluster.url, '--replica', target.url);
  t.is(code, ExitCode.ok);
  t.is(rows[0].lagEntries, 4);
  const shard = rows[0].shards.find((s) => s.depth > 0)!;
  t.is(shard.lagEntries, 4);
  t.is(shard.maxSlotLagEntries, 4);
});

test('status shows shard leases and states, and a slot in trouble makes it exit as a halted queue does', async (t) => {
  const cluster = await clusterFor(t, 3);
  const client = cluster.client();
  const until = Date.now() + 60_000;
  const [m0, m1] = cluster.masters;
  await client.hset(clusterQueueKey('qsync', 'default', 'shards'), m0.id, `c1 ${until}`, m1.id, `c2 ${until}`);
  await client.zadd(clusterQueueKey('qsync', 'default', 'consumers'), until, 'c1', until, 'c2');
  const report = (state: string, consumer: string, detail?: object) =>
    JSON.stringify({ state, consumer, node: 'x:1', slots: 5461, busySlots: 0, applied: 10, since: Date.now(), ...(detail ? { detail } : {}) });
  await client.hset(clusterQueueKey('qsync', 'default', 'shard-status'), m0.id, report('streaming', 'c1'), m1.id, report('idle', 'c2'));

  let run = await status('--master', cluster.url);
  t.is(run.code, ExitCode.ok);
  t.deepEqual(
    run.rows[0].shards.map((s) => [s.state, s.lease?.consumer ?? null]),
    [
      ['streaming', 'c1'],
      ['idle', 'c2'],
      ['no-consumer', null],
    ],
  );

  await client.hset(
    clusterQueueKey('qsync', 'default', 'shard-status'),
    m1.id,
    report('streaming', 'c2', { slots: { 6000: { state: 'halted', reason: 'the replica refused entry 7' } } }),
  );
  run = await status('--master', cluster.url);
  t.is(run.code, ExitCode.halted);
  t.is(run.rows[0].state, 'halted');
  t.deepEqual(run.rows[0].shards[1].troubleSlots, [{ slot: 6000, state: 'halted', reason: 'the replica refused entry 7' }]);
  const text = await runCli(['status', '--master', cluster.url]);
  t.is(text.code, ExitCode.halted);
  t.regex(text.stdout.join('\n'), /slot 6000\s+halted: the replica refused entry 7/);
});

test('on a cluster, status refuses a queue db other than 0, limit and dlq refuse to act, each with one line', async (t) => {
  const cluster = await clusterFor(t, 3);
  const db = await runCli(['status', '--master', cluster.url, '--queue-db', '1']);
  t.is(db.code, ExitCode.usage);
  t.deepEqual(db.stderr.length, 1);
  t.regex(db.stderr[0], /--queue-db 1 .*Redis Cluster/);
  for (const args of [
    ['limit', '--max-entries', '10'],
    ['dlq', 'list'],
    ['dlq', 'drop', '--all'],
  ]) {
    const run = await runCli([...args, '--master', cluster.url]);
    t.is(run.code, ExitCode.clusterMode, args.join(' '));
    t.is(run.stderr.length, 1, args.join(' '));
    t.regex(run.stderr[0], /Redis Cluster/);
  }
  for (const m of cluster.masters) t.is(await m.admin.dbsize(), 0);
});
