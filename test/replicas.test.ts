/**
 * Several replicas and chains: one log feeds replicas by name, each with its
 * own lease, position and watermark; the master keeps an entry until every
 * attached replica has it; one replica down never stalls the others; a
 * replica can feed another (--relay). Real servers, writes through the
 * producer.
 */
import test, { type ExecutionContext } from 'ava';
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { runResync } from '../consumer/copy/resync.js';
import type { SyncWorker, WorkerOptions } from '../consumer/drain/worker.js';
import { listReplicas } from '../consumer/replicas/replicas.js';
import { readStatus } from '../consumer/queue/status.js';
import { workerMetrics } from '../consumer/metrics/metrics.js';
import { QueueKeys } from '../shared/keys.js';
import { aclRules } from '../shared/acl.js';
import { datasetDiff, startWorker, type Pair } from './support/fixtures.js';
import { startRedis, type RedisServer } from './support/redis-server.js';
import { runCli, spawnCli, type CliProcess } from './support/cli.js';
import { createWorkload } from './support/workload.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { startProxy } from './support/fault-proxy.js';
import { eventually } from './support/wait.js';

const keys = new QueueKeys('qsync', 'default');

async function server(t: ExecutionContext): Promise<RedisServer> {
  const s = await startRedis();
  t.teardown(() => s.destroy());
  return s;
}

/** An in-process worker of replica `name` from master to replica, closed after the test. */
function feed(t: ExecutionContext, master: RedisServer, replica: RedisServer, name: string, options: Partial<WorkerOptions> = {}): SyncWorker {
  const worker = startWorker({ master, replica } as unknown as Pair, { name, ...options });
  t.teardown(() => worker.close());
  return worker;
}

/** Waits until the replicas are attached to the log: from then on it keeps what they have not applied. */
async function attached(master: Redis, ...names: string[]): Promise<void> {
  await eventually(
    async () => {
      const replicas = await master.hgetall(keys.replicas);
      return names.every((n) => n in replicas) || undefined;
    },
    10_000,
    `${names.join(', ')} attached`,
  );
}

/** Waits until replica `name` applied every entry of the master's log. */
async function drained(master: Redis, replica: Redis, name: string, timeoutMs = 15_000): Promise<void> {
  const mine = keys.forReplica(name);
  await eventually(
    async () => {
      const [seq, applied] = await Promise.all([master.hget(mine.meta, 'seq'), replica.hget(mine.applied, 'seq')]);
      return seq !== null && seq === applied;
    },
    timeoutMs,
    `replica ${name} drained`,
  );
}

test('two replicas drain one log side by side, each with its own keys; the log keeps an entry until both have it', async (t) => {
  const [m, a, b] = await Promise.all([server(t), server(t), server(t)]);
  const master = m.client();
  const db = createProducer(m.client());
  const wa = feed(t, m, a, 'a');
  feed(t, m, b, 'b');
  await attached(master, 'a', 'b');
  for (let i = 0; i < 50; i++) await db.rpush('list', String(i));
  await Promise.all([drained(master, a.client(), 'a'), drained(master, b.client(), 'b')]);
  await eventually(async () => (await master.llen(keys.log)) === 0, 5000, 'log emptied once both replicas have it');
  // Replica a stops: the log keeps what a has not applied, while b goes on.
  await wa.close();
  for (let i = 0; i < 20; i++) await db.incr('n');
  await drained(master, b.client(), 'b');
  t.is(await master.llen(keys.log), 20, 'the entries replica a lacks stay in the log');
  const held = (await master.lrangeBuffer(keys.log, 0, -1)).reduce((n, e) => n + e.length, 0);
  t.is(Number(await master.hget(keys.meta, 'bytes')), held, "the queue's byte count is the bytes of the entries it holds");
  t.is(await b.client().get('n'), '20');
  t.is(await a.client().get('n'), null);
  // Each name has its own lease, status and watermark.
  t.truthy(await master.hget(keys.forReplica('b').status, 'watermark'));
  t.truthy(await a.client().hget(keys.forReplica('a').applied, 'seq'));
  t.is(await a.client().exists(keys.applied), 0, "no watermark under the default name's key");
  feed(t, m, a, 'a');
  await drained(master, a.client(), 'a');
  await eventually(async () => (await master.llen(keys.log)) === 0, 5000, 'log emptied');
  t.is((await master.hget(keys.meta, 'bytes')) ?? '0', '0', "the queue's byte count follows the log");
  t.deepEqual(await datasetDiff(m, a), []);
  t.deepEqual(await datasetDiff(m, b), []);
  t.is(await a.client().llen('list'), 50, 'nothing applied twice');
});

test('detaching a replica trims the log to what the others need; its consumer reports resync-needed for itself only', async (t) => {
  const [m, a, b] = await Promise.all([server(t), server(t), server(t)]);
  const master = m.client();
  const db = createProducer(m.client());
  const wa = feed(t, m, a, 'a');
  const wb = feed(t, m, b, 'b');
  await attached(master, 'a', 'b');
  await db.set('k', 'v0');
  await Promise.all([drained(master, a.client(), 'a'), drained(master, b.client(), 'b')]);
  await wa.close();
  for (let i = 0; i < 30; i++) await db.incr('n');
  await drained(master, b.client(), 'b');
  t.is(await master.llen(keys.log), 30);
  const detach = await runCli(['replicas', 'detach', '--master', m.url, '--name', 'a']);
  t.is(detach.code, 0, detach.stderr.join('\n'));
  t.is(await master.llen(keys.log), 0, 'nothing left that an attached replica needs');
  t.is((await master.hget(keys.meta, 'bytes')) ?? '0', '0');
  const wa2 = feed(t, m, a, 'a');
  await eventually(() => wa2.state === 'resync-needed', 10_000, 'replica a resync-needed');
  t.is(wb.state === 'streaming' || wb.state === 'idle', true, `replica b goes on (${wb.state})`);
  const list = await runCli(['replicas', '--master', m.url, '--json']);
  const views = JSON.parse(list.stdout.join('\n')) as { name: string; attachment: string }[];
  t.deepEqual(
    views.map((v) => [v.name, v.attachment]),
    [
      ['a', 'detached'],
      ['b', 'attached'],
    ],
  );
  const again = await runCli(['replicas', 'detach', '--master', m.url, '--name', 'a']);
  t.is(again.code, 2);
  t.regex(again.stderr.join('\n'), /replica 'a' is not attached/);
});

test('a dead replica under a cap with the policy detach-slowest stops neither the writes nor the other replica, and is detached', async (t) => {
  const [m, a, b] = await Promise.all([server(t), server(t), server(t)]);
  const master = m.client();
  const db = createProducer(m.client());
  feed(t, m, a, 'a');
  const wb = feed(t, m, b, 'b');
  await attached(master, 'a', 'b');
  await db.set('k', 'v0');
  await Promise.all([drained(master, a.client(), 'a'), drained(master, b.client(), 'b')]);
  const limit = await runCli(['limit', '--master', m.url, '--max-entries', '100', '--policy', 'detach-slowest']);
  t.is(limit.code, 0, limit.stderr.join('\n'));
  await b.stop('SIGKILL');
  for (let i = 0; i < 300; i++) await db.incr('n');
  t.is(await m.client().get('n'), '300', 'no write refused');
  await drained(master, a.client(), 'a');
  t.is(await a.client().get('n'), '300');
  const views = await listReplicas(master, keys);
  const dead = views.find((v) => v.name === 'b')!;
  t.is(dead.attachment, 'detached');
  t.regex(dead.detached!.why, /held the log at its cap \(max entries 100\)/);
  t.true((await master.llen(keys.log)) < 100);
  const held = (await master.lrangeBuffer(keys.log, 0, -1)).reduce((n, e) => n + e.length, 0);
  t.is(Number(await master.hget(keys.meta, 'bytes')), held, "the queue's byte count follows what the detach dropped");
  await b.restart();
  await eventually(() => wb.state === 'resync-needed', 15_000, 'replica b resync-needed');
  const status = await eventually(async () => {
    const s = await readStatus(master, 'qsync', 'default', 'b');
    return s.state === 'resync-needed' ? s : undefined;
  });
  t.regex(
    String(status.detail.reason),
    /replica 'b' was detached .*held the log at its cap \(max entries 100\)\); rebuild it with qsync resync --name b/,
  );
  t.is((await readStatus(master, 'qsync', 'default', 'a')).state === 'resync-needed', false, 'replica a is not affected');
  t.deepEqual(await datasetDiff(m, a), []);
});

test('a replica added later is bootstrapped with a resync of its name while the others stream', async (t) => {
  const [m, a, c] = await Promise.all([server(t), server(t), server(t)]);
  const master = m.client();
  const db = createProducer(m.client());
  feed(t, m, a, 'a');
  for (let i = 0; i < 200; i++) await db.rpush('early', String(i));
  await drained(master, a.client(), 'a');
  let writing = true;
  const writes = (async () => {
    for (let i = 0; writing; i++) await db.rpush('during', String(i));
  })();
  const result = await runResync({
    master: { host: m.host, port: m.port },
    replica: { host: c.host, port: c.port },
    name: 'c',
    leaseMs: 2000,
  });
  t.true(result.seq > 0);
  feed(t, m, c, 'c');
  await new Promise((r) => setTimeout(r, 300));
  writing = false;
  await writes;
  await Promise.all([drained(master, a.client(), 'a'), drained(master, c.client(), 'c')]);
  t.deepEqual(await datasetDiff(m, a), []);
  t.deepEqual(await datasetDiff(m, c), []);
  await eventually(async () => (await master.llen(keys.log)) === 0, 5000, 'log emptied');
});

test('waitReplicated resolves with 2 when both replicas are up, with 1 within the timeout when one is cut, never counting one that lacks the write', async (t) => {
  const [m, a, b] = await Promise.all([server(t), server(t), server(t)]);
  const proxy = await startProxy(b.port);
  t.teardown(() => proxy.close());
  const db = createProducer(m.client());
  feed(t, m, a, 'a');
  feed(t, m, { ...b, host: '127.0.0.1', port: proxy.port } as RedisServer, 'b');
  await attached(m.client(), 'a', 'b');
  await db.set('k', 'v1');
  t.is(await db.waitReplicated(2, 10_000), 2);
  t.deepEqual([await a.client().get('k'), await b.client().get('k')], ['v1', 'v1'], 'both replicas have the write');
  t.is(await db.waitReplicated(1, 0), 2, 'nothing to wait for: at once, with every replica that has it');

  proxy.cut();
  await db.set('k', 'v2');
  const started = Date.now();
  t.is(await db.waitReplicated(2, 800), 1, 'only replica a has it when the timeout passes');
  t.true(Date.now() - started >= 700, 'waited for the timeout');
  t.is(await b.client().get('k'), 'v1', 'replica b never had v2');
  t.is(await db.waitReplicated(1, 10_000), 1);
  t.is(await a.client().get('k'), 'v2');

  // Many waits at once share one watcher, and resolve together once the link heals.
  const waits = Array.from({ length: 20 }, () => db.waitReplicated(2, 0));
  proxy.heal();
  t.deepEqual(await Promise.all(waits), Array(20).fill(2));
  t.is(await b.client().get('k'), 'v2');
  await t.throwsAsync(db.waitReplicated(-1, 0), { message: /numReplicas must be a whole number from 0, got -1/ });
});

test('a relay logs what it applies in its own queue, in the same step, and feeds a replica of its own', async (t) => {
  const [m, b, c] = await Promise.all([server(t), server(t), server(t)]);
  const master = m.client();
  const db = createProducer(m.client());
  feed(t, m, b, 'b', { relay: true });
  feed(t, b, c, 'c');
  await attached(master, 'b');
  await attached(b.client(), 'c');
  await db.set('plain', 'v');
  await db.set('soon', 'v', 'PX', 600_000);
  await db.multi().incr('n').rpush('list', 'a', 'b').exec();
  await db.select(3);
  await db.hset('h', 'f', '1');
  await db.select(0);
  await drained(master, b.client(), 'b');
  await drained(b.client(), c.client(), 'c');
  t.deepEqual(await datasetDiff(m, b), []);
  t.deepEqual(await datasetDiff(m, c), []);
  t.is(await b.client().hget(keys.meta, 'seq'), await master.hget(keys.meta, 'seq'), "the relay's log holds one entry for each of the master's");
  await eventually(async () => (await b.client().llen(keys.log)) === 0, 5000, "the relay's log drained by its replica");
});

/** `qsync consume` of replica `name`, a child process, killed after the test. */
function consumer(t: ExecutionContext, master: string, replica: string, name: string, ...extra: string[]): CliProcess {
  const cli = spawnCli([
    'consume',
    '--master',
    master,
    '--replica',
    replica,
    '--name',
    name,
    '--lease-ms',
    '500',
    '--timeout-ms',
    '2000',
    '--batch-size',
    '50',
    '--no-jobs',
    ...extra,
  ]);
  t.teardown(() => cli.kill('SIGKILL'));
  return cli;
}

const streaming = (l: Record<string, unknown>) => l.state === 'streaming' || l.state === 'idle';

test('two direct replicas and one chained end equal to the master through cuts of each link and SIGKILLs of each consumer, nothing applied twice', async (t) => {
  const [m, a, b, c] = await Promise.all([server(t), server(t), server(t), server(t)]);
  // A proxy on each link a consumer makes: to each replica, and to the relay as the chain's master.
  const [toA, toB, toC, fromB] = await Promise.all([startProxy(a.port), startProxy(b.port), startProxy(c.port), startProxy(b.port)]);
  t.teardown(() => Promise.all([toA, toB, toC, fromB].map((p) => p.close())).then(() => {}));
  const start = {
    a: () => consumer(t, m.url, toA.url, 'a'),
    b: () => consumer(t, m.url, toB.url, 'b', '--relay'),
    c: () => consumer(t, fromB.url, toC.url, 'c'),
  };
  const running = { a: start.a(), b: start.b(), c: start.c() };
  for (const cli of Object.values(running)) await cli.waitForLog(streaming, 20_000, 'consumer streaming');
  const workload = createWorkload({ port: m.port, opsPerSecond: 400 });
  await workload.start();
  const faults: string[] = [];
  for (const name of ['a', 'b', 'c'] as const) {
    await sleep(400);
    // The next consumer stands by and takes over once the killed one's lease runs out.
    const next = start[name]();
    running[name].kill('SIGKILL');
    faults.push(`consumer ${name} SIGKILL`);
    running[name] = next;
    await next.waitForLog(streaming, 20_000, `consumer ${name} streaming again`);
  }
  for (const [what, proxy] of [
    ['a', toA],
    ['b', toB],
    ['c', toC],
    ['b to c', fromB],
  ] as const) {
    await sleep(300);
    proxy.cut();
    await sleep(1000);
    proxy.heal();
    faults.push(`link ${what} cut`);
  }
  const ledger = await workload.stop();
  const [mc, bc] = [m.client(), b.client()];
  await drained(mc, a.client(), 'a', 30_000);
  await drained(mc, bc, 'b', 30_000);
  await drained(bc, c.client(), 'c', 30_000);
  t.log(faults.join(', '));
  for (const [name, replica] of [
    ['a', a],
    ['b', b],
    ['c', c],
  ] as const) {
    t.deepEqual(await datasetDiff(m, replica), [], `replica ${name} equals the master`);
    t.like(await ledger.check(replica), { lost: 0, doubled: 0, problems: [] }, `replica ${name}: nothing lost, nothing applied twice`);
  }
  await eventually(async () => (await mc.llen(keys.log)) === 0 && (await bc.llen(keys.log)) === 0, 10_000, 'both logs drained');
});

test('status, verify, resync and dlq take --name: each replica is shown and handled on its own', async (t) => {
  const [m, a, b] = await Promise.all([server(t), server(t), server(t)]);
  const master = m.client();
  const db = createProducer(m.client());
  feed(t, m, a, 'a');
  await attached(master, 'a');
  for (let i = 0; i < 20; i++) await db.incr('n');
  await drained(master, a.client(), 'a');
  // Replica b joins later: a resync of its name, from the CLI, while a streams.
  const resync = await runCli(['resync', '--master', m.url, '--replica', b.url, '--name', 'b']);
  t.is(resync.code, 0, resync.stderr.join('\n'));
  feed(t, m, b, 'b');
  await db.incr('n');
  await Promise.all([drained(master, a.client(), 'a'), drained(master, b.client(), 'b')]);
  t.is(await b.client().get('n'), '21');
  await b.client().set('stray', 'x');
  const status = await runCli(['status', '--master', m.url, '--json']);
  t.is(status.code, 0, status.stderr.join('\n'));
  const rows = JSON.parse(status.stdout.join('\n')) as { replica: string; replicaWatermark: number }[];
  t.deepEqual(
    rows.map((r) => [r.replica, r.replicaWatermark]),
    [
      ['a', 21],
      ['b', 21],
    ],
  );
  const okA = await runCli(['verify', '--master', m.url, '--replica', a.url, '--name', 'a']);
  t.is(okA.code, 0, okA.stdout.join('\n'));
  const strayB = await runCli(['verify', '--master', m.url, '--replica', b.url, '--name', 'b', '--json']);
  t.is(strayB.code, 1, 'the stray write on b is found');
  t.regex(strayB.stdout.join('\n'), /stray/);
  const dlq = await runCli(['dlq', 'list', '--master', m.url, '--name', 'b']);
  t.is(dlq.code, 0);
  t.regex(dlq.stdout.join('\n'), /qsync:default:dlq:b/);
});

test("a named replica's metrics carry the label replica, read from its own status", async (t) => {
  const [m, b] = await Promise.all([server(t), server(t)]);
  const worker = feed(t, m, b, 'b');
  await attached(m.client(), 'b');
  await createProducer(m.client()).set('k', 'v');
  await drained(m.client(), b.client(), 'b');
  const text = await workerMetrics(worker, m.client(), 'qsync', 'default').metrics();
  t.regex(text, /qsync_replica_watermark\{queue="default",replica="b"\} 1\b/);
  t.notRegex(text, /^qsync_\w+\{queue="default"\}/m, 'every series names the replica');
});

test('a read-only replica: apps read through the app-reader role and cannot write, the consumer applies as its own user, and a stray write is found by verify', async (t) => {
  const m = await server(t);
  const r = await startRedis({ password: 'admin-secret' });
  t.teardown(() => r.destroy());
  const admin = r.client();
  // The recipe: a user for the consumer, a read-only user for the apps, and `default` kept for the operators only (requirepass).
  await admin.call('ACL', 'SETUSER', 'qsync', 'on', '>consumer-secret', ...aclRules('consumer-replica'));
  await admin.call('ACL', 'SETUSER', 'app', 'on', '>app-secret', ...aclRules('app-reader'));
  const worker = feed(t, m, r, 'dc2', { replica: { host: r.host, port: r.port, username: 'qsync', password: 'consumer-secret' } });
  await attached(m.client(), 'dc2');
  const db = createProducer(m.client());
  await db.set('greeting', 'hello');
  await db.hset('h', 'f', '1');
  await drained(m.client(), admin, 'dc2');
  const app = r.client(0, { username: 'app', password: 'app-secret' });
  t.is(await app.get('greeting'), 'hello');
  t.deepEqual(await app.hgetall('h'), { f: '1' });
  await t.throwsAsync(app.set('greeting', 'changed'), { message: /NOPERM/ });
  await t.throwsAsync(app.del('greeting'), { message: /NOPERM/ });
  await t.throwsAsync(app.call('FLUSHALL'), { message: /NOPERM/ });
  await t.throwsAsync(app.eval("return redis.call('SET', 'greeting', 'x')", 0), { message: /NOPERM|permission/ });
  await db.set('greeting', 'hello again');
  await drained(m.client(), admin, 'dc2');
  t.is(await app.get('greeting'), 'hello again', 'the consumer still applies');
  t.is(worker.state === 'streaming' || worker.state === 'idle', true);
  await admin.set('stray', 'x');
  const verify = await runCli(['verify', '--master', m.url, '--replica', r.url, '--name', 'dc2']);
  t.is(verify.code, 1);
  t.regex(verify.stdout.join('\n'), /stray/);
});
