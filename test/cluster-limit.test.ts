/**
 * `qsync limit` on a Redis Cluster: the cap is per hash slot, set in every
 * slot's queue, obeyed by the cluster producer slot by slot; the usage is
 * shown per shard and in total; slots whose caps differ are reported as such.
 * Real 3-shard clusters, the CLI as users run it.
 */
// Serial: each test starts whole clusters (up to a dozen redis-server processes);
// run side by side on 2 cores they starve the 1 s leases these tests use.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createProducer, QueueFullError } from '../producer/index.js';
import { readClusterUsage, setClusterLimits } from '../consumer/cluster/limits.js';
import { openCluster } from '../consumer/cluster/shard-map.js';
import { slotKeys, slotOf, SLOTS } from '../shared/cluster.js';
import { ExitCode } from '../shared/errors.js';
import { runCli } from './support/cli.js';
import { startCluster, type LocalCluster } from './support/redis-cluster.js';

const PREFIX = 'qsync';

/** A queue of its own for each test. */
const newQueue = () => `q${randomBytes(4).toString('hex')}`;

let shared: LocalCluster;
test.before(async () => {
  shared = await startCluster({ masters: 3 });
});
test.after.always(async () => {
  await shared?.destroy();
});

function limit(cluster: LocalCluster, queue: string, ...args: string[]): ReturnType<typeof runCli> {
  return runCli(['limit', '--master', cluster.url, '--queue', queue, ...args]);
}

/** One field of every slot's meta hash, read on the master that owns the slot: value -> slots. */
async function metaField(cluster: LocalCluster, queue: string, field: string): Promise<Map<string | null, number>> {
  const counts = new Map<string | null, number>();
  const byOwner = new Map<Redis, number[]>();
  for (let slot = 0; slot < SLOTS; slot++) {
    const owner = (await ownerCache(cluster, slot)).admin;
    byOwner.set(owner, [...(byOwner.get(owner) ?? []), slot]);
  }
  for (const [admin, slots] of byOwner) {
    const pipeline = admin.pipeline();
    for (const slot of slots) pipeline.hget(slotKeys(PREFIX, queue, slot).meta, field);
    for (const [err, value] of (await pipeline.exec()) ?? []) {
      if (err) throw err;
      const v = value as string | null;
      counts.set(v, (counts.get(v) ?? 0) + 1);
    }
  }
  return counts;
}

/** The owner of each slot, read once per cluster (the tests that share a cluster move no slot). */
const owners = new WeakMap<LocalCluster, Map<number, Awaited<ReturnType<LocalCluster['ownerOf']>>>>();
async function ownerCache(cluster: LocalCluster, slot: number): Promise<Awaited<ReturnType<LocalCluster['ownerOf']>>> {
  if (!owners.has(cluster)) {
    const map = new Map<number, Awaited<ReturnType<LocalCluster['ownerOf']>>>();
    const ranges = (await cluster.masters[0].admin.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][];
    for (const [a, b, [, port]] of ranges) {
      const node = cluster.masters.find((m) => m.server.port === Number(port))!;
      for (let s = a; s <= b; s++) map.set(s, node);
    }
    owners.set(cluster, map);
  }
  return owners.get(cluster)!.get(slot)!;
}

/** Each shard's `queued` and `state` lines of the output, by the shard's address. */
function shardLines(stdout: string[]): Map<string, { queued: string; state: string }> {
  const out = new Map<string, { queued: string; state: string }>();
  stdout.forEach((line, i) => {
    const shard = /^ {2}shard (\S+)/.exec(line);
    if (shard) out.set(shard[1], { queued: stdout[i + 1].replace(/^ +queued +/, ''), state: stdout[i + 2].replace(/^ +state +/, '') });
  });
  return out;
}

/** The address of the master that owns a slot, as the output names it. */
const addressOf = async (cluster: LocalCluster, slot: number) => `127.0.0.1:${(await ownerCache(cluster, slot)).server.port}`;

test.serial(
  'qsync limit on a cluster sets the cap in every slot’s queue; a write to a slot at its cap fails with QueueFullError, other slots take writes; per shard totals match',
  async (t) => {
    const queue = newQueue();
    const set = await limit(shared, queue, '--max-entries', '3', '--max-bytes', '1mb');
    t.is(set.code, 0, set.stderr.join('\n'));
    t.deepEqual(await metaField(shared, queue, 'maxEntries'), new Map([['3', SLOTS]]), 'every slot has the cap');
    t.deepEqual(await metaField(shared, queue, 'maxBytes'), new Map([['1048576', SLOTS]]));
    t.regex(
      set.stdout.join('\n'),
      /^ {2}cap per slot {4}3 entries, 1 MiB; when full: reject {2}\(each of the 16384 slots' queues; no cap on the cluster as a whole\)$/m,
    );

    const db = createProducer(shared.client(), { queue });
    const writes: Record<string, number> = { a: 3, b: 2, c: 1, d: 3, e: 1 };
    for (const [tag, n] of Object.entries(writes)) for (let i = 0; i < n; i++) await db.set(`k:{${tag}}:${i}`, 'v');
    await t.throwsAsync(db.set('k:{a}:over', 'v'), { instanceOf: QueueFullError }, 'slot a is at its cap');
    t.is(await db.get('k:{a}:over'), null, 'nothing written');
    t.is(await db.set('k:{b}:more', 'v'), 'OK', 'another slot still takes writes');
    writes.b++;

    const expected = new Map<string, { entries: number; full: number; slots: number }>();
    for (const m of shared.masters) expected.set(`127.0.0.1:${m.server.port}`, { entries: 0, full: 0, slots: 0 });
    for (let slot = 0; slot < SLOTS; slot++) expected.get(await addressOf(shared, slot))!.slots++;
    for (const [tag, n] of Object.entries(writes)) {
      const e = expected.get(await addressOf(shared, slotOf(tag)))!;
      e.entries += n;
      if (n >= 3) e.full++;
    }
    const shown = await limit(shared, queue);
    t.is(shown.code, 0, shown.stderr.join('\n'));
    const shards = shardLines(shown.stdout);
    t.is(shards.size, 3);
    for (const [address, e] of expected) {
      t.regex(shards.get(address)?.queued ?? '', new RegExp(`^${e.entries} entries, \\d+ B; ${e.full} of ${e.slots} slots full$`), address);
    }
    t.regex(shown.stdout.join('\n'), /^ {2}queued {10}11 entries, \d+ B; 3 of 16384 slots full$/m);
    t.regex(shown.stdout.join('\n'), /^ {2}state {11}ok$/m);
    t.notRegex(shown.stdout.join('\n'), /differ/);

    const cleared = await limit(shared, queue, '--clear');
    t.is(cleared.code, 0);
    t.deepEqual(await metaField(shared, queue, 'maxEntries'), new Map([[null, SLOTS]]));
    t.is(await db.set('k:{a}:over', 'v'), 'OK', 'no cap: the write is queued');
  },
);

test.serial(
  'mark-dirty on a cluster: writes to a full slot run unqueued, dirty keys show per shard and in total, and --clear-repair brings every slot back',
  async (t) => {
    const queue = newQueue();
    const set = await limit(shared, queue, '--max-entries', '1', '--policy', 'mark-dirty', '--max-dirty', '2');
    t.is(set.code, 0, set.stderr.join('\n'));
    t.regex(set.stdout.join('\n'), /^ {2}max dirty {7}2 keys per slot$/m);
    const db = createProducer(shared.client(), { queue });
    // Slot a: one entry queued, then three keys unqueued (more than --max-dirty 2: resync-needed); slot b: one queued, one unqueued.
    for (const key of ['k:{a}:0', 'k:{a}:1', 'k:{a}:2', 'k:{a}:3', 'k:{b}:0', 'k:{b}:1']) t.is(await db.set(key, 'v'), 'OK');
    const [a, b] = [slotOf('a'), slotOf('b')];
    const ownerA = (await ownerCache(shared, a)).admin;
    const ownerB = (await ownerCache(shared, b)).admin;
    t.is(await ownerA.llen(slotKeys(PREFIX, queue, a).log), 1);
    t.is(await ownerA.hget(slotKeys(PREFIX, queue, a).meta, 'state'), 'resync-needed');
    t.is(await ownerB.hget(slotKeys(PREFIX, queue, b).meta, 'state'), 'repair-needed');
    t.deepEqual(await ownerB.smembers(slotKeys(PREFIX, queue, b).dirty), ['0:k:{b}:1']);

    const shown = await limit(shared, queue);
    const text = shown.stdout.join('\n');
    t.regex(text, /^ {2}queued {10}2 entries, \d+ B; 2 of 16384 slots full$/m);
    t.regex(text, /^ {2}state {11}1 slot repair-needed, 1 slot resync-needed \(too many keys to repair\), 3 dirty keys$/m);
    const trouble = new Map<string, number[]>();
    for (const slot of [a, b].sort((x, y) => x - y)) {
      const address = await addressOf(shared, slot);
      trouble.set(address, [...(trouble.get(address) ?? []), slot]);
    }
    for (const [address, { state }] of shardLines(shown.stdout)) {
      const slots = trouble.get(address);
      if (slots) t.regex(state, new RegExp(`dirty keys {2}\\(slots? ${slots.join(', ')}\\)$`), address);
      else t.is(state, 'ok', address);
    }

    const cleared = await limit(shared, queue, '--clear-repair', '--max-entries', '10');
    t.is(cleared.code, 0, cleared.stderr.join('\n'));
    t.regex(cleared.stdout.join('\n'), /^ {2}state {11}ok$/m);
    t.deepEqual(await metaField(shared, queue, 'state'), new Map([[null, SLOTS]]));
    t.is(await ownerA.exists(slotKeys(PREFIX, queue, a).dirty), 0);
    t.is(await ownerB.exists(slotKeys(PREFIX, queue, b).dirty), 0);
    await db.set('k:{a}:again', 'v');
    t.is(await ownerA.llen(slotKeys(PREFIX, queue, a).log), 2, 'writes are queued again');
  },
);

test.serial('on a cluster, --policy detach-slowest exits 13 and bad values exit 2, each with one line, nothing changed', async (t) => {
  const queue = newQueue();
  t.is((await limit(shared, queue, '--max-entries', '7')).code, 0);
  const before = await metaField(shared, queue, 'policy');
  const detach = await limit(shared, queue, '--max-entries', '5', '--policy', 'detach-slowest');
  t.is(detach.code, ExitCode.clusterMode);
  t.deepEqual(detach.stderr, [
    `qsync: limit --policy detach-slowest does not work on a Redis Cluster (--master ${shared.url} is a cluster node): it detaches a replica of the replicas registry, which a cluster does not have; nothing changed`,
  ]);
  const bad: [string[], RegExp][] = [
    [['--max-entries', '-1'], /^qsync: --max-entries must be a whole number from 0 to \d+, got '-1'$/],
    [['--max-bytes', '12xb'], /^qsync: --max-bytes must be a whole number of bytes, optionally with a unit .*, got '12xb'$/],
    [['--policy', 'drop'], /^qsync: --policy must be one of reject, mark-dirty, detach-slowest, got 'drop'$/],
    [['--max-dirty', '0'], /^qsync: --max-dirty must be a whole number from 1/],
    [['--clear', '--max-entries', '5'], /^qsync: --clear removes every cap/],
  ];
  const runs = await Promise.all(bad.map(([args]) => limit(shared, queue, ...args)));
  runs.forEach((run, i) => {
    t.is(run.code, ExitCode.usage, bad[i][0].join(' '));
    t.is(run.stderr.length, 1, run.stderr.join('\n'));
    t.regex(run.stderr[0] ?? '', bad[i][1]);
  });
  t.deepEqual(await metaField(shared, queue, 'maxEntries'), new Map([['7', SLOTS]]), 'every slot keeps its cap');
  t.deepEqual(await metaField(shared, queue, 'policy'), before);
});

test.serial(
  'a slot whose cap was changed by hand is reported as differing, and limit again with the same flags makes every slot equal',
  async (t) => {
    const queue = newQueue();
    t.is((await limit(shared, queue, '--max-entries', '100')).code, 0);
    const slot = slotOf('odd');
    await (await ownerCache(shared, slot)).admin.hset(slotKeys(PREFIX, queue, slot).meta, 'maxEntries', '7');

    const shown = await limit(shared, queue);
    t.is(shown.code, 0);
    const text = shown.stdout.join('\n');
    t.regex(text, /^ {2}caps differ between slots: 2 caps among 16384 slots; qsync limit again with the flags wanted gives every slot the same$/m);
    t.regex(text, /^ {4}16383 slots {3}100 entries; when full: reject; max dirty 100000$/m);
    t.regex(text, new RegExp(`^ {4}1 slot {8}7 entries; when full: reject; max dirty 100000 {2}\\(slot ${slot}\\)$`, 'm'));
    t.notRegex(text, /cap per slot/, 'no one cap shown as the cluster’s');

    const again = await limit(shared, queue, '--max-entries', '100');
    t.regex(again.stdout.join('\n'), /^ {2}cap per slot {4}100 entries; when full: reject/m);
    t.notRegex(again.stdout.join('\n'), /differ/);
    t.deepEqual(await metaField(shared, queue, 'maxEntries'), new Map([['100', SLOTS]]));
  },
);

test.serial('a change reaches a slot that moved since the slot map was read (MOVED) and one that is moving (ASK)', async (t) => {
  const cluster = await startCluster({ masters: 2 });
  t.teardown(() => cluster.destroy());
  const queue = newQueue();
  const [from, to] = cluster.masters;
  const [moved, moving] = [0, 1];
  const side = await openCluster({ host: '127.0.0.1', port: from.server.port }, 'master', cluster.url);
  t.teardown(() => side.close());
  await cluster.migrate(from, to, [moved]);
  await to.admin.call('CLUSTER', 'SETSLOT', moving, 'IMPORTING', from.id);
  await from.admin.call('CLUSTER', 'SETSLOT', moving, 'MIGRATING', to.id);

  await setClusterLimits(side, PREFIX, queue, { maxEntries: 9 });
  t.is(await to.admin.hget(slotKeys(PREFIX, queue, moved).meta, 'maxEntries'), '9');
  const asked = await to.admin
    .pipeline()
    .call('ASKING')
    .hget(slotKeys(PREFIX, queue, moving).meta, 'maxEntries')
    .exec();
  t.deepEqual(asked?.[1], [null, '9'], 'the moving slot got it on the master it moves to');
  const usage = await readClusterUsage(side, PREFIX, queue);
  t.is(usage.caps.length, 1, 'every slot read, the moved and the moving one from the new master');
  t.is(usage.caps[0].limits.maxEntries, 9);
  t.is(usage.caps[0].slots.length, SLOTS);
});
