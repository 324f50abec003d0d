/**
 * Sentinel on either side: a master or a replica given as a Sentinel-managed
 * group (`redis+sentinel://host:port,.../mymaster`), real `redis-server
 * --sentinel` processes and failovers inside the group. The consumer
 * follows the group's current master; a failover that lost writes the
 * remote replica had applied is reported with what diverged and repaired
 * by copying only those keys.
 */
import test, { type ExecutionContext } from 'ava';
import { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { SyncWorker } from '../consumer/drain/worker.js';
import { redisOptionsFromUrl } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { QueueKeys } from '../shared/keys.js';
import { startRedis, type RedisServer } from './support/redis-server.js';
import { datasetDiff, waitForDrain } from './support/fixtures.js';
import { startSentinelGroup, type SentinelGroup } from './support/sentinel.js';
import { runCli } from './support/cli.js';
import { eventually } from './support/wait.js';

const keys = new QueueKeys('qsync', 'default');

async function group(t: ExecutionContext): Promise<SentinelGroup> {
  const g = await startSentinelGroup();
  t.teardown(() => g.destroy());
  return g;
}

async function server(t: ExecutionContext): Promise<RedisServer> {
  const s = await startRedis();
  t.teardown(() => s.destroy());
  return s;
}

/** A worker between two URLs, as `qsync consume` opens them. */
function worker(t: ExecutionContext, masterUrl: string, replicaUrl: string): SyncWorker {
  const w = new SyncWorker({
    master: redisOptionsFromUrl(masterUrl, '--master'),
    replica: redisOptionsFromUrl(replicaUrl, '--replica'),
    logger: createLogger('silent'),
    leaseMs: 1000,
    timeoutMs: 2000,
    recheckMs: 200,
    backoff: { minMs: 20, maxMs: 200 },
  }).start();
  t.teardown(() => w.close());
  return w;
}

/** A client of the group's current master, through the sentinels, as an application opens it. */
function sentinelClient(t: ExecutionContext, g: SentinelGroup): Redis {
  const c = new Redis({ ...g.options, maxRetriesPerRequest: 20, retryStrategy: () => 100, sentinelRetryStrategy: () => 100 });
  c.on('error', () => {});
  t.teardown(() => c.disconnect());
  return c;
}

/** INCRs counters `prefix:0..n-1` `times` times each through the producer; returns what each must read. */
async function count(producer: Redis, prefix: string, n: number, times: number, expected: Map<string, number>): Promise<void> {
  for (let round = 0; round < times; round++) {
    for (let i = 0; i < n; i++) {
      await producer.incr(`${prefix}:${i}`);
      expected.set(`${prefix}:${i}`, (expected.get(`${prefix}:${i}`) ?? 0) + 1);
    }
  }
}

async function counters(client: Redis, expected: Map<string, number>): Promise<Record<string, number>> {
  const names = [...expected.keys()];
  const values = names.length ? await client.mget(...names) : [];
  return Object.fromEntries(names.map((k, i) => [k, Number(values[i] ?? 0)]));
}

test('a Sentinel failover on the master side that lost nothing: the consumer follows the new master, every write applied once', async (t) => {
  const [g, remote] = await Promise.all([group(t), server(t)]);
  const producer = createProducer(sentinelClient(t, g));
  const expected = new Map<string, number>();
  const w = worker(t, g.url, remote.url);
  await count(producer, 'c', 20, 5, expected);
  const old = await g.master();
  await waitForDrain(old.client(), remote.client());
  t.is(w.servers.master, `127.0.0.1:${old.port}`);

  // Everything reached the local replica; then the master dies.
  await old.client().wait(1, 5000);
  const next = await g.killMaster();
  await count(producer, 'c', 20, 5, expected);

  await waitForDrain(next.client(), remote.client());
  await eventually(() => w.servers.master === `127.0.0.1:${next.port}`, 5000, 'the consumer on the new master');
  t.deepEqual(await counters(remote.client(), expected), Object.fromEntries(expected));
  t.deepEqual(await datasetDiff(next, remote), []);
  const status = await next.client().hgetall(keys.status);
  t.is(status.masterNode, `127.0.0.1:${next.port}`);
  t.is(w.state === 'streaming' || w.state === 'idle', true, w.state);
});

test('a Sentinel failover that lost writes the replica had applied is reported with what diverged, and repaired by copying only those keys', async (t) => {
  const [g, remote] = await Promise.all([group(t), server(t)]);
  const producer = createProducer(sentinelClient(t, g));
  const expected = new Map<string, number>();
  const old = await g.master();
  const local = g.nodes.find((n) => n !== old)!;
  // Keys the failover does not touch: they must not be copied again.
  for (let i = 0; i < 200; i++) await producer.set(`calm:${i}`, String(i));
  await count(producer, 'c', 10, 3, expected);
  let w = worker(t, g.url, remote.url);
  await waitForDrain(old.client(), remote.client());
  await old.client().wait(1, 5000);

  // The local replica stops following (as a lagging one would) and the
  // master takes writes the remote replica applies but the local one never gets.
  await local.client().call('REPLICAOF', 'NO', 'ONE');
  const lost = new Map<string, number>();
  await count(producer, 'lost', 5, 2, lost);
  await producer.incr('c:0');
  await waitForDrain(old.client(), remote.client());
  const [watermark] = await remote.client().hmget(keys.applied, 'seq');

  // The master crashes and Sentinel promotes the local replica; writers go
  // on there, reusing the lost sequence numbers.
  await g.killMaster();
  await count(producer, 'c', 10, 1, expected);

  await eventually(() => w.state === 'resync-needed', 15_000, 'the consumer stops at the divergence');
  const status = await local.client().hgetall(keys.status);
  const detail = JSON.parse(status.detail) as {
    reason: string;
    diverged: { sharedUpTo: number; replicaOnly: { from: number; to: number }; keys: string[]; keyCount: number; repair: string };
  };
  t.regex(detail.reason, /the master lost writes the replica had applied/);
  t.is(detail.diverged.replicaOnly.to, Number(watermark));
  t.is(detail.diverged.replicaOnly.to - detail.diverged.replicaOnly.from + 1, 11, 'the 11 entries written after the local replica stopped');
  t.deepEqual([...detail.diverged.keys].sort(), ['0:c:0', ...[...lost.keys()].map((k) => `0:${k}`)].sort());
  t.is(detail.diverged.repair, 'qsync repair');
  t.deepEqual(await remote.client().hmget(keys.applied, 'seq'), [watermark], 'nothing applied meanwhile');

  // The repair, as users run it, through the Sentinel URL.
  await w.close();
  const repair = await runCli(['repair', '--master', g.url, '--replica', remote.url, '--log-level', 'silent']);
  t.is(repair.code, 0, repair.stderr.join('\n'));
  t.regex(repair.stdout.join('\n'), /repair: copied 6 keys \(6 to repair: 6 of entries \d+ to \d+, which the master lost\)/);

  w = worker(t, g.url, remote.url);
  await count(producer, 'c', 10, 1, expected);
  await waitForDrain(local.client(), remote.client());
  t.deepEqual(await counters(remote.client(), expected), Object.fromEntries(expected));
  t.deepEqual(
    await counters(remote.client(), lost),
    Object.fromEntries([...lost.keys()].map((k) => [k, 0])),
    'the lost keys are gone as on the master',
  );
  t.deepEqual(await datasetDiff(local, remote), []);
});

test('a Sentinel group as the replica: the consumer writes to its current master and goes on across a failover that lost its last writes, every write applied once', async (t) => {
  const [g, master] = await Promise.all([group(t), server(t)]);
  const producer = createProducer(master.client());
  const expected = new Map<string, number>();
  const w = worker(t, master.url, g.url);
  const first = await g.master();
  const local = g.nodes.find((n) => n !== first)!;
  await count(producer, 'c', 20, 3, expected);
  await waitForDrain(master.client(), first.client());
  t.is(w.servers.replica, `127.0.0.1:${first.port}`);

  // The group's replica stops following (as a lagging one would): what the
  // consumer applies now is on the group's master only, and must stay in
  // the log until the group's replica has it.
  await local.client().call('REPLICAOF', 'NO', 'ONE');
  await count(producer, 'c', 20, 5, expected);
  const appliedOn = async (s: RedisServer) => Number((await s.client().hget(keys.applied, 'seq')) ?? 0);
  await eventually(async () => (await appliedOn(first)) > (await appliedOn(local)), 10_000, 'entries applied on the group master only');
  const next = await g.killMaster();
  t.is(next, local);
  await count(producer, 'c', 20, 2, expected);

  await waitForDrain(master.client(), next.client(), { timeoutMs: 20_000 });
  await eventually(() => w.servers.replica === `127.0.0.1:${next.port}`, 5000, 'the consumer on the new group master');
  t.deepEqual(await counters(next.client(), expected), Object.fromEntries(expected));
  t.deepEqual(await datasetDiff(master, next), []);
});
