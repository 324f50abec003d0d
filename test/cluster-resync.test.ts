/**
 * qsync resync and qsync repair with a Redis Cluster source: each hash
 * slot's queue rebuilt (or repaired) on its own under its lease, onto a
 * cluster of another shape or a standalone server, while the cluster
 * producer keeps writing; the cluster consumer then goes on from each slot's
 * last entry, verify finds both sides equal and a counter written during the
 * resync holds every INCR once.
 */
// Serial: each test starts whole clusters (up to a dozen redis-server processes);
// run side by side on 2 cores they starve the 1 s leases these tests use.
import test, { type ExecutionContext } from 'ava';
import type { Cluster, Redis } from 'ioredis';
import { ClusterConsumer } from '../consumer/cluster/consumer.js';
import { createProducer } from '../producer/index.js';
import { slotKeys, slotOf } from '../shared/cluster.js';
import { ExitCode } from '../shared/errors.js';
import { aclRules } from '../shared/acl.js';
import { createLogger } from '../shared/logger.js';
import { runCli, spawnCli } from './support/cli.js';
import { startCluster, type LocalCluster } from './support/redis-cluster.js';
import { startRedis } from './support/redis-server.js';
import { eventually } from './support/wait.js';

async function clusterFor(t: ExecutionContext, masters: number): Promise<LocalCluster> {
  const cluster = await startCluster({ masters });
  t.teardown(() => cluster.destroy());
  return cluster;
}

/** Keys of every type in many slots, and groups sharing a hash tag. */
async function fill(producer: Cluster, n: number): Promise<void> {
  const writes: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const kind = i % 5;
    if (kind === 0) writes.push(producer.set(`s:${i}`, `v${i}`));
    if (kind === 1) writes.push(producer.hset(`h:${i}`, 'a', i, 'b', 'x'));
    if (kind === 2) writes.push(producer.sadd(`set:${i}`, 'a', 'b', String(i)));
    if (kind === 3) writes.push(producer.zadd(`z:${i}`, i, 'm', 1, 'n'));
    if (kind === 4) writes.push(producer.rpush(`l:${i}`, 'a', 'b'));
    if (i % 50 === 0) writes.push(producer.set(`{g${i}}:a`, 'a'), producer.set(`{g${i}}:b`, 'b'), producer.pexpire(`s:${i}`, 600_000));
    if (writes.length >= 200) await Promise.all(writes.splice(0));
  }
  await Promise.all(writes);
  // Big keys (over --big-members below): copied in chunks from a snapshot on the source.
  const members = Array.from({ length: 300 }, (_, i) => [`f${i}`, String(i)]).flat();
  await producer.hset('{g0}:big', ...members);
  await producer.hset('big', ...members);
}

/**
 * Writes through the cluster producer until stopped: INCRs of one counter
 * (and of counters in tagged groups), SETs over the filled keys, and RENAMEs
 * within tagged groups (multi-key commands whose keys may be copied at
 * different times). Resolves with the counter's INCR count.
 */
function writeOn(producer: Cluster): { stop(): Promise<number> } {
  let stopped = false;
  let incrs = 0;
  const run = (async () => {
    for (let i = 0; !stopped; i++) {
      await producer.incr('counter');
      incrs++;
      await producer.set(`s:${(i * 5) % 2000}`, `w${i}`);
      await producer.incr(`{g${(i % 20) * 50}}:n`);
      await producer.hset(i % 2 ? 'big' : '{g0}:big', `f${i % 300}`, `w${i}`);
      if (i % 7 === 0) await producer.rename(`{g${(i % 20) * 50}}:a`, `{g${(i % 20) * 50}}:a2`).catch(() => {});
      if (i % 7 === 3) await producer.rename(`{g${(i % 20) * 50}}:a2`, `{g${(i % 20) * 50}}:a`).catch(() => {});
    }
  })();
  // stop() reports a failed write; a test that fails before stopping it leaves nothing unhandled.
  run.catch(() => {});
  return {
    async stop() {
      stopped = true;
      await run;
      return incrs;
    },
  };
}

function consumerOf(source: LocalCluster, target: { host: string; port: number }): ClusterConsumer {
  return new ClusterConsumer({
    master: { host: '127.0.0.1', port: source.masters[0].server.port },
    replica: target,
    logger: createLogger(process.env.QSYNC_TEST_LOGS ? 'info' : 'silent'),
    leaseMs: 1000,
    timeoutMs: 2000,
    recheckMs: 200,
    backoff: { minMs: 20, maxMs: 200 },
  });
}

/** verify --mode full's JSON, once the consumer caught up (verify settles what is still queued). */
async function verifyEqual(t: ExecutionContext, source: string, target: string): Promise<void> {
  const run = await runCli(['verify', '--master', source, '--replica', target, '--json', '--drain-timeout-ms', '20000'], {}, 90_000);
  const result = JSON.parse(run.stdout.join('\n')) as { differences: number; examples: unknown[] };
  t.is(run.code, ExitCode.ok, JSON.stringify(result.examples));
  t.is(result.differences, 0);
}

/** Resyncs `target` from a filled 3-shard source while writers write, then drains with the cluster consumer; checks exactness. */
async function resyncWhileWriting(
  t: ExecutionContext,
  target: { url: string; host: string; port: number; read: Redis | Cluster; nodes: Redis[] },
  junk: (source: LocalCluster) => Promise<string[]>,
): Promise<void> {
  const source = await clusterFor(t, 3);
  const producer = createProducer(source.client());
  await fill(producer, 2000);
  const junkKeys = await junk(source);
  const writer = writeOn(producer);
  await eventually(async () => Number(await producer.get('counter')) > 50 || undefined, 20_000, 'writes under way');
  // Run as the documented operator users (ACLs are per node): nothing refused on any node.
  const sources = source.masters.map((m) => m.admin);
  for (const [nodes, rules] of [
    [sources, aclRules('operator-master')],
    [target.nodes, aclRules('operator-replica')],
  ] as const)
    for (const node of nodes) await node.call('ACL', 'SETUSER', 'qsync-operator', 'on', '>o-secret', ...rules);
  const as = (url: string) => url.replace('redis://', 'redis://qsync-operator:o-secret@');
  const run = await runCli(
    ['resync', '--master', as(source.url), '--replica', as(target.url), '--scan-count', '50', '--big-members', '100', '--chunk', '40'],
    {},
    120_000,
  );
  t.is(run.code, ExitCode.ok, run.stderr.join('\n'));
  for (const node of [...sources, ...target.nodes]) t.deepEqual(await node.call('ACL', 'LOG'), [], 'no command or key refused');
  t.regex(run.stdout.join('\n'), /^resync: copied \d+ keys, replayed \d+ entries in [\d.]+ s, \d+ hash slots \(127\.0\.0\.1:\d+ \d+ slots/m);
  const incrs = await writer.stop();
  t.true(incrs > 50);

  const consumer = consumerOf(source, target);
  t.teardown(() => consumer.close());
  await consumer.start();
  await eventually(async () => Number(await target.read.get('counter')) === incrs || undefined, 60_000, `counter at ${incrs} on the target`);
  await verifyEqual(t, source.url, target.url);
  t.is(Number(await target.read.get('counter')), incrs, 'every INCR applied once');
  for (const key of junkKeys) t.is(await target.read.exists(key), 0, `${key} is gone`);
}

test.serial(
  'a 3-shard source with writers on is resynced onto a 2-shard cluster: equal after the consumer runs, every INCR once, the junk gone',
  async (t) => {
    const target = await clusterFor(t, 2);
    const read = target.client();
    const junk = ['junk:1', 'junk:2', '{g0}:junk', 'only:target'];
    for (const key of junk) await read.set(key, 'junk');
    const nodes = target.masters.map((m) => m.admin);
    await resyncWhileWriting(t, { url: target.url, host: '127.0.0.1', port: target.masters[0].server.port, read, nodes }, async (source) => {
      // A stale watermark in a slot the source never wrote: forgotten.
      const client = source.client();
      let slot = 0;
      while ((await client.call('CLUSTER', 'COUNTKEYSINSLOT', slot)) !== 0) slot++;
      const stale = slotKeys('qsync', 'default', slot).applied;
      await read.hset(stale, 'seq', 99);
      return [...junk, stale];
    });
  },
);

test.serial('a 3-shard source with writers on is resynced onto a standalone server: equal after the consumer runs, every INCR once', async (t) => {
  const server = await startRedis();
  t.teardown(() => server.destroy());
  const read = server.client();
  await read.set('junk', 'x');
  await resyncWhileWriting(t, { url: server.url, host: server.host, port: server.port, read, nodes: [server.client()] }, async () => ['junk']);
});

test.serial('a cluster resync killed midway leaves its unfinished slots marked, and running it again makes the target exact', async (t) => {
  const [source, target] = await Promise.all([clusterFor(t, 2), clusterFor(t, 1)]);
  const producer = createProducer(source.client());
  await fill(producer, 1500);
  const writer = writeOn(producer);
  const args = ['resync', '--master', source.url, '--replica', target.url, '--lease-ms', '1000', '--scan-count', '1'];
  const first = spawnCli(args);
  t.teardown(() => first.kill('SIGKILL'));
  await first.waitForLog((l) => l.msg === 'resync progress' && Number(l.copied) > 0, 30_000, 'copy under way');
  first.kill('SIGKILL');
  t.is((await first.exited).code, null, 'killed before it finished');
  const node = target.masters[0].admin;
  const marked = [];
  for (const key of await node.keys('qsync:*:applied')) if (await node.hget(key, 'resyncing')) marked.push(key);
  t.true(marked.length > 0, 'unfinished slots are marked');

  // The killed run's slot leases expire (--lease-ms 1000); until then the run refuses to start.
  let again = await runCli(args, {}, 120_000);
  await eventually(
    async () => {
      if (again.code !== ExitCode.ok) again = await runCli(args, {}, 120_000);
      return again.code === ExitCode.ok || undefined;
    },
    20_000,
    'the second resync',
  );
  t.regex(again.stdout.join('\n'), /^resync: copied \d+ keys/m);
  const incrs = await writer.stop();
  const consumer = consumerOf(source, { host: '127.0.0.1', port: target.masters[0].server.port });
  t.teardown(() => consumer.close());
  await consumer.start();
  await eventually(async () => Number(await node.get('counter')) === incrs || undefined, 60_000, `counter at ${incrs} on the target`);
  await verifyEqual(t, source.url, target.url);
});

/** Every key of the nodes with its value and expiry: what a refused run must leave as it was. */
async function snapshot(nodes: Redis[]): Promise<string[]> {
  const rows: string[] = [];
  for (const node of nodes)
    for (const key of (await node.keys('*')).sort())
      rows.push(`${key} ${(await node.dumpBuffer(key))?.toString('hex')} ${await node.pexpiretime(key)}`);
  return rows;
}

test.serial('a resync while a cluster consumer runs fails in one line, changing nothing', async (t) => {
  const [source, target] = await Promise.all([clusterFor(t, 2), clusterFor(t, 1)]);
  const producer = createProducer(source.client());
  await fill(producer, 200);
  const consumer = consumerOf(source, { host: '127.0.0.1', port: target.masters[0].server.port });
  t.teardown(() => consumer.close());
  await consumer.start();
  const nodes = [...source.masters, ...target.masters].map((m) => m.admin);
  const logs = async () => (await Promise.all(nodes.map((n) => n.keys('qsync:*:log')))).flat().length;
  await eventually(async () => (await logs()) === 0 || undefined, 20_000, 'drained');
  const before = await snapshot(nodes);
  const run = await runCli(['resync', '--master', source.url, '--replica', target.url]);
  t.is(run.code, ExitCode.resyncNeeded);
  t.is(run.stderr.length, 1, run.stderr.join('\n'));
  t.regex(run.stderr[0], /^qsync: resync: .*consumer.*; stop (it|them) first/);
  // Leases and heartbeats go on renewing: compare the application keys and the watermarks.
  const settled = (rows: string[]) => rows.filter((r) => !/:(lease|status|consumers|shards|shard-status)\b/.test(r));
  t.deepEqual(settled(await snapshot(nodes)), settled(before));
});

test.serial(
  'repair on a cluster: a slot over its cap under mark-dirty runs writes unqueued, qsync repair copies them, the consumer goes on',
  async (t) => {
    const [source, server] = await Promise.all([clusterFor(t, 2), startRedis()]);
    t.teardown(() => server.destroy());
    const producer = createProducer(source.client());
    await fill(producer, 300);
    const target = { host: server.host, port: server.port };
    const first = consumerOf(source, target);
    await first.start();
    const read = server.client();
    await eventually(async () => (await read.get('s:0')) === 'v0' || undefined, 20_000, 'first drain');
    await verifyEqual(t, source.url, server.url);
    await first.close();

    // The slot of tag 'r' capped at 3 entries under mark-dirty, as qsync limit sets it.
    const slot = slotOf('r');
    const meta = slotKeys('qsync', 'default', slot).meta;
    const owner = await source.ownerOf(slot);
    await owner.admin.hset(meta, 'maxEntries', 3, 'policy', 'mark-dirty');
    for (let i = 0; i < 20; i++) await producer.incr(`{r}:n${i % 4}`);
    t.is(await owner.admin.hget(meta, 'state'), 'repair-needed');
    await owner.admin.hdel(meta, 'maxEntries', 'policy');

    const run = await runCli(['repair', '--master', source.url, '--replica', server.url]);
    t.is(run.code, ExitCode.ok, run.stderr.join('\n'));
    t.regex(run.stdout.join('\n'), /^repair: copied \d+ keys \(\d+ dirty\), .* 1 hash slots/m);
    t.is(await owner.admin.hget(meta, 'state'), null);

    const again = consumerOf(source, target);
    t.teardown(() => again.close());
    await again.start();
    for (let i = 0; i < 4; i++) await producer.incr(`{r}:n${i}`);
    await eventually(async () => (await read.get('{r}:n3')) === '6' || undefined, 20_000, 'the repaired slot streams again');
    await verifyEqual(t, source.url, server.url);
    t.deepEqual(await Promise.all([0, 1, 2, 3].map((i) => read.get(`{r}:n${i}`))), ['6', '6', '6', '6']);

    const nothing = await runCli(['repair', '--master', source.url, '--replica', server.url]);
    t.is(nothing.code, ExitCode.repairNeeded, 'a consumer runs');
    t.regex(nothing.stderr[0] ?? '', /^qsync: repair: .*stop them first/);
    await again.close();
    const idle = await runCli(['repair', '--master', source.url, '--replica', server.url]);
    t.is(idle.code, ExitCode.ok);
    t.regex(idle.stdout.join('\n'), /nothing to repair/);
  },
);

test.serial(
  'on a cluster, --method replication, --job and a standalone master with a cluster replica are refused in one line, nothing changed; a slot that needs a resync fails the repair, named',
  async (t) => {
    const [cluster, server] = await Promise.all([clusterFor(t, 1), startRedis()]);
    t.teardown(() => server.destroy());
    await createProducer(cluster.client()).set('k', 'v');
    const nodes = [cluster.masters[0].admin, server.client()];
    const before = await snapshot(nodes);
    const runs: [string[], RegExp][] = [
      [['resync', '--master', cluster.url, '--replica', server.url, '--method', 'replication'], /--method replication cannot serve a Redis Cluster/],
      [['resync', '--master', cluster.url, '--replica', server.url, '--job'], /--job runs the resync inside a standalone queue's consumer/],
      [['repair', '--master', cluster.url, '--replica', server.url, '--job'], /--job runs the repair inside a standalone queue's consumer/],
      [['resync', '--master', server.url, '--replica', cluster.url], /is a Redis Cluster node but --master \S+ is a standalone server/],
      [['repair', '--master', server.url, '--replica', cluster.url], /is a Redis Cluster node but --master \S+ is a standalone server/],
    ];
    for (const [args, message] of runs) {
      const run = await runCli(args);
      t.is(run.code, ExitCode.usage, `${args.join(' ')}: ${run.stderr.join('\n')}`);
      t.is(run.stderr.length, 1, args.join(' '));
      t.regex(run.stderr[0] ?? '', message);
    }
    t.deepEqual(await snapshot(nodes), before);

    // A slot whose dirty keys overflowed needs a resync: the repair names it.
    const slot = slotOf('k');
    await cluster.masters[0].admin.hset(slotKeys('qsync', 'default', slot).meta, 'state', 'resync-needed');
    const repair = await runCli(['repair', '--master', cluster.url, '--replica', server.url]);
    t.is(repair.code, ExitCode.resyncNeeded);
    t.is(repair.stderr.length, 1, repair.stderr.join('\n'));
    t.regex(repair.stderr[0] ?? '', new RegExp(`^qsync: repair: slot ${slot}: .*; rebuild the replica with qsync resync$`));
  },
);
