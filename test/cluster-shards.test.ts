/**
 * Three `qsync consume` processes for one 3-shard source cluster share its
 * shards, one lease each; SIGKILL one and its shard moves to the others once
 * its lease runs out, while a workload goes on: the target ends with every
 * counter exact.
 */
import test from 'ava';
import { createProducer } from '../producer/index.js';
import { clusterQueueKey } from '../shared/cluster.js';
import { spawnCli, type CliProcess } from './support/cli.js';
import { liveShardLeases, startCluster } from './support/redis-cluster.js';
import { startRedis } from './support/redis-server.js';
import { eventually } from './support/wait.js';

const SHARDS_KEY = clusterQueueKey('qsync', 'default', 'shards');
const LEASE_MS = 2000;
/** How long past a lease a dead consumer's shard may take to move: a few balance rounds, on a busy machine. */
const MARGIN_MS = 10_000;

test('three consume processes hold one shard each; a SIGKILLed one’s shard moves to the others and every INCR reaches the target once', async (t) => {
  const source = await startCluster({ masters: 3 });
  t.teardown(() => source.destroy());
  const target = await startRedis();
  t.teardown(() => target.destroy());
  const admin = source.client();
  const shardIds = source.masters.map((m) => m.id).sort();

  const leases = () => liveShardLeases(admin, SHARDS_KEY);

  const processes: CliProcess[] = Array.from({ length: 3 }, () =>
    spawnCli(['consume', '--master', source.url, '--replica', target.url, '--lease-ms', String(LEASE_MS), '--log-level', 'info']),
  );
  t.teardown(async () => {
    for (const p of processes) p.kill('SIGKILL');
    await Promise.all(processes.map((p) => p.exited));
  });
  /** The consumer id a process logs its records with. */
  const consumerIds = await Promise.all(
    processes.map(async (p) => String((await p.waitForLog((l) => typeof l.consumer === 'string', 20_000, 'a record naming the consumer')).consumer)),
  );

  // Counters in slots of every shard, written through the cluster producer the whole time.
  const producer = createProducer(source.client());
  const keys = Array.from({ length: 120 }, (_, i) => `counter:${i}`);
  const written = new Map<string, number>();
  let writing = true;
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      const key = keys[i % keys.length];
      await producer.incr(key);
      written.set(key, (written.get(key) ?? 0) + 1);
      if (i % keys.length === keys.length - 1) await new Promise((r) => setTimeout(r, 20));
    }
  })();

  const shared = await eventually(
    async () => {
      const live = await leases();
      const holders = [...live.values()].sort();
      return live.size === 3 && new Set(holders).size === 3 ? live : undefined;
    },
    30_000,
    'each of the three consumers to hold one shard lease',
    100,
  );
  t.deepEqual([...shared.keys()].sort(), shardIds);
  t.deepEqual([...shared.values()].sort(), [...consumerIds].sort(), 'the holders are the three processes');

  const victim = 1;
  const [victimShard] = [...shared].find(([, consumer]) => consumer === consumerIds[victim])!;
  processes[victim].kill('SIGKILL');
  t.is((await processes[victim].exited).signal, 'SIGKILL');
  const survivors = consumerIds.filter((_, i) => i !== victim);
  const after = await eventually(
    async () => {
      const live = await leases();
      const holder = live.get(victimShard);
      return live.size === 3 && holder !== undefined && survivors.includes(holder) ? live : undefined;
    },
    LEASE_MS + MARGIN_MS,
    `shard ${victimShard} of the killed consumer to move to another one`,
    100,
  );
  const perSurvivor = survivors.map((id) => [...after.values()].filter((c) => c === id).length).sort();
  t.deepEqual(perSurvivor, [1, 2], 'the survivors hold two shards and one');

  await new Promise((r) => setTimeout(r, 500));
  writing = false;
  await writer;
  const replica = target.client();
  const expected = keys.map((k) => String(written.get(k) ?? 0));
  t.true(
    expected.every((n) => Number(n) > 0),
    'every counter was written',
  );
  await eventually(
    async () => {
      const got = await Promise.all(keys.map((k) => replica.get(k)));
      return got.every((v, i) => (v ?? '0') === expected[i]) || undefined;
    },
    30_000,
    'every counter on the target',
    100,
  );
  // Anything applied twice would show after a while longer.
  await new Promise((r) => setTimeout(r, LEASE_MS));
  t.deepEqual(await Promise.all(keys.map((k) => admin.get(k))), expected, 'the source has every INCR once');
  t.deepEqual(await Promise.all(keys.map((k) => replica.get(k))), expected, 'the target has every INCR once');
});
