/**
 * Resync by Redis's own full sync: the replica server REPLICAOFs the master,
 * qsync takes over at the log sequence the copy carries, and the consumer goes
 * on exactly once; when the replica server cannot sync from the master, the
 * default method copies key by key instead. Real servers, writes through the
 * producer.
 */
import { rmSync } from 'node:fs';
import test, { type ExecutionContext } from 'ava';
import { runResync, type ResyncError, type ResyncOptions } from '../consumer/copy/resync.js';
import { ExitCode, type QsyncError } from '../shared/errors.js';
import { QueueKeys } from '../shared/keys.js';
import { startRedis, type RedisServer } from './support/redis-server.js';
import { startPair, startWorker, waitForDrain, datasetDiff, type Pair } from './support/fixtures.js';
import { createWorkload } from './support/workload.js';
import { capturedLogs } from './support/logs.js';
import { runCli } from './support/cli.js';
import { eventually } from './support/wait.js';
import { startSentinelGroup } from './support/sentinel.js';
import { makeCertificates } from './support/tls.js';
import { redisOptionsFromUrl } from '../shared/config.js';

const keys = new QueueKeys('qsync', 'default');

async function pairFor(t: ExecutionContext): Promise<Pair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  return pair;
}

function options(pair: Pair, extra: Partial<ResyncOptions> = {}): ResyncOptions {
  return {
    master: { host: pair.master.host, port: pair.master.port },
    replica: { host: pair.replica.host, port: pair.replica.port },
    leaseMs: 2000,
    ...extra,
  };
}

/** Keys written around the producer before the log exists: only a copy brings them over. */
async function seed(master: RedisServer, n: number): Promise<void> {
  const c = master.client(2);
  const p = c.pipeline();
  for (let i = 0; i < n; i++) p.set(`seed:${i}`, `v${i}`, 'PX', 3_600_000 + i);
  await p.exec();
}

/** The replica server's replication role and the settings a resync by replication changes. */
async function replicationState(server: RedisServer): Promise<Record<string, string>> {
  const c = server.client();
  const role = /role:(\w+)/.exec(await c.info('replication'))![1];
  const config = (await c.config('GET', 'replica-read-only', 'masteruser', 'masterauth')) as string[];
  return { role, ...Object.fromEntries(Array.from({ length: config.length / 2 }, (_, i) => [config[2 * i], config[2 * i + 1]])) };
}

test('a resync by replication while writers run: equal datasets, none of the master’s qsync keys on the replica, and the consumer goes on exactly once', async (t) => {
  const pair = await pairFor(t);
  await seed(pair.master, 5000);
  // Set by the operator: put back after the sync, which needs it on.
  await pair.replica.client().config('SET', 'replica-read-only', 'no');
  const before = await replicationState(pair.replica);
  const workload = createWorkload({ port: pair.master.port, writers: 4, dbs: [0, 3], opsPerSecond: 1500, seed: 11 });
  await workload.start();
  t.teardown(() => workload.stop().then(() => {}));
  const master = pair.master.client();
  await eventually(async () => Number(await master.hget(keys.meta, 'seq')) > 300, 15_000, 'writes before the resync');

  const result = await runResync(options(pair, { method: 'replication' }));
  t.is(result.method, 'replication');
  t.true(result.seq > 300, 'the watermark is the sequence the copy carries');
  t.true(result.copied >= 5000);
  const replica = pair.replica.client();
  t.deepEqual(await replica.keys('qsync*'), [keys.applied], 'the log, meta, lease, status and replicas records stay on the master');
  t.deepEqual(await replica.hgetall(keys.applied), {
    seq: String(result.seq),
    epoch: (await master.hget(keys.meta, 'epoch'))!,
    ts: (await replica.hget(keys.applied, 'ts'))!,
  });
  t.deepEqual(await replicationState(pair.replica), before, 'a master again, with its settings as they were');
  t.true(Number(await master.hget(keys.meta, 'seq')) > result.seq, 'writes went on during the handover');

  const worker = startWorker(pair);
  t.teardown(() => worker.close());
  await eventually(async () => Number(await replica.hget(keys.applied, 'seq')) > result.seq + 100, 15_000, 'streaming after the resync');
  const ledger = await workload.stop();
  await waitForDrain(master, replica);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  t.like(await ledger.check(pair.replica), { lost: 0, doubled: 0, problems: [] }, 'nothing lost, nothing applied twice');
});

/** A master whose user may do everything but replicate: the replica server, given the same user, cannot sync. */
async function masterWithoutReplication(pair: Pair): Promise<ResyncOptions['master']> {
  await pair.master.client().acl('SETUSER', 'op', 'on', '>secret', '~*', '&*', '+@all', '-psync', '-sync', '-replconf');
  return { host: pair.master.host, port: pair.master.port, username: 'op', password: 'secret' };
}

test('when the replica server cannot sync from the master, the default method copies key by key and says why', async (t) => {
  const pair = await pairFor(t);
  await seed(pair.master, 2000);
  const before = await replicationState(pair.replica);
  const { lines, logger } = capturedLogs();
  const master = await masterWithoutReplication(pair);
  const result = await runResync(options(pair, { method: 'auto', master, replicationTimeoutMs: 1000, logger }));
  t.is(result.method, 'copy');
  t.is(result.copied, 2000);
  const fallback = lines.find((l) => /copying key by key instead/.test(String(l.msg)));
  t.truthy(fallback, 'a log line says the copy replaces the full sync');
  t.regex(String(fallback?.reason), /did not sync from the master at 127\.0\.0\.1:\d+ within 1000 ms/);
  t.deepEqual(await replicationState(pair.replica), before, 'a master again, with its settings as they were');
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

test('--method replication fails when the replica server cannot sync, and leaves the replica marked and a master', async (t) => {
  const pair = await pairFor(t);
  const master = await masterWithoutReplication(pair);
  const err = await t.throwsAsync(runResync(options(pair, { method: 'replication', master, replicationTimeoutMs: 500 })));
  t.is((err as ResyncError).exitCode, ExitCode.resyncNeeded);
  t.regex(err!.message, /^qsync: resync: the replica server did not sync from the master at .* within 500 ms .*--method copy$/);
  t.truthy(await pair.replica.client().hget(keys.applied, 'resyncing'), 'the replica stays marked');
  t.is((await replicationState(pair.replica)).role, 'master');
});

test('a replica server that is itself a Redis replica of another server is refused, whatever the method', async (t) => {
  const pair = await pairFor(t);
  const other = await startRedis();
  t.teardown(() => other.destroy());
  await pair.replica.client().replicaof(other.host, other.port);
  for (const method of ['auto', 'copy'] as const) {
    const err = await t.throwsAsync(runResync(options(pair, { method })));
    t.is((err as QsyncError).exitCode, ExitCode.usage);
    t.regex(err!.message, new RegExp(`is itself a Redis replica of 127\\.0\\.0\\.1:${other.port}`));
  }
  t.is((await replicationState(pair.replica)).role, 'slave', 'left as it was');
});

test('a replica server left replicating the master by a killed resync is taken over by the next one', async (t) => {
  const pair = await pairFor(t);
  await seed(pair.master, 500);
  const replica = pair.replica.client();
  await replica.replicaof(pair.master.host, pair.master.port);
  await eventually(async () => /master_link_status:up/.test(await replica.info('replication')), 10_000, 'replicating');
  const result = await runResync(options(pair, { method: 'replication' }));
  t.is(result.method, 'replication');
  t.is((await replicationState(pair.replica)).role, 'master');
  t.deepEqual(await replica.keys('qsync*'), [keys.applied]);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

test('a resync where the replica is the master itself is refused before anything changes', async (t) => {
  const pair = await pairFor(t);
  await pair.master.client().set('k', 'v');
  const same = { host: pair.master.host, port: pair.master.port };
  const err = await t.throwsAsync(runResync({ master: same, replica: same, method: 'replication' }));
  t.regex(err!.message, /are the same Redis server/);
  t.is(await pair.master.client().get('k'), 'v');
});

test('qsync resync uses the full sync by default; a bad --method is one line and the usage exit code', async (t) => {
  const pair = await pairFor(t);
  await seed(pair.master, 1000);
  const args = ['resync', '--master', pair.master.url, '--replica', pair.replica.url];
  const bad = await runCli([...args, '--method', 'rsync']);
  t.is(bad.code, ExitCode.usage);
  t.deepEqual(bad.stderr, ["qsync: --method must be one of auto, replication, copy, got 'rsync'"]);
  t.falsy(await pair.replica.client().exists(keys.applied), 'nothing was touched');

  const run = await runCli(args, {}, 60_000);
  t.is(run.code, 0, run.stderr.join('\n'));
  t.regex(run.stdout.join('\n'), /^resync: copied 1000 keys by Redis's full sync, replayed 0 entries in [\d.]+ s; streaming from entry 0$/m);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  const help = await runCli(['resync', '--help']);
  t.regex(help.stdout.join('\n'), /--method <method>/);
});

test('through a Sentinel URL, the replica server syncs from the node the group names master', async (t) => {
  const group = await startSentinelGroup();
  t.teardown(() => group.destroy());
  const replica = await startRedis();
  t.teardown(() => replica.destroy());
  const node = await group.master();
  await seed(node, 300);
  const result = await runResync({
    master: group.options,
    replica: { host: replica.host, port: replica.port },
    method: 'replication',
    leaseMs: 2000,
  });
  t.is(result.method, 'replication');
  t.is((await replicationState(replica)).role, 'master');
  t.deepEqual(await datasetDiff(node, replica), []);
});

test('a rediss:// master: the replica server syncs over TLS with its own certificates, and tls-replication is set back', async (t) => {
  const certs = makeCertificates();
  t.teardown(() => rmSync(certs.dir, { recursive: true, force: true }));
  const args = ['--tls-auth-clients', 'optional'];
  const [m, r] = await Promise.all([startRedis({ tls: certs, args }), startRedis({ tls: certs, args })]);
  t.teardown(() => Promise.all([m.destroy(), r.destroy()]).then(() => {}));
  await seed(m, 300);
  const result = await runResync({
    master: redisOptionsFromUrl(`rediss://127.0.0.1:${m.port}`, '--master', { ca: certs.caFile }),
    replica: redisOptionsFromUrl(`rediss://127.0.0.1:${r.port}`, '--replica', { ca: certs.caFile }),
    method: 'replication',
    leaseMs: 2000,
  });
  t.is(result.method, 'replication');
  t.deepEqual(await r.client().config('GET', 'tls-replication'), ['tls-replication', 'no']);
  t.deepEqual(await datasetDiff(m, r), []);
});
