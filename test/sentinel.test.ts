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
import { workerMetrics } from '../consumer/metrics/metrics.js';
import { redisOptionsFromUrl } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { QueueKeys } from '../shared/keys.js';
import { startRedis, type RedisServer } from './support/redis-server.js';
import { datasetDiff, waitForDrain } from './support/fixtures.js';
import { startSentinelGroup, type SentinelGroup } from './support/sentinel.js';
import { runCli, spawnCli } from './support/cli.js';
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
  const metrics = await workerMetrics(w, next.client(), 'qsync', 'default').getSingleMetricAsString('qsync_server');
  t.regex(metrics, new RegExp(`qsync_server\\{queue="default",side="master",node="127\\.0\\.0\\.1:${next.port}"\\} 1`));
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
  t.regex(
    detail.reason,
    /the master lost (its last writes|writes the replica applied).*; entries \d+ to \d+ are on the replica only .*qsync repair copies their 6 keys/,
  );
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
  // The new group master has no replica yet: the consumer trims without waiting for one.
  await eventually(async () => (await master.client().llen(keys.log)) === 0, 10_000, 'the log trimmed');
  t.true(w.state === 'streaming' || w.state === 'idle', w.state);
  t.deepEqual(await counters(next.client(), expected), Object.fromEntries(expected));
  t.deepEqual(await datasetDiff(master, next), []);
});

test('qsync consume and status through a Sentinel URL with passwords: the node in use is named, no secret is ever printed', async (t) => {
  const g = await startSentinelGroup({ password: 'node-secret', sentinelPassword: 'sentinel-secret' });
  t.teardown(() => g.destroy());
  const remote = await server(t);
  const producer = createProducer(sentinelClient(t, g));
  const first = await g.master();
  const consumer = spawnCli(['consume', '--master', g.url, '--replica', remote.url, '--lease-ms', '1000']);
  t.teardown(() => consumer.kill('SIGKILL'));
  await consumer.waitForLog((l) => l.msg === 'master connected', 15_000);
  for (let i = 0; i < 20; i++) await producer.set(`k:${i}`, String(i));
  await waitForDrain(first.client(), remote.client());

  const status = await runCli(['status', '--master', g.url]);
  t.is(status.code, 0, status.stderr.join('\n'));
  t.regex(status.stdout.join('\n'), new RegExp(`servers +master 127\\.0\\.0\\.1:${first.port}, replica 127\\.0\\.0\\.1:${remote.port}`));

  const wrongGroup = await runCli(['status', '--master', g.url.replace('/mymaster', '/nosuch')]);
  t.is(wrongGroup.code, 2);
  t.deepEqual(wrongGroup.stderr, [
    `qsync: no sentinel of master ${g.url.replace('/mymaster', '/nosuch').replace('node-secret', '***').replace('sentinel-secret', '***')} knows a master named 'nosuch'`,
  ]);
  consumer.kill('SIGTERM');
  await consumer.exited;
  const printed = [consumer, status, wrongGroup].flatMap((p) => [...p.stdout, ...p.stderr]).join('\n');
  t.notRegex(printed, /node-secret|sentinel-secret/);
  t.notRegex(JSON.stringify(await first.client().hgetall(keys.status)), /secret/);
});

test('a Sentinel URL maps to ioredis options; a bad one is refused with one line that names it without its secrets', (t) => {
  t.like(
    redisOptionsFromUrl(
      'redis+sentinel://app:p%40ss@10.0.0.1,10.0.0.2:26380,[::1]:26381/cache?sentinelPassword=s3&sentinelUsername=watch',
      '--master',
    ),
    {
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: '10.0.0.2', port: 26380 },
        { host: '::1', port: 26381 },
      ],
      name: 'cache',
      username: 'app',
      password: 'p@ss',
      sentinelUsername: 'watch',
      sentinelPassword: 's3',
    },
  );
  const tls = redisOptionsFromUrl('rediss+sentinel://h/cache?sentinelTls=true', '--replica', { insecure: true });
  t.like(tls, { enableTLSForSentinelMode: true, tls: { rejectUnauthorized: false }, sentinelTLS: { rejectUnauthorized: false } });
  t.is(redisOptionsFromUrl('redis+sentinel://h/cache', '--master').tls, undefined);
  const refused = (url: string) => t.throws(() => redisOptionsFromUrl(url, '--master'))?.message;
  t.is(
    refused('redis+sentinel://:pw@h:99999/m?sentinelPassword=spw'),
    "qsync: --master 'redis+sentinel://:***@h:99999/m?sentinelPassword=***' has a bad sentinel address 'h:99999' (expected host:port)",
  );
  t.is(
    refused('redis+sentinel://h:26379'),
    "qsync: --master 'redis+sentinel://h:26379' names no master group (redis+sentinel://host:26379/mymaster)",
  );
  t.is(
    refused('redis+sentinel://h/m?password=x'),
    "qsync: --master 'redis+sentinel://h/m?password=***' has an unknown parameter 'password' (known: sentinelUsername, sentinelPassword, sentinelTls)",
  );
  t.is(refused('redis+sentinel://h/m?sentinelTls=yes'), "qsync: sentinelTls of --master must be one of true, false, got 'yes'");
  t.is(
    refused('redis+sentinel://h/m?sentinelPass=x'),
    "qsync: --master 'redis+sentinel://h/m?sentinelPass=***' has an unknown parameter 'sentinelPass' (known: sentinelUsername, sentinelPassword, sentinelTls)",
  );
  t.is(
    t.throws(() => redisOptionsFromUrl('redis+sentinel://h/m', '--master', { ca: '/ca.pem' }))?.message,
    "qsync: TLS files were given for --master 'redis+sentinel://h/m', which uses no TLS (rediss+sentinel://, or ?sentinelTls=true)",
  );
});
