/**
 * The consumer: draining the master's log to the replica exactly once, one
 * active worker per queue, and how it reacts when the queue cannot be trusted
 * (resync-needed), when the replica refuses an entry (halted) and when a side
 * is unreachable (backing-off). Real servers, writes through the producer.
 */
import test, { type ExecutionContext } from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { readStatus, type QueueStatus } from '../consumer/queue/status.js';
import type { SyncWorker, WorkerOptions, WorkerState } from '../consumer/drain/worker.js';
import { QueueKeys } from '../shared/keys.js';
import { frameBatch } from '../shared/entry.js';
import { defineScripts } from '../shared/scripts.js';
import { startPair, startWorker, waitForDrain, datasetDiff, type Pair } from './support/fixtures.js';
import { freePort, type RedisServerOptions } from './support/redis-server.js';
import { spawnCli, runCli, type CliProcess } from './support/cli.js';
import { eventually } from './support/wait.js';
import { backoffDelay } from '../consumer/drain/backoff.js';
import { capturedLogs } from './support/logs.js';

const keys = new QueueKeys('qsync', 'default');

/** A master and a replica, destroyed after the test. */
async function pairFor(t: ExecutionContext, master: RedisServerOptions = {}, replica: RedisServerOptions = {}): Promise<Pair> {
  const pair = await startPair(master, replica);
  t.teardown(() => pair.destroy());
  return pair;
}

/** An in-process worker (short timers) that records its states, closed after the test. */
function workerFor(t: ExecutionContext, pair: Pair, options: Partial<WorkerOptions> = {}): SyncWorker & { states: WorkerState[] } {
  const worker = Object.assign(startWorker(pair, options), { states: [] as WorkerState[] });
  worker.on('state', (state: WorkerState) => worker.states.push(state));
  t.teardown(() => worker.close());
  return worker;
}

/** `qsync consume` between the pair as a child process, killed after the test. */
function consumeCli(t: ExecutionContext, pair: Pair, ...extra: string[]): CliProcess {
  const cli = spawnCli([
    'consume',
    '--master',
    pair.master.url,
    '--replica',
    pair.replica.url,
    '--lease-ms',
    '1000',
    '--timeout-ms',
    '3000',
    ...extra,
  ]);
  t.teardown(() => cli.kill('SIGKILL'));
  return cli;
}

/** Matches a log record of a change to one of these states. */
const stateIs =
  (...states: string[]) =>
  (l: Record<string, unknown>) =>
    typeof l.state === 'string' && states.includes(l.state) && l.from !== undefined;

/** Writes INCR and LPUSH through the producer until stop() is called; returns how many calls it made. */
function writeLoad(db: Redis): { stop(): Promise<number> } {
  let running = true;
  let n = 0;
  const done = (async () => {
    while (running) {
      await db.incr('counter');
      await db.lpush('list', String(n++));
    }
    return n;
  })();
  done.catch(() => {}); // a test that fails early tears the servers down under the loop
  return {
    stop: () => {
      running = false;
      return done;
    },
  };
}

/** Waits for the drain, then asserts equal datasets and an empty log. */
async function assertReplicaEqual(t: ExecutionContext, pair: Pair): Promise<void> {
  await waitForDrain(pair.master.client(), pair.replica.client(), { timeoutMs: 20_000 });
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  await eventually(async () => (await pair.master.client().llen(keys.log)) === 0, 5000, 'empty log');
}

/** Applies log entries on the replica with the consumer's apply script, as a worker does. */
async function applyDirectly(pair: Pair, entries: Buffer[]): Promise<(number | string)[]> {
  const replica = pair.replica.client();
  defineScripts(replica);
  const epoch = (await pair.master.client().hget(keys.meta, 'epoch'))!;
  return replica.qsyncApplyBatch(keys.applied, epoch, '0', 'halt', ...frameBatch(entries));
}

/** The states a worker logged changing to, in order. */
const stateChanges = (lines: Record<string, unknown>[]) =>
  lines.filter((l) => l.state !== undefined && l.from !== undefined).map((l) => String(l.state));

/** The queue's status once it shows the state: a worker writes it just after it changes state. */
function statusIn(pair: Pair, state: RegExp): Promise<QueueStatus> {
  const master = pair.master.client();
  return eventually(
    async () => {
      const status = await readStatus(master, 'qsync', 'default');
      // Not yet: the state seen goes into the message of a timeout.
      if (!state.test(status.state)) throw new Error(`status ${status.state} (consumer ${JSON.stringify(status.consumer)})`);
      return status;
    },
    10_000,
    `status ${state}`,
  );
}

/** Runs `qsync status --json` and returns the default queue's row. */
async function cliStatus(pair: Pair): Promise<Record<string, unknown>> {
  const run = await runCli(['status', '--master', pair.master.url, '--json']);
  const rows = JSON.parse(run.stdout.join('\n')) as Record<string, unknown>[];
  return rows.find((r) => r.queue === 'default')!;
}

test('a workload of non-idempotent writes in several dbs drains to an equal replica and an empty log', async (t) => {
  const pair = await pairFor(t);
  workerFor(t, pair, { batchSize: 7, window: 3 });
  const dbs = [0, 2, 5].map((db) => createProducer(pair.master.client(db)));
  // Integer members keep the set an intset, whose DUMP does not depend on hash table history.
  await Promise.all(dbs.map((db) => db.sadd('set', ...Array.from({ length: 400 }, (_, i) => i))));
  await Promise.all(
    dbs.map(async (db, d) => {
      for (let i = 0; i < 60; i++) {
        await db.incr('n');
        await db.lpush('l', `${d}:${i}`);
        await db.hincrby('h', `f${i % 3}`, i);
        await db.spop('set', 2);
        await db.incrbyfloat('f', '0.1');
        await db.multi().incr('m').spop('set').hincrbyfloat('h', 'x', '1.5').rpush('l', 'g').exec();
      }
    }),
  );
  await assertReplicaEqual(t, pair);
  t.is(await pair.replica.client(5).get('n'), '60');
});

test('the apply script skips entries at or below the watermark', async (t) => {
  const pair = await pairFor(t);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 8; i++) await db.incr('n');
  const entries = await pair.master.client().lrangeBuffer(keys.log, 0, -1);
  t.deepEqual(await applyDirectly(pair, entries.slice(0, 5)), [0, 5, 5]);
  t.deepEqual(await applyDirectly(pair, entries.slice(0, 5)), [0, 5, 0], 'the same batch again applies nothing');
  t.deepEqual(await applyDirectly(pair, entries.slice(2, 8)), [0, 8, 3], 'an overlapping batch applies only what is new');
  t.is(await pair.replica.client().get('n'), '8');
});

test('batches follow the backlog: a short queue leaves whole at once, a long one in large batches, all within the byte budget', async (t) => {
  const pair = await pairFor(t);
  const master = pair.master.client();
  defineScripts(master);
  const db = createProducer(pair.master.client());
  const read = async (offset: number, bytes = 1 << 20) => {
    const [, , left, ...entries] = await master.qsyncReadBatchBuffer(keys.log, keys.meta, offset, 1000, bytes, 4);
    return { entries: entries.length, left: Number(left) };
  };
  for (let i = 0; i < 10; i++) await db.incr('n');
  t.deepEqual(await read(0), { entries: 10, left: 0 }, 'fewer than 64: all of them');
  await Promise.all(Array.from({ length: 1990 }, () => db.incr('n')));
  t.deepEqual(await read(0), { entries: 500, left: 1500 }, 'a quarter of 2000');
  t.deepEqual(await read(1800), { entries: 64, left: 136 }, 'never fewer than 64');
  await Promise.all(Array.from({ length: 8000 }, () => db.incr('n')));
  t.deepEqual(await read(0), { entries: 1000, left: 9000 }, 'never more than the batch size');
  const tenEntries = (await master.lrangeBuffer(keys.log, 0, 9)).reduce((sum, e) => sum + e.length, 0);
  t.deepEqual(await read(0, tenEntries), { entries: 10, left: 9990 }, 'within the byte budget');
});

test('a consumer that applied a batch but died before trimming applies nothing twice', async (t) => {
  const pair = await pairFor(t);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 6; i++) await db.multi().incr('n').lpush('l', String(i)).exec();
  // What a worker killed after its apply and before its trim leaves behind.
  t.deepEqual(await applyDirectly(pair, await pair.master.client().lrangeBuffer(keys.log, 0, 3)), [0, 4, 4]);
  t.is(await pair.master.client().llen(keys.log), 6);

  workerFor(t, pair);
  await assertReplicaEqual(t, pair);
  t.is(await pair.replica.client().get('n'), '6');
});

test('consumers SIGKILLed at random moments while writes go on leave each entry applied once', async (t) => {
  const pair = await pairFor(t);
  const load = writeLoad(createProducer(pair.master.client()));
  for (let round = 0; round < 4; round++) {
    const cli = consumeCli(t, pair, '--lease-ms', '300', '--batch-size', '5');
    await cli.waitForLog(stateIs('streaming'), 20_000, 'streaming');
    await sleep(50 + Math.random() * 400);
    cli.kill('SIGKILL');
    await cli.exited;
  }
  const written = await load.stop();
  t.true(Number(await pair.replica.client().hget(keys.applied, 'seq')) > 0, 'the killed consumers applied entries');
  workerFor(t, pair);
  await assertReplicaEqual(t, pair);
  t.is(await pair.replica.client().get('counter'), String(written));
  t.is(await pair.replica.client().llen('list'), written);
});

test.serial('an idle worker blocks instead of polling, and a new write reaches the replica at once', async (t) => {
  const pair = await pairFor(t);
  const worker = workerFor(t, pair, { leaseMs: 6000 });
  const master = pair.master.client();
  await eventually(() => worker.state === 'idle', 10_000, 'idle');
  const processed = async () => Number(/total_commands_processed:(\d+)/.exec(await master.info('stats'))![1]);
  const before = await processed();
  const started = Date.now();
  await sleep(3000);
  const perSecond = ((await processed()) - before) / ((Date.now() - started) / 1000);
  t.log(`idle master: ${perSecond.toFixed(1)} commands/s`);
  t.true(perSecond < 15, `${perSecond} commands/s while idle`);

  const db = createProducer(master);
  const replica = pair.replica.client();
  const latencies: number[] = [];
  for (let i = 0; i < 3; i++) {
    const sent = Date.now();
    await db.set(`k${i}`, 'v');
    await eventually(async () => (await replica.get(`k${i}`)) === 'v', 5000, `k${i} on the replica`, 5);
    latencies.push(Date.now() - sent);
    await sleep(1200); // idle again: the next write must wake the blocked worker
  }
  t.log(`write to replica: ${latencies.join(', ')} ms`);
  t.true(Math.max(...latencies) < 500, `latencies ${latencies.join(', ')} ms`);
});

test('of two consumers one is active; the standby takes over after the active one is killed', async (t) => {
  const pair = await pairFor(t);
  const master = pair.master.client();
  const load = writeLoad(createProducer(pair.master.client()));
  const [a, b] = [consumeCli(t, pair), consumeCli(t, pair)];
  const standby = await eventually(() => [a, b].find((cli) => cli.logs().some(stateIs('standby'))), 20_000, 'a standby');
  const active = standby === a ? b : a;
  const activeId = String((await active.waitForLog(stateIs('streaming', 'idle'), 20_000, 'active')).worker);
  const standbyId = String((await standby.waitForLog(stateIs('standby'))).worker);
  t.is(await master.get(keys.lease), activeId);
  t.is(await master.hget(keys.status, 'consumer'), activeId);
  await statusIn(pair, /^(streaming|idle)$/); // the active consumer's state, not the standby's

  await sleep(1000);
  active.kill('SIGKILL');
  const killed = Date.now();
  await eventually(async () => (await master.get(keys.lease)) === standbyId, 10_000, 'takeover');
  const takeover = Date.now() - killed;
  t.log(`takeover after ${takeover} ms (lease 1000 ms)`);
  t.true(takeover < 1000 + 3000, `takeover took ${takeover} ms`);
  await standby.waitForLog((l) => l.worker === standbyId && l.state === 'streaming', 10_000, 'standby streaming');
  t.is((await statusIn(pair, /^(streaming|idle)$/)).consumer?.id, standbyId);

  const written = await load.stop();
  await assertReplicaEqual(t, pair);
  t.is(await pair.replica.client().get('counter'), String(written));
  standby.kill('SIGTERM');
  t.is((await standby.exited).code, 0);
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal} stops the CLI after the batches in flight, releases the lease and exits 0`, async (t) => {
    const pair = await pairFor(t);
    const master = pair.master.client();
    const db = createProducer(pair.master.client());
    const cli = consumeCli(t, pair, '--batch-size', '20', '--window', '4');
    await cli.waitForLog(stateIs('idle'), 20_000, 'idle');
    const pipeline = db.pipeline();
    for (let i = 0; i < 3000; i++) pipeline.incr('n');
    await pipeline.exec();
    await cli.waitForLog(stateIs('streaming'), 10_000, 'streaming');
    cli.kill(signal);
    t.deepEqual(await cli.exited, { code: 0, signal: null });
    t.is(await master.get(keys.lease), null, 'lease released');
    t.deepEqual(cli.stderr, []);
    // Every entry the replica applied left the log: nothing is left half done.
    const watermark = Number(await pair.replica.client().hget(keys.applied, 'seq'));
    t.true(watermark > 0);
    t.is(Number(await pair.replica.client().get('n')), watermark);
    t.is(await master.llen(keys.log), 3000 - watermark);
  });
}

test('a master restarted without persistence makes the worker stop at resync-needed', async (t) => {
  const pair = await pairFor(t);
  const worker = workerFor(t, pair);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 10; i++) await db.incr('n');
  await waitForDrain(pair.master.client(), pair.replica.client());

  await pair.master.restart({ persistence: 'none' });
  await eventually(() => worker.state === 'resync-needed', 15_000, 'resync-needed');
  const again = createProducer(pair.master.client());
  for (let i = 0; i < 15; i++) await again.incr('n');
  await statusIn(pair, /^resync-needed$/);
  t.is((await cliStatus(pair)).state, 'resync-needed');
  await sleep(1000); // several rechecks
  t.is(worker.state, 'resync-needed');
  t.is(await pair.replica.client().get('n'), '10', 'nothing of the new log was applied');
  t.is(await pair.replica.client().hget(keys.applied, 'seq'), '10');
});

test('a master restarted from a snapshot older than the replica makes the worker stop at resync-needed', async (t) => {
  const pair = await pairFor(t, { persistence: 'rdb' });
  const worker = workerFor(t, pair);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 5; i++) await db.incr('n');
  await pair.master.client().save();
  for (let i = 0; i < 5; i++) await db.incr('n');
  await waitForDrain(pair.master.client(), pair.replica.client());

  await pair.master.stop('SIGKILL'); // the last five writes were never saved
  await pair.master.restart();
  t.is(await pair.master.client().hget(keys.meta, 'seq'), '5');
  await eventually(() => worker.state === 'resync-needed', 15_000, 'resync-needed');
  t.regex(String((await statusIn(pair, /^resync-needed$/)).detail.reason), /master at 5, replica at 10/);
});

test('a master that lost its last writes and reused their sequence numbers before the worker looked is caught', async (t) => {
  const pair = await pairFor(t, { persistence: 'rdb' });
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 5; i++) await db.incr('n');
  await pair.master.client().save();
  for (let i = 0; i < 5; i++) await db.incr('n');
  const first = workerFor(t, pair);
  await waitForDrain(pair.master.client(), pair.replica.client());
  await first.close();

  await pair.master.stop('SIGKILL'); // writes 6 to 10 were never saved
  await pair.master.restart();
  const again = createProducer(pair.master.client());
  for (let i = 0; i < 8; i++) await again.incr('other'); // seq 6 to 13: a new history past the watermark
  const worker = workerFor(t, pair);
  await eventually(() => worker.state === 'resync-needed', 15_000, 'resync-needed');
  t.regex(String((await statusIn(pair, /^resync-needed$/)).detail.reason), /does not follow the entry the replica applied last/);
  t.is(await pair.replica.client().get('other'), null, 'nothing of the new history was applied');
});

test('a replica restarted empty while the log has moved on makes the worker stop at resync-needed', async (t) => {
  const pair = await pairFor(t);
  const worker = workerFor(t, pair);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 5; i++) await db.incr('n');
  await waitForDrain(pair.master.client(), pair.replica.client());

  await pair.replica.restart({ persistence: 'none' });
  for (let i = 0; i < 5; i++) await db.incr('n');
  await eventually(() => worker.state === 'resync-needed', 15_000, 'resync-needed');
  await sleep(500);
  t.is(await pair.replica.client().dbsize(), 0, 'nothing was applied to the empty replica');
});

test('entries removed from the log by hand are a gap: resync-needed, nothing after it applied', async (t) => {
  const pair = await pairFor(t);
  const db = createProducer(pair.master.client());
  const first = workerFor(t, pair);
  for (let i = 0; i < 3; i++) await db.incr('n');
  await waitForDrain(pair.master.client(), pair.replica.client());
  await first.close();

  for (let i = 0; i < 5; i++) await db.incr('n');
  await pair.master.client().ltrim(keys.log, 2, -1);
  const worker = workerFor(t, pair);
  await eventually(() => worker.state === 'resync-needed', 15_000, 'resync-needed');
  t.is(await pair.replica.client().get('n'), '3');
  t.regex(String((await statusIn(pair, /^resync-needed$/)).detail.reason), /entries 4 to 5/);
});

test('a replica restarted with its AOF resumes from its watermark', async (t) => {
  const pair = await pairFor(t, {}, { persistence: 'aof' });
  const worker = workerFor(t, pair);
  const load = writeLoad(createProducer(pair.master.client()));
  await eventually(async () => Number(await pair.replica.client().hget(keys.applied, 'seq')) > 50, 10_000, 'some entries applied');
  await pair.replica.stop('SIGKILL');
  await sleep(300);
  await pair.replica.restart();
  await sleep(300);
  const written = await load.stop();
  await assertReplicaEqual(t, pair);
  t.is(await pair.replica.client().get('counter'), String(written));
  t.false(worker.states.includes('resync-needed'));
});

test('an entry the replica refuses halts the worker until the replica is fixed, without applying any part twice', async (t) => {
  const pair = await pairFor(t);
  const worker = workerFor(t, pair);
  const replica = pair.replica.client();
  await replica.set('k', 'a string');
  // The master holds k as a list (written around qsync): the replica's k is
  // not a key the master lacked, which the replica would delete first.
  await pair.master.client().rpush('k', 'm');
  const db = createProducer(pair.master.client());
  await db.incr('before');
  await db.multi().incr('a').lpush('k', 'x').incr('b').exec();
  await db.incr('after');

  await eventually(() => worker.state === 'halted', 10_000, 'halted');
  const status = await statusIn(pair, /^halted$/);
  t.like(status.detail, { seq: 2, command: 'LPUSH k x' });
  t.regex(String(status.detail.error), /WRONGTYPE/);
  await sleep(500); // rechecks while halted change nothing
  t.deepEqual([await replica.get('before'), await replica.get('a'), await replica.get('after')], ['1', '1', null]);

  await replica.del('k');
  await replica.rpush('k', 'm');
  await assertReplicaEqual(t, pair);
  t.is(await replica.get('a'), '1', 'the part applied before the refusal is not applied again');
  t.not(worker.state, 'halted');
});

test('an entry for a db the replica does not have halts the worker; the entries before it are applied once', async (t) => {
  const pair = await pairFor(t, { args: ['--databases', '32'] });
  // Written before the worker starts, so that they reach the replica in one batch.
  const db = createProducer(pair.master.client());
  await db.incr('n');
  await createProducer(pair.master.client(20)).incr('n');
  await db.incr('n');

  const worker = workerFor(t, pair);
  await eventually(() => worker.state === 'halted', 10_000, 'halted');
  await sleep(500); // rechecks while halted
  t.like((await statusIn(pair, /^halted$/)).detail, { seq: 2, command: 'SELECT 20' });
  t.is(await pair.replica.client().get('n'), '1');
  t.is(await pair.replica.client().hget(keys.applied, 'seq'), '1');
});

test('garbage in the log halts the worker without crashing it; it resumes once the garbage is gone', async (t) => {
  const pair = await pairFor(t);
  const worker = workerFor(t, pair);
  const master = pair.master.client();
  const db = createProducer(pair.master.client());
  await db.incr('n');
  await waitForDrain(master, pair.replica.client());
  const garbage = Buffer.from([0xc1, 0xff, 0x00, 0x93, 0x01]);
  await master.rpush(keys.log, garbage);
  await db.incr('n');

  await eventually(() => worker.state === 'halted', 10_000, 'halted');
  const { detail } = await statusIn(pair, /^halted$/);
  t.is(detail.log, keys.log);
  t.deepEqual(await master.lindexBuffer(keys.log, Number(detail.index)), garbage, 'the detail points at the garbage');
  await sleep(500);
  t.is(worker.state, 'halted');
  await master.lrem(keys.log, 1, garbage);
  await assertReplicaEqual(t, pair);
  t.is(await pair.replica.client().get('n'), '2');
});

for (const side of ['master', 'replica'] as const) {
  test(`an unreachable ${side} puts the worker in backing-off, logged once, and it drains after the ${side} returns`, async (t) => {
    const pair = await pairFor(t, { persistence: 'aof' }, { persistence: 'aof' });
    const { lines, logger } = capturedLogs();
    const worker = workerFor(t, pair, { logger });
    const db = createProducer(pair.master.client());
    for (let i = 0; i < 20; i++) await db.incr('n');
    await waitForDrain(pair.master.client(), pair.replica.client());

    const server = pair[side];
    await server.stop();
    if (side === 'replica') for (let i = 0; i < 20; i++) await db.incr('n');
    await eventually(() => worker.state === 'backing-off', 10_000, 'backing-off');
    await sleep(2500);
    await server.restart();
    const again = createProducer(pair.master.client());
    for (let i = 0; i < 20; i++) await again.incr('n');
    await assertReplicaEqual(t, pair);
    t.is(await pair.replica.client().get('n'), side === 'replica' ? '60' : '40');

    const changes = stateChanges(lines);
    t.log(changes.join(' → '));
    t.is(changes.filter((s) => s === 'backing-off').length, 1, changes.join(' → '));
  });
}

test('a replica that refuses every write halts the worker with the reason, logged once, until it accepts writes again', async (t) => {
  const pair = await pairFor(t);
  const { lines, logger } = capturedLogs();
  const worker = workerFor(t, pair, { logger });
  const db = createProducer(pair.master.client());
  await db.incr('n');
  await waitForDrain(pair.master.client(), pair.replica.client());
  // A replica of an absent server is read-only and keeps its data.
  await pair.replica.client().replicaof('127.0.0.1', String(await freePort()));
  await db.incr('n');
  await eventually(() => worker.state === 'halted', 10_000, 'halted');
  await sleep(1500); // many rechecks at this interval
  await pair.replica.client().replicaof('NO', 'ONE');
  await assertReplicaEqual(t, pair);

  const changes = stateChanges(lines);
  t.is(changes.filter((s) => s === 'halted').length, 1, changes.join(' → '));
  t.is(changes[changes.indexOf('halted') + 1], 'streaming', changes.join(' → '));
  const errors = lines.filter((l) => l.level === 50);
  t.is(errors.length, 1, JSON.stringify(errors));
  t.is(errors[0]?.state, 'halted');
  t.regex(String(errors[0]?.reason), /the replica refuses every write: it is read-only/);
  t.regex(String(errors[0]?.error), /READONLY/);
});

test('reconnects are quick for the first seconds of an outage, then back off exponentially up to the cap, with jitter', (t) => {
  const options = { minMs: 100, maxMs: 30_000, quickMs: 5000 };
  const delays = (attempt: number) => Array.from({ length: 200 }, () => backoffDelay(attempt, options));
  for (const attempt of [1, 25, 50]) {
    const d = delays(attempt);
    t.true(
      d.every((ms) => ms >= 50 && ms <= 150),
      `attempt ${attempt}: ${Math.min(...d)}..${Math.max(...d)}`,
    );
  }
  const late = delays(60);
  t.true(late.every((ms) => ms >= 100 && ms <= 30_000));
  t.true(Math.max(...late) > 5000, 'the delays grow once the outage lasts');
  t.true(new Set(late).size > 100, 'jittered');
  t.true(
    delays(1000).every((ms) => ms <= 30_000),
    'capped',
  );
});
