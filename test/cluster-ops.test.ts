/**
 * The operator commands on Redis Clusters: `qsync status` shows a cluster
 * queue's depth per source shard and in total, its shard leases and states,
 * and is loud about a slot in trouble; `qsync verify` compares a cluster with
 * a cluster of another shape or with a standalone server, both ways; `dlq`
 * acts on one hash slot's dead letters (`limit`: test/cluster-limit.test.ts).
 */
// Serial: each test starts whole clusters (up to a dozen redis-server processes);
// run side by side on 2 cores they starve the 1 s leases these tests use.
import test, { type ExecutionContext } from 'ava';
import type { Cluster, Redis } from 'ioredis';
import { ClusterConsumer } from '../consumer/cluster/consumer.js';
import { clusterMetrics } from '../consumer/metrics/cluster.js';
import { createProducer } from '../producer/index.js';
import { createLogger } from '../shared/logger.js';
import { clusterQueueKey, slotKeys, slotOf } from '../shared/cluster.js';
import { isClusterNode } from '../shared/cluster-detect.js';
import { ExitCode } from '../shared/errors.js';
import { runCli, spawnCli } from './support/cli.js';
import { startCluster, type LocalCluster } from './support/redis-cluster.js';
import { startRedis, type RedisServer } from './support/redis-server.js';
import { eventually } from './support/wait.js';

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
  deadLetterSlots: number[];
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
): Promise<{ code: number | null; rows: { depth: number; deadLetters: number; lagEntries: number | null; state: string; shards: ShardRow[] }[] }> {
  const run = await runCli(['status', ...args, '--json']);
  return { code: run.code, rows: JSON.parse(run.stdout.join('\n')) };
}

test.serial('isClusterNode tells a cluster node from a standalone server', async (t) => {
  const [cluster, server] = await Promise.all([clusterFor(t, 1), serverFor(t)]);
  t.true(await isClusterNode({ port: cluster.masters[0].server.port }, 2000));
  t.false(await isClusterNode({ port: server.port }, 2000));
});

test.serial('status shows a cluster queue depth per source shard and in total, with no consumer', async (t) => {
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

test.serial("status with --replica shows how far each shard's slots are behind on the target", async (t) => {
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

test.serial('status shows shard leases and states, and a slot in trouble makes it exit as a halted queue does', async (t) => {
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

test.serial('on a cluster, status and limit refuse a queue db other than 0, each with one line, nothing changed', async (t) => {
  const cluster = await clusterFor(t, 3);
  for (const args of [['status'], ['limit', '--max-entries', '10']]) {
    const run = await runCli([...args, '--master', cluster.url, '--queue-db', '1']);
    t.is(run.code, ExitCode.usage, args[0]);
    t.deepEqual(run.stderr.length, 1, args[0]);
    t.regex(run.stderr[0], /--queue-db 1 .*Redis Cluster/, args[0]);
  }
  for (const m of cluster.masters) t.is(await m.admin.dbsize(), 0);
});

test.serial('dlq on a cluster acts on the dead letters of the hash slot --slot names, which status lists per shard', async (t) => {
  const cluster = await clusterFor(t, 3);
  const slot = slotOf('d');
  const owner = await cluster.ownerOf(slot);
  const dlqKey = slotKeys('qsync', 'default', slot).dlq;
  await owner.admin.rpush(dlqKey, 'not an entry');

  const { rows } = await status('--master', cluster.url);
  t.is(rows[0].deadLetters, 1);
  t.deepEqual(rows[0].shards.find((s) => s.node === owner.id)?.deadLetterSlots, [slot]);

  const without = await runCli(['dlq', 'list', '--master', cluster.url]);
  t.is(without.code, ExitCode.usage);
  t.is(without.stderr.length, 1);
  t.regex(without.stderr[0], /--slot N/);
  const bad = await runCli(['dlq', 'list', '--master', cluster.url, '--slot', '16384']);
  t.is(bad.code, ExitCode.usage);
  t.regex(bad.stderr.join('\n'), /--slot.*16384/);

  const list = await runCli(['dlq', 'list', '--master', cluster.url, '--slot', String(slot), '--json']);
  t.is(list.code, ExitCode.ok, list.stderr.join('\n'));
  t.like(JSON.parse(list.stdout.join('\n')), [{ seq: null }]);
  const drop = await runCli(['dlq', 'drop', '--garbage', '--master', cluster.url, '--slot', String(slot)]);
  t.is(drop.code, ExitCode.ok, drop.stderr.join('\n'));
  t.regex(drop.stdout.join('\n'), /dropped 1 dead letters/);
  t.is(await owner.admin.llen(dlqKey), 0);
});

interface VerifyOutput {
  keysChecked: number;
  differences: number;
  inFlight: number;
  examples: { key: string; kind: string; found?: string }[];
}

async function verify(source: string, target: string, ...extra: string[]): Promise<{ code: number | null; result: VerifyOutput }> {
  const run = await runCli(['verify', '--master', source, '--replica', target, '--json', ...extra], {}, 60_000);
  return { code: run.code, result: JSON.parse(run.stdout.join('\n')) };
}

/** The same application keys on both sides, written without the producer; qsync's own keys on each side differ and must be left out. */
async function sameData(source: Redis | Cluster, target: Redis | Cluster, count: number): Promise<void> {
  for (const side of [source, target]) {
    for (let i = 0; i < count; i++) await side.set(`user:${i}`, `name ${i}`);
    await side.hset('{g}:profile', 'a', '1', 'b', '2');
    await side.zadd('{g}:scores', 1, 'x', 2, 'y');
  }
  await source.hset(slotKeys('qsync', 'default', 42).meta, 'seq', 0);
  await target.hset(slotKeys('qsync', 'default', 42).applied, 'seq', 0);
  await source.hset(clusterQueueKey('qsync', 'default', 'shards'), 'node', 'c 1');
}

async function diverge(target: Redis | Cluster): Promise<void> {
  await target.set('user:3', 'changed');
  await target.del('user:7');
  await target.set('only-on-target', 'x');
}

const kinds = (r: VerifyOutput) => r.examples.map((d) => `${d.kind} ${d.key}`).sort();
const DIVERGED = ['missing-on-master only-on-target', 'missing-on-replica user:7', 'value user:3'];

test.serial('verify compares a 3-shard source cluster with a 2-shard target cluster, both ways, leaving qsync keys out', async (t) => {
  const [source, target] = await Promise.all([clusterFor(t, 3), clusterFor(t, 2)]);
  const [s, c] = [source.client(), target.client()];
  await sameData(s, c, 200);

  let run = await verify(source.url, target.url);
  t.is(run.code, ExitCode.ok);
  t.is(run.result.keysChecked, 202);
  t.is(run.result.differences, 0);

  await diverge(c);
  run = await verify(source.url, target.url);
  t.is(run.code, ExitCode.different);
  t.is(run.result.differences, 3);
  t.deepEqual(kinds(run.result), DIVERGED);
});

test.serial('verify compares a cluster with a standalone server, either way round', async (t) => {
  const [source, server] = await Promise.all([clusterFor(t, 3), serverFor(t)]);
  const s = source.client();
  const standalone = server.client();
  t.teardown(() => standalone.disconnect());
  await sameData(s, standalone, 100);
  t.is((await verify(source.url, server.url)).code, ExitCode.ok);

  await diverge(standalone);
  const run = await verify(source.url, server.url);
  t.is(run.code, ExitCode.different);
  t.deepEqual(kinds(run.result), DIVERGED);

  // A standalone source and a cluster target: the same keys, seen from the other side.
  const back = await verify(server.url, source.url);
  t.is(back.code, ExitCode.different);
  t.deepEqual(back.result.examples.map((d) => `${d.kind} ${d.key}`).sort(), [
    'missing-on-master user:7',
    'missing-on-replica only-on-target',
    'value user:3',
  ]);
});

test.serial('verify on a cluster tells an entry still queued in its slot from a difference', async (t) => {
  const [source, target] = await Promise.all([clusterFor(t, 3), clusterFor(t, 2)]);
  await writeInSlot(source, 'q', 1);
  await target.client().set('k:{z}:0', 'x');
  const run = await verify(source.url, target.url, '--drain-timeout-ms', '300');
  t.is(run.code, ExitCode.different);
  t.deepEqual(run.result.examples.map((d) => `${d.kind} ${d.found ?? ''} ${d.key}`).sort(), [
    'in-flight missing-on-replica k:{q}:0',
    'missing-on-master  k:{z}:0',
  ]);
});

test.serial('verify refuses the same cluster on both sides, and control jobs and recent mode on a cluster', async (t) => {
  const cluster = await clusterFor(t, 3);
  const other = `redis://127.0.0.1:${cluster.masters[1].server.port}`;
  const same = await runCli(['verify', '--master', cluster.url, '--replica', other]);
  t.is(same.code, ExitCode.usage);
  t.regex(same.stderr.join('\n'), /same Redis Cluster/);
  const job = await runCli(['verify', '--master', cluster.url, '--job']);
  t.is(job.code, ExitCode.clusterMode);
  t.is(job.stderr.length, 1);
  const standalone = await serverFor(t);
  const recent = await runCli(['verify', '--master', cluster.url, '--replica', standalone.url, '--mode', 'recent']);
  t.is(recent.code, ExitCode.clusterMode);
  t.is(recent.stderr.length, 1);
  t.regex(recent.stderr[0], /--mode recent/);
});

test.serial(
  'while qsync consume drains a 3-shard cluster into a 2-shard one, status and the consumer metrics show every shard held and caught up, and verify finds them equal',
  async (t) => {
    const [source, target] = await Promise.all([clusterFor(t, 3), clusterFor(t, 2)]);
    const producer = createProducer(source.client());
    for (let i = 0; i < 300; i++) await producer.set(`user:${i}`, `v${i}`);
    const consumer = spawnCli(['consume', '--master', source.url, '--replica', target.url, '--lease-ms', '1000', '--metrics-port', '0']);
    t.teardown(() => consumer.kill('SIGKILL'));
    const { port } = await consumer.waitForLog((l) => typeof l.port === 'number', 15_000, 'the metrics port');

    const caughtUp = await eventually(
      async () => {
        const run = await status('--master', source.url, '--replica', target.url);
        const [row] = run.rows;
        return row.depth === 0 && row.lagEntries === 0 && row.shards.every((s) => s.lease && ['streaming', 'idle'].includes(s.state))
          ? run
          : undefined;
      },
      60_000,
      'every shard held and the queue drained',
    );
    t.is(caughtUp.code, ExitCode.ok);
    t.is(new Set(caughtUp.rows[0].shards.map((s) => s.lease?.consumer)).size, 1);
    const scraped = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    t.regex(scraped, /^qsync_queue_depth\{queue="default"\} 0$/m);
    t.is(scraped.match(/^qsync_shard_queue_depth\{/gm)?.length, 3);

    const equal = await verify(source.url, target.url);
    t.is(equal.code, ExitCode.ok);
    t.is(equal.result.keysChecked, 300);
    consumer.kill('SIGKILL');
    await target.client().set('user:5', 'changed');
    const changed = await verify(source.url, target.url);
    t.is(changed.code, ExitCode.different);
    t.deepEqual(kinds(changed.result), ['value user:5']);
  },
);

test.serial(
  'the metrics of a consumer draining a cluster: depth per source shard and in total, shard states, entries applied per shard',
  async (t) => {
    const [source, target] = await Promise.all([clusterFor(t, 3), clusterFor(t, 2)]);
    const producer = createProducer(source.client());
    for (let i = 0; i < 90; i++) await producer.set(`user:${i}`, `v${i}`);
    const consumer = new ClusterConsumer({
      master: { host: '127.0.0.1', port: source.masters[0].server.port },
      replica: { host: '127.0.0.1', port: target.masters[0].server.port },
      logger: createLogger('silent'),
      leaseMs: 1000,
    });
    const metrics = clusterMetrics(
      consumer,
      { host: '127.0.0.1', port: source.masters[1].server.port },
      { prefix: 'qsync', queue: 'default', name: 'default' },
    );
    t.teardown(async () => {
      metrics.close();
      await consumer.close();
    });
    const value = (text: string, series: string) =>
      Number(new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);

    let text = await metrics.registry.metrics();
    t.is(value(text, 'qsync_queue_depth{queue="default"}'), 90);
    const shards = source.masters.map((m) => m.id);
    t.is(
      shards.reduce((a, id) => a + value(text, `qsync_shard_queue_depth{queue="default",shard="${id}"}`), 0),
      90,
    );

    await consumer.start();
    const held = (now: string, id: string) =>
      ['streaming', 'idle'].reduce((a, state) => a + value(now, `qsync_shard_state{queue="default",shard="${id}",state="${state}"}`), 0);
    text = await eventually(
      async () => {
        const now = await metrics.registry.metrics();
        return value(now, 'qsync_queue_depth{queue="default"}') === 0 && shards.every((id) => held(now, id) === 1) ? now : undefined;
      },
      30_000,
      'every shard held and every entry applied and trimmed',
    );
    // The counters are the consumer's own counts, in total and per shard.
    t.true(consumer.applied > 0);
    t.is(value(text, 'qsync_entries_applied_total{queue="default"}'), consumer.applied);
    for (const s of consumer.shards)
      t.is(value(text, `qsync_shard_entries_applied_total{queue="default",shard="${s.id}"}`), s.applied, `shard ${s.id}`);
  },
);

test.serial('status reads a slot while it migrates: the log already moved is read where it went', async (t) => {
  const cluster = await clusterFor(t, 3);
  const slot = await writeInSlot(cluster, 'a', 4);
  const from = await cluster.ownerOf(slot);
  const to = cluster.masters.find((m) => m !== from)!;
  await to.admin.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id);
  await from.admin.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id);
  const log = slotKeys('qsync', 'default', slot).log;
  await from.admin.call('MIGRATE', '127.0.0.1', to.server.port, log, 0, 5000);
  t.false(((await from.admin.call('CLUSTER', 'GETKEYSINSLOT', slot, 100)) as string[]).includes(log));

  const { code, rows } = await status('--master', cluster.url);
  t.is(code, ExitCode.ok);
  t.is(rows[0].depth, 4);
  t.is(rows[0].shards.find((s) => s.node === from.id)?.depth, 4);
});
