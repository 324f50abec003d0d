/**
 * Resync: rebuilding a replica from a copy of the master while writers keep
 * writing, so that the copy plus the replayed log equals the master exactly,
 * and handing over to the consumer. Real servers, writes through the producer.
 */
import test, { type ExecutionContext } from 'ava';
import { createProducer } from '../producer/index.js';
import { runResync, type ResyncError, type ResyncOptions } from '../consumer/copy/resync.js';
import type { SyncWorker, WorkerState } from '../consumer/drain/worker.js';
import { QueueKeys } from '../shared/keys.js';
import { startPair, startWorker, waitForDrain, datasetDiff, type Pair } from './support/fixtures.js';
import { createWorkload, startMoves } from './support/workload.js';
import { spawnCli, runCli } from './support/cli.js';
import { eventually } from './support/wait.js';

const keys = new QueueKeys('qsync', 'default');

/** A master and a replica without persistence, destroyed after the test. */
async function pairFor(t: ExecutionContext): Promise<Pair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  return pair;
}

/** An in-process worker (short timers) that records its states, closed after the test. */
function workerFor(t: ExecutionContext, pair: Pair): SyncWorker & { states: WorkerState[] } {
  const worker = Object.assign(startWorker(pair), { states: [] as WorkerState[] });
  worker.on('state', (state: WorkerState) => worker.states.push(state));
  t.teardown(() => worker.close());
  return worker;
}

function resyncOptions(pair: Pair, extra: Partial<ResyncOptions> = {}): ResyncOptions {
  return {
    master: { host: pair.master.host, port: pair.master.port },
    replica: { host: pair.replica.host, port: pair.replica.port },
    leaseMs: 2000,
    ...extra,
  };
}

/** Keys that exist before the log does (written around the producer), so that the copy takes many batches. */
async function seed(master: Pair['master'], dbs: number[], perDb: number): Promise<void> {
  for (const db of dbs) {
    const c = master.client(db);
    const p = c.pipeline();
    for (let i = 0; i < perDb; i++) {
      if (i % 4 === 0) p.set(`seed:${i}`, `v${i}`);
      else if (i % 4 === 1) p.hset(`seed:${i}`, 'a', i, 'b', 'x');
      else if (i % 4 === 2) p.sadd(`seed:${i}`, 'm1', 'm2', String(i));
      else p.rpush(`seed:${i}`, 'l1', String(i));
    }
    for (let i = 0; i < 8; i++) p.sadd(`pool:${i}`, ...Array.from({ length: 20 }, (_, j) => `${i}:${j}`));
    for (let i = 0; i < 8; i++) p.set(`hot:${i}`, i);
    await p.exec();
    c.disconnect();
  }
}

test('a replica bootstrapped while writers run ends equal to the master, and the consumer streams after', async (t) => {
  const pair = await pairFor(t);
  const dbs = [0, 3, 7];
  await seed(pair.master, dbs, 3000);
  const workload = createWorkload({ port: pair.master.port, writers: 4, dbs, opsPerSecond: 1500, seed: 7 });
  await workload.start();
  const movers = [startMoves(pair.master, 0, 1), startMoves(pair.master, 3, 2)];
  const master = pair.master.client();
  await eventually(async () => Number(await master.hget(keys.meta, 'seq')) > 300, 15_000, 'writes before the resync');

  const result = await runResync(resyncOptions(pair, { scanCount: 50 }));
  t.true(result.replayed > 0, 'entries were written during the copy');
  t.true(result.skipped > 0, 'some logged commands were already in the copies');
  t.true(result.recopies > 0, 'multi-key commands met keys copied at different times');

  const worker = workerFor(t, pair);
  await eventually(() => worker.states.includes('streaming'), 15_000, 'streaming after the resync');
  await Promise.all(movers.map((m) => m.stop()));
  await workload.stop();
  await waitForDrain(master, pair.replica.client());
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  t.false(worker.states.includes('resync-needed'));
});

test('a big key is copied in chunks from a snapshot and equals the master while ZINCRBY hammers it', async (t) => {
  const pair = await pairFor(t);
  const db3 = pair.master.client(3);
  const fill = db3.pipeline();
  for (let i = 0; i < 50_000; i++) fill.zadd('board', i, `player:${i}`);
  await fill.exec();
  const p = createProducer(db3);
  let running = true;
  let n = 0;
  const hammer = (async () => {
    while (running) await p.zincrby('board', 1 + (n % 3), `player:${(n++ * 7919) % 50_000}`);
  })();
  hammer.catch(() => {});
  await eventually(() => n > 100, 10_000, 'ZINCRBY before the resync');

  const result = await runResync(resyncOptions(pair, { bigMembers: 1000, chunk: 500 }));
  const during = n;
  running = false;
  await hammer;
  t.true(result.replayed > 0 && during > 100);
  const stats = await pair.master.client().info('commandstats');
  t.regex(stats, /cmdstat_copy:calls=1,/, 'one snapshot');
  t.true(Number(/cmdstat_zscan:calls=(\d+)/.exec(stats)?.[1]) >= 50, 'read in chunks');
  t.is(await pair.master.client().exists(keys.toKey('resync:snapshot')), 0, 'the snapshot is gone');

  workerFor(t, pair);
  await waitForDrain(pair.master.client(), pair.replica.client());
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

test('a worker in resync-needed after the master lost its data streams again after a resync run inside it', async (t) => {
  const pair = await pairFor(t);
  const before = createProducer(pair.master.client(0));
  for (let i = 0; i < 50; i++) await before.incr('counter');
  const worker = workerFor(t, pair);
  await waitForDrain(pair.master.client(), pair.replica.client());
  await pair.master.restart({ persistence: 'none' });
  const after = createProducer(pair.master.client(0));
  for (let i = 0; i < 20; i++) await after.lpush('list', String(i));
  await eventually(() => worker.state === 'resync-needed', 15_000, 'resync-needed');

  const result = await worker.runExclusive((lease) => runResync(resyncOptions(pair, { heldLease: lease })));
  t.is(result.seq, 20);
  for (let i = 0; i < 20; i++) await after.incr('counter');
  await eventually(() => worker.state === 'streaming', 15_000, 'streaming after the resync');
  await waitForDrain(pair.master.client(), pair.replica.client());
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  t.is(await pair.replica.client().get('counter'), '20', 'the counter of the lost data is gone, as on the master');
});

test('a resync killed midway leaves the replica resync-needed, and running it again fixes it', async (t) => {
  const pair = await pairFor(t);
  await seed(pair.master, [0, 5], 15_000);
  const workload = createWorkload({ port: pair.master.port, writers: 2, dbs: [0, 5], opsPerSecond: 500, seed: 3 });
  await workload.start();
  t.teardown(() => workload.stop().then(() => {}));
  const args = ['resync', '--master', pair.master.url, '--replica', pair.replica.url, '--method', 'copy', '--lease-ms', '1000', '--scan-count', '10'];
  const first = spawnCli(args);
  t.teardown(() => first.kill('SIGKILL'));
  await first.waitForLog((l) => l.msg === 'resync progress' && Number(l.copied) > 0, 20_000, 'copy under way');
  first.kill('SIGKILL');
  await first.exited;
  t.truthy(await pair.replica.client().hget(keys.applied, 'resyncing'), 'the replica is marked');

  const worker = workerFor(t, pair);
  await eventually(() => worker.state === 'resync-needed', 15_000, 'resync-needed');
  await worker.close();

  const again = await runCli([...args.slice(0, -1), '500'], {}, 60_000);
  t.is(again.code, 0, again.stderr.join('\n'));
  const next = workerFor(t, pair);
  await eventually(() => next.state === 'streaming', 15_000, 'streaming after the second resync');
  await workload.stop();
  await waitForDrain(pair.master.client(), pair.replica.client());
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

test('runExclusive pauses a streaming worker: nothing is applied while the job runs, and it streams again after', async (t) => {
  const pair = await pairFor(t);
  const workload = createWorkload({ port: pair.master.port, writers: 2, dbs: [0], opsPerSecond: 400, seed: 9 });
  await workload.start();
  t.teardown(() => workload.stop().then(() => {}));
  const worker = workerFor(t, pair);
  await eventually(() => worker.state === 'streaming', 15_000, 'streaming');
  const replica = pair.replica.client();
  const [first, last, masterAfter] = await worker.runExclusive(async (lease) => {
    t.true(lease.valid());
    const first = await replica.hget(keys.applied, 'seq');
    await new Promise((r) => setTimeout(r, 1500)); // longer than the lease: it is renewed meanwhile
    t.true(lease.valid());
    return [first, await replica.hget(keys.applied, 'seq'), await pair.master.client().hget(keys.meta, 'seq')];
  });
  t.is(last, first, 'nothing applied during the job');
  t.true(Number(masterAfter) > Number(first), 'writes went on meanwhile');
  await eventually(async () => Number(await replica.hget(keys.applied, 'seq')) > Number(masterAfter), 15_000, 'applying again');
  await workload.stop();
  await waitForDrain(pair.master.client(), replica);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

test('a resync run in another process refuses to start while a live consumer holds the lease', async (t) => {
  const pair = await pairFor(t);
  const worker = workerFor(t, pair);
  await eventually(() => worker.state === 'idle' || worker.state === 'streaming', 15_000, 'a leading worker');
  const err = await t.throwsAsync(runResync(resyncOptions(pair)));
  t.is((err as ResyncError).exitCode, 6);
  t.regex(err!.message, /^qsync: resync: a consumer holds the lease of queue 'default'/);
  t.falsy(await pair.replica.client().hget(keys.applied, 'resyncing'), 'the replica was left alone');
});

test('next to a running consumer, qsync resync runs inside it as a control job; the consumer pauses for it and streams after', async (t) => {
  const pair = await pairFor(t);
  await seed(pair.master, [0, 2], 2000);
  const workload = createWorkload({ port: pair.master.port, writers: 2, dbs: [0, 2], opsPerSecond: 400, seed: 5 });
  await workload.start();
  t.teardown(() => workload.stop().then(() => {}));
  const consumer = spawnCli(['consume', '--master', pair.master.url, '--replica', pair.replica.url, '--lease-ms', '1000', '--timeout-ms', '3000']);
  t.teardown(() => consumer.kill('SIGKILL'));
  await consumer.waitForLog((l) => l.state === 'streaming', 20_000, 'streaming');
  // The seeded keys predate the log: only a copy brings them over.
  t.not((await datasetDiff(pair.master, pair.replica)).length, 0);

  const run = await runCli(['resync', '--master', pair.master.url, '--replica', pair.replica.url, '--scan-count', '100'], {}, 60_000);
  t.is(run.code, 0, run.stderr.join('\n'));
  t.regex(run.stderr.join('\n'), /^qsync: a consumer holds the lease of queue 'default': the resync runs inside it, as a control job$/m);
  t.regex(run.stdout.join('\n'), /resync job \S+: copied \d+ keys/);
  await consumer.waitForLog((l) => l.msg === 'exclusive job ended; resuming', 20_000, 'resumed');
  await workload.stop();
  await waitForDrain(pair.master.client(), pair.replica.client());
  // The control jobs' own keys stay on the master.
  t.deepEqual(
    (await datasetDiff(pair.master, pair.replica)).filter((d) => !d.startsWith('db0 qsync-jobs:')),
    [],
  );
});
