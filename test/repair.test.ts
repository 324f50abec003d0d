/**
 * Repair: after writes went unqueued under the `mark-dirty` policy, copying
 * only the keys recorded dirty, while writers go on, brings the replica back
 * to the master's state, and the consumer streams from there. Real servers,
 * writes through the producer, the CLI as users run it.
 */
import test, { type ExecutionContext } from 'ava';
import { createProducer } from '../producer/index.js';
import { runRepair, RepairError, type RepairOptions } from '../consumer/copy/repair.js';
import { setLimits } from '../consumer/queue/limits.js';
import type { WorkerState } from '../consumer/drain/worker.js';
import { ExitCode } from '../shared/errors.js';
import { QueueKeys } from '../shared/keys.js';
import { startPair, startWorker, waitForDrain, datasetDiff, type Pair } from './support/fixtures.js';
import { createWorkload, startMoves, type Workload } from './support/workload.js';
import { runCli, spawnCli } from './support/cli.js';
import { eventually } from './support/wait.js';

const keys = new QueueKeys('qsync', 'default');

async function pairFor(t: ExecutionContext): Promise<Pair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  return pair;
}

function repairOptions(pair: Pair, extra: Partial<RepairOptions> = {}): RepairOptions {
  return {
    master: { host: pair.master.host, port: pair.master.port },
    replica: { host: pair.replica.host, port: pair.replica.port },
    leaseMs: 2000,
    scanCount: 10,
    ...extra,
  };
}

/** Keys written through the queue and applied, which the workload never touches afterwards. */
async function syncedCalmKeys(t: ExecutionContext, pair: Pair, n: number): Promise<void> {
  const producer = createProducer(pair.master.client());
  for (let i = 0; i < n; i++) await producer.set(`calm:${i}`, String(i));
  const worker = startWorker(pair);
  await waitForDrain(pair.master.client(), pair.replica.client());
  await worker.close();
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
}

/** Writers with mixed non-idempotent writes (INCR, LPUSH, SPOP, INCRBYFLOAT, MULTI...) in dbs 0 and 3, stopped after the test. */
async function writers(t: ExecutionContext, pair: Pair, seed: number): Promise<Workload> {
  const workload = createWorkload({ port: pair.master.port, writers: 4, dbs: [0, 3], opsPerSecond: 1500, seed });
  await workload.start();
  t.teardown(() => workload.stop().then(() => {}));
  return workload;
}

/** Caps the log at `entries` under mark-dirty and waits until at least `dirty` keys went unqueued. */
async function overflow(pair: Pair, entries: number, dirty: number): Promise<void> {
  const master = pair.master.client();
  await setLimits(master, keys, { maxEntries: entries, policy: 'mark-dirty' });
  await eventually(async () => (await master.scard(keys.dirty)) >= dirty, 20_000, `${dirty} dirty keys`);
}

test('repair after overflow ends equal and copies only the dirty keys', async (t) => {
  const pair = await pairFor(t);
  await syncedCalmKeys(t, pair, 50);
  const master = pair.master.client();
  const replica = pair.replica.client();
  const workload = await writers(t, pair, 11);
  await overflow(pair, 30, 20);
  t.is(await master.hget(keys.meta, 'state'), 'repair-needed');
  // By hand, on the replica, a key no write touches: only a copy of it would undo this.
  await replica.set('calm:7', 'changed on the replica');
  // Room in the log again; writers keep writing through the repair.
  await setLimits(master, keys, { maxEntries: 1_000_000 });

  const phases = new Set<string>();
  const result = await runRepair(repairOptions(pair, { onProgress: (p) => phases.add(p.phase) }));
  t.true(result.repaired);
  t.false(result.dirtyAgain);
  t.true(result.dirtyKeys >= 20);
  t.is(result.copied, result.dirtyKeys, 'each dirty key copied once, and no other key');
  t.true(result.replayed > 0, 'the entries queued meanwhile were replayed');
  t.deepEqual([...phases], ['copy', 'replay', 'done']);
  t.is(await master.hget(keys.meta, 'state'), null, 'the queue state is ok again');
  t.deepEqual(await master.exists(keys.dirty, keys.repairing), 0);

  const worker = startWorker(pair);
  t.teardown(() => worker.close());
  await eventually(() => worker.state === 'streaming' || worker.state === 'idle', 15_000, 'streaming after the repair');
  await workload.stop();
  await waitForDrain(master, replica);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), ['db0 calm:7: value differs'], 'equal but for the key changed by hand');
  t.deepEqual((await workload.ledger.check(pair.replica)).problems, [], 'no write lost or doubled on the replica');
});

test('a repair stays exact while multi-key writes move members and values between dirty and clean keys', async (t) => {
  const pair = await pairFor(t);
  const master = pair.master.client();
  const producer = createProducer(pair.master.client());
  for (let i = 0; i < 8; i++) {
    await producer.sadd(`pool:${i}`, ...Array.from({ length: 20 }, (_, j) => `${i}:${j}`));
    await producer.set(`hot:${i}`, String(i));
  }
  const worker = startWorker(pair);
  await waitForDrain(master, pair.replica.client());
  await worker.close();
  // SMOVE, RENAME and LMOVE between few keys: some go dirty in the overflow, the others stay clean.
  const movers = startMoves(pair.master, 0, 21);
  t.teardown(() => movers.stop().then(() => {}));
  await overflow(pair, 40, 6);
  await setLimits(master, keys, { maxEntries: 1_000_000 });

  const result = await runRepair(repairOptions(pair, { scanCount: 2 }));
  t.true(result.repaired);
  t.true(result.copied >= result.dirtyKeys);
  const resumed = startWorker(pair);
  t.teardown(() => resumed.close());
  t.true((await movers.stop()) > 0);
  await waitForDrain(master, pair.replica.client());
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  t.log(
    `${result.dirtyKeys} dirty keys, ${result.copied} copies, ${result.recopies} copied again for a multi-key command, ${result.replayed} entries replayed`,
  );
});

test('a repair that stops half way leaves the replica marked, and running it again finishes the job', async (t) => {
  const pair = await pairFor(t);
  await syncedCalmKeys(t, pair, 10);
  const workload = await writers(t, pair, 12);
  await overflow(pair, 20, 20);
  await setLimits(pair.master.client(), keys, { maxEntries: 1_000_000 });

  const stop = new AbortController();
  const err = await t.throwsAsync(
    runRepair(repairOptions(pair, { scanCount: 5, signal: stop.signal, onProgress: (p) => p.copied > 0 && stop.abort() })),
    { instanceOf: RepairError },
  );
  t.is(err?.exitCode, ExitCode.repairNeeded);
  t.regex(err!.message, /^qsync: repair: interrupted; the replica stays marked, run the repair again$/);
  t.is(await pair.master.client().exists(keys.repairing), 1, 'the keys to repair are kept');

  // A consumer will not stream onto a half-repaired replica.
  const worker = Object.assign(startWorker(pair), { states: [] as WorkerState[] });
  worker.on('state', (s: WorkerState) => worker.states.push(s));
  await eventually(() => worker.state === 'resync-needed', 15_000, 'resync-needed');
  await worker.close();

  const result = await runRepair(repairOptions(pair));
  t.true(result.repaired);
  t.false(worker.states.includes('streaming'));
  const resumed = startWorker(pair);
  t.teardown(() => resumed.close());
  await workload.stop();
  await waitForDrain(pair.master.client(), pair.replica.client());
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

test('a repair goes on from an entry the replica applied in part, without running its first commands twice', async (t) => {
  const pair = await pairFor(t);
  const [master, replica] = [pair.master.client(), pair.replica.client()];
  const producer = createProducer(pair.master.client());
  await producer.rpush('k', 'a');
  await syncedCalmKeys(t, pair, 0);
  // By hand on the replica: k is a set there, so the LPUSH of the group is refused after its INCR ran.
  await replica.del('k');
  await replica.sadd('k', 'm');
  await producer.multi().incr('n').lpush('k', 'x').exec();
  const worker = startWorker(pair);
  await eventually(() => worker.state === 'halted', 15_000, 'halted at the group');
  await worker.close();
  t.is(await replica.get('n'), '1');
  t.regex((await replica.hget(keys.applied, 'part')) ?? '', /^\d+:1$/, 'the INCR is recorded as done');

  await setLimits(master, keys, { maxEntries: 1, policy: 'mark-dirty' });
  await producer.incr('dirty');
  await setLimits(master, keys, { maxEntries: 1_000_000 });
  // The operator puts k back as it was before the group.
  await replica.del('k');
  await replica.rpush('k', 'a');
  const result = await runRepair(repairOptions(pair));
  t.is(result.dirtyKeys, 1);
  t.is(await replica.get('n'), '1', 'the INCR that ran before the refusal ran once');
  t.deepEqual(await replica.lrange('k', 0, -1), ['x', 'a']);
  t.is(await replica.hget(keys.applied, 'part'), null);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

test('qsync repair --job waits for room in the log, runs inside the consumer, which streams after', async (t) => {
  const pair = await pairFor(t);
  const master = pair.master.client();
  const producer = createProducer(pair.master.client());
  await setLimits(master, keys, { maxEntries: 20, policy: 'mark-dirty' });
  // The first 20 are queued; the rest go unqueued, and every key is written again among them.
  for (let i = 0; i < 200; i++) await producer.incr(`n:${i % 40}`);
  t.is(await master.llen(keys.log), 20);
  t.is(await master.scard(keys.dirty), 40);
  const consumer = spawnCli(['consume', '--master', pair.master.url, '--replica', pair.replica.url, '--lease-ms', '1000', '--timeout-ms', '3000']);
  t.teardown(() => consumer.kill('SIGKILL'));

  const run = await runCli(['repair', '--job', '--master', pair.master.url], {}, 60_000);
  t.is(run.code, 0, run.stderr.join('\n'));
  t.regex(run.stdout.join('\n'), /^repair job \S+: copied 40 keys \(40 dirty\), replayed \d+ entries/m);
  await producer.incr('n:0');
  await waitForDrain(master, pair.replica.client());
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  const status = await runCli(['status', '--master', pair.master.url]);
  t.is(status.code, ExitCode.ok, status.stdout.join('\n'));
  t.regex(status.stdout.join('\n'), /^ {2}state +(streaming|idle)$/m, 'the consumer speaks for the queue again');
  t.regex(status.stdout.join('\n'), /^ {2}queue state +ok$/m);
});

test('qsync repair says when there is nothing to repair, when the log is still full, and when only a resync can help', async (t) => {
  const pair = await pairFor(t);
  const master = pair.master.client();
  const producer = createProducer(pair.master.client());
  const repair = () => runCli(['repair', '--master', pair.master.url, '--replica', pair.replica.url]);
  await producer.set('a', '1');
  const worker = startWorker(pair);
  await waitForDrain(master, pair.replica.client());
  await worker.close();

  const nothing = await repair();
  t.is(nothing.code, ExitCode.ok, nothing.stderr.join('\n'));
  t.regex(nothing.stdout.join('\n'), /^repair: no dirty keys; nothing to repair$/m);

  await setLimits(master, keys, { maxEntries: 2, policy: 'mark-dirty', maxDirty: 3 });
  for (const k of ['b', 'c', 'd']) await producer.set(k, '1');
  const full = await repair();
  t.is(full.code, ExitCode.repairNeeded);
  t.regex(full.stderr.join('\n'), /^qsync: repair: the log is still at its cap \(max entries 2\); let the consumer drain it or raise the cap/);
  t.is(await master.hget(keys.meta, 'state'), 'repair-needed', 'nothing changed');
  t.deepEqual((await master.smembers(keys.dirty)).sort(), ['0:d']);
  t.is(await pair.replica.client().hget(keys.applied, 'resyncing'), null, 'the replica was left alone');

  for (const k of ['e', 'f', 'g']) await producer.set(k, '1');
  const tooMany = await repair();
  t.is(tooMany.code, ExitCode.resyncNeeded);
  t.regex(
    tooMany.stderr.join('\n'),
    /^qsync: repair: more keys went unqueued than the queue records \(--max-dirty\); rebuild the replica with qsync resync$/,
  );
});
