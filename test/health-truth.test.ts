/**
 * Health that tells the truth: a replica that refuses every write shows as
 * halted (and `qsync status` exits 7) until it accepts writes again; a
 * consumer that lost its lease says so as a warning and stops claiming to
 * drain; the master knows the head entry of its log without reading all of
 * it; a write the producer refuses rejects on a later turn of the event loop
 * and is counted; integer replies past 2^53 are what Redis returned; verify
 * does not wait for entries the consumer will never apply. Real servers,
 * writes through the producer.
 */
import test, { type ExecutionContext } from 'ava';
import type { Redis } from 'ioredis';
import { createProducer, QueueFullError, UnsupportedCommandError } from '../producer/index.js';
import { readStatus } from '../consumer/queue/status.js';
import { SyncWorker, type WorkerOptions } from '../consumer/drain/worker.js';
import { workerMetrics } from '../consumer/metrics/metrics.js';
import { verify } from '../consumer/verify/verify.js';
import { formatResult } from '../consumer/verify/result.js';
import { ReplyCode } from '../shared/reply-codes.js';
import { QueueKeys } from '../shared/keys.js';
import { createLogger } from '../shared/logger.js';
import { defineScripts } from '../shared/scripts.js';
import { ExitCode } from '../shared/errors.js';
import { startPair, startWorker, waitForDrain, datasetDiff, type Pair } from './support/fixtures.js';
import { freePort } from './support/redis-server.js';
import { runCli, spawnCli } from './support/cli.js';
import { eventually } from './support/wait.js';
import { capturedLogs } from './support/logs.js';

const keys = new QueueKeys('qsync', 'default');

async function pairFor(t: ExecutionContext): Promise<Pair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  return pair;
}

function workerFor(t: ExecutionContext, pair: Pair, options: Partial<WorkerOptions> = {}): SyncWorker {
  const worker = startWorker(pair, options);
  t.teardown(() => worker.close());
  return worker;
}

/** Ways a replica refuses every write, each with how to undo it. */
const refusals: { name: string; reason: RegExp; refuse(replica: Redis): Promise<void>; accept(replica: Redis): Promise<void>; user?: boolean }[] = [
  {
    name: 'read-only (a replica of another server)',
    reason: /the replica refuses every write: it is read-only/,
    refuse: async (r) => void (await r.replicaof('127.0.0.1', String(await freePort()))),
    accept: async (r) => void (await r.replicaof('NO', 'ONE')),
  },
  {
    name: 'out of memory (maxmemory 1, noeviction)',
    reason: /the replica refuses every write: it is out of memory/,
    refuse: async (r) => void (await r.config('SET', 'maxmemory-policy', 'noeviction', 'maxmemory', '1')),
    accept: async (r) => void (await r.config('SET', 'maxmemory', '0')),
  },
  {
    name: 'an ACL user without write permission',
    reason: /the replica refuses every write: it does not give this user the permissions the consumer needs/,
    refuse: async (r) => void (await r.call('ACL', 'SETUSER', 'sync', '-@write')),
    accept: async (r) => void (await r.call('ACL', 'SETUSER', 'sync', '+@write')),
    user: true,
  },
];

for (const refusal of refusals) {
  test(`a replica that refuses every write, ${refusal.name}, shows as halted with the reason and resumes by itself once it accepts writes`, async (t) => {
    const pair = await pairFor(t);
    const admin = pair.replica.client();
    let replica: WorkerOptions['replica'] = { host: pair.replica.host, port: pair.replica.port };
    if (refusal.user) {
      await admin.call('ACL', 'SETUSER', 'sync', 'on', '>pw', '~*', '&*', '+@all');
      replica = { ...replica, username: 'sync', password: 'pw' };
    }
    const { lines, logger } = capturedLogs();
    const worker = workerFor(t, pair, { replica, logger });
    const db = createProducer(pair.master.client());
    await db.incr('n');
    await waitForDrain(pair.master.client(), admin);

    await refusal.refuse(admin);
    await db.incr('n');
    await eventually(() => worker.state === 'halted', 10_000, 'halted');
    const status = await eventually(
      async () => {
        const s = await readStatus(pair.master.client(), 'qsync', 'default');
        return s.state === 'halted' ? s : undefined;
      },
      5000,
      'halted in the status',
    );
    t.regex(String(status.detail.reason), refusal.reason);
    t.is(status.detail.side, 'replica');
    const errors = lines.filter((l) => Number(l.level) >= 50);
    t.is(errors.length, 1, JSON.stringify(errors));
    t.is(errors[0]?.state, 'halted');
    t.false(lines.some((l) => l.msg === 'unexpected error; retrying'));

    await refusal.accept(admin);
    await waitForDrain(pair.master.client(), admin, { timeoutMs: 20_000 });
    t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
    await eventually(() => worker.state === 'streaming' || worker.state === 'idle', 5000, 'draining again');
  });
}

test('qsync status shows a replica that refuses every write as halted with the reason, in text and JSON, and exits 7', async (t) => {
  const pair = await pairFor(t);
  const worker = workerFor(t, pair);
  const db = createProducer(pair.master.client());
  await db.set('k', 'v');
  await waitForDrain(pair.master.client(), pair.replica.client());
  await pair.replica.client().replicaof('127.0.0.1', String(await freePort()));
  await db.set('k', 'w');
  await eventually(() => worker.state === 'halted', 10_000, 'halted');
  await eventually(async () => (await readStatus(pair.master.client(), 'qsync', 'default')).state === 'halted', 5000, 'halted in the status');

  const text = await runCli(['status', '--master', pair.master.url]);
  t.is(text.code, ExitCode.halted, text.stderr.join('\n'));
  const line = text.stdout.find((l) => l.trim().startsWith('state '));
  t.regex(String(line), /halted.*the replica refuses every write: it is read-only/);

  const json = await runCli(['status', '--master', pair.master.url, '--json']);
  t.is(json.code, ExitCode.halted);
  const [row] = JSON.parse(json.stdout.join('\n')) as { state: string; detail: { reason: string; error: string } }[];
  t.is(row.state, 'halted');
  t.regex(row.detail.reason, /read-only/);
  t.regex(row.detail.error, /^READONLY/);
});

test('a consumer whose lease was taken over is warned, not errored, stands by, and the status stops showing it streaming', async (t) => {
  const pair = await pairFor(t);
  const master = pair.master.client();
  const db = createProducer(pair.master.client());
  // A backlog that keeps the worker confirming batches when its lease goes.
  for (let i = 0; i < 40; i++) await Promise.all(Array.from({ length: 500 }, (_v, j) => db.incr(`n${j % 50}`)));
  const { lines, logger } = capturedLogs();
  const worker = workerFor(t, pair, { logger, batchSize: 64, window: 2, leaseMs: 3000 });
  await eventually(() => worker.state === 'streaming', 10_000, 'streaming');
  await eventually(async () => (await readStatus(master, 'qsync', 'default')).state === 'streaming', 5000, 'streaming in the status');

  // What a standby does once this consumer was paused for longer than the lease.
  await master.set(keys.lease, 'standby-consumer', 'PX', 4000);
  await eventually(() => worker.state === 'standby', 10_000, 'standby');
  const status = await readStatus(master, 'qsync', 'default');
  t.is(status.consumer?.id, 'standby-consumer');
  t.not(status.state, 'streaming');
  t.deepEqual(
    lines.filter((l) => Number(l.level) >= 50),
    [],
  );
  t.true(
    lines.some((l) => l.level === 40 && /lease/.test(String(l.msg))),
    'a warning says the lease was lost',
  );

  // The standby went away: this one takes the lease again and finishes, each entry once.
  await master.del(keys.lease);
  await waitForDrain(master, pair.replica.client(), { timeoutMs: 30_000 });
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  t.is(await pair.replica.client().get('n0'), '400');
});

test('a consumer paused (SIGSTOP) for longer than its lease, taken over by a standby, logs no error when it wakes and stands by', async (t) => {
  const pair = await pairFor(t);
  const master = pair.master.client();
  const consume = () => {
    const cli = spawnCli([
      'consume',
      '--master',
      pair.master.url,
      '--replica',
      pair.replica.url,
      '--lease-ms',
      '1000',
      '--batch-size',
      '64',
      '--window',
      '2',
      '--log-level',
      'debug',
    ]);
    t.teardown(() => cli.kill('SIGKILL'));
    return cli;
  };
  const db = createProducer(pair.master.client());
  let writing = true;
  const load = (async () => {
    let n = 0;
    while (writing) await Promise.all(Array.from({ length: 50 }, () => db.incr(`c${n++ % 20}`)));
    return n;
  })();
  const active = consume();
  await active.waitForLog((l) => l.state === 'streaming', 20_000, 'streaming');
  const standby = consume();
  await standby.waitForLog((l) => l.state === 'standby', 20_000, 'standby');

  active.kill('SIGSTOP');
  await standby.waitForLog((l) => l.state === 'streaming' || l.state === 'idle', 20_000, 'the standby took over');
  const status = await readStatus(master, 'qsync', 'default');
  t.not(status.consumer?.id, undefined);
  t.true(status.state === 'streaming' || status.state === 'idle' || status.state === 'starting', status.state);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  active.kill('SIGCONT');
  await active.waitForLog((l) => l.state === 'standby', 10_000, 'the woken consumer stands by');
  writing = false;
  const written = await load;
  await waitForDrain(master, pair.replica.client(), { timeoutMs: 30_000 });
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  const counters = await pair.replica.client().mget(Array.from({ length: 20 }, (_v, i) => `c${i}`));
  t.is(
    counters.reduce((sum, v) => sum + Number(v ?? 0), 0),
    written,
    'each increment applied once',
  );
  t.deepEqual(
    active.logs().filter((l) => Number(l.level) >= 50),
    [],
  );
  t.deepEqual(
    standby.logs().filter((l) => Number(l.level) >= 50),
    [],
  );
});

test('the master knows the head entry by its length and first bytes: a confirmation naming another entry trims nothing, and no other byte is read', async (t) => {
  const pair = await pairFor(t);
  const master = pair.master.client();
  defineScripts(master);
  const db = createProducer(pair.master.client());
  await db.set('big', Buffer.alloc(1024 * 1024, 'x'));
  const [entry] = await master.lrangeBuffer(keys.log, 0, 0);
  await master.set(keys.lease, 'me', 'PX', 60_000);
  const id = (e: Buffer) => Buffer.concat([Buffer.from(`${e.length}:`), e.subarray(0, 64)]);
  const trim = (named: Buffer, token = 'me') =>
    master.qsyncTrim(keys.log, keys.lease, keys.status, keys.meta, token, 1, named, 1, String(Date.now()), entry.length);

  t.is(await trim(id(entry), 'another'), ReplyCode.leaseLost);
  const otherStart = Buffer.from(entry);
  otherStart[5] ^= 1;
  t.is(await trim(id(otherStart)), ReplyCode.headChanged, 'other first bytes');
  t.is(await trim(id(entry.subarray(0, entry.length - 1))), ReplyCode.headChanged, 'another length');
  t.is(await master.llen(keys.log), 1);

  // Bytes past the start are never read: the check costs the same for a 20 MB entry as for a small one.
  const otherEnd = Buffer.from(entry);
  otherEnd[entry.length - 100] ^= 1;
  t.is(await trim(id(otherEnd)), ReplyCode.ok);
  t.is(await master.llen(keys.log), 0);
});

/** Calls write again at once after each failure for ms; returns how many times it failed. */
async function retryAtOnce(write: () => Promise<unknown>, ms: number): Promise<number> {
  let failures = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      await write();
    } catch {
      failures++;
    }
  }
  return failures;
}

/** How late a 50 ms timer set now fires while fn runs. */
async function timerDelay(fn: () => Promise<unknown>): Promise<number> {
  const set = Date.now();
  let fired = 0;
  setTimeout(() => (fired = Date.now()), 50);
  await fn();
  return fired === 0 ? Infinity : fired - set - 50;
}

// Serial: the other tests of this file would share the event loop it measures.
test.serial(
  'writes refused in a loop that retries at once reject on a later turn: timers keep firing, and each refusal is an event and counted',
  async (t) => {
    const pair = await pairFor(t);
    const master = pair.master.client();
    const db = createProducer(pair.master.client());
    const events: Error[] = [];
    db.on('qsync:refused', (err: Error) => events.push(err));
    const count = (kind: new (...args: never[]) => Error) => events.filter((e) => e instanceof kind).length;

    let unsupported = 0;
    const late = await timerDelay(async () => (unsupported = await retryAtOnce(() => db.swapdb(0, 1), 1000)));
    t.true(late < 200, `the timer fired ${late} ms late`);
    t.true(unsupported > 10, `${unsupported} refusals`);
    t.is(count(UnsupportedCommandError), unsupported);

    // A queue capped at one entry, full once it holds it.
    await master.hset(keys.meta, 'maxEntries', '1', 'policy', 'reject');
    await db.set('first', '1');
    let full = 0;
    const lateFull = await timerDelay(async () => (full = await retryAtOnce(() => db.set('k', 'v'), 1000)));
    t.true(lateFull < 200, `the timer fired ${lateFull} ms late`);
    t.true(full > 10, `${full} refusals`);
    // Writes of one tick go in one call, refused whole: each counts.
    const same = await Promise.allSettled([db.incr('a'), db.incr('b'), db.incr('c')]);
    t.true(same.every((r) => r.status === 'rejected' && r.reason instanceof QueueFullError));
    await t.throwsAsync(db.multi().incr('a').incr('b').exec(), { instanceOf: QueueFullError });
    const piped = await db.pipeline().incr('a').incr('b').exec();
    t.true(piped?.every(([err]) => err instanceof QueueFullError));
    const refusedFull = full + 3 + 1 + 2;
    t.is(count(QueueFullError), refusedFull);
    t.is(Number(await master.hget(keys.meta, 'refused')), refusedFull);
    t.is((await readStatus(master, 'qsync', 'default')).refusedWrites, refusedFull);

    const worker = new SyncWorker({
      master: { host: pair.master.host, port: pair.master.port },
      replica: { host: pair.replica.host, port: pair.replica.port },
      logger: createLogger('silent'),
    });
    t.teardown(() => worker.close());
    const scrape = await workerMetrics(worker, master, 'qsync', 'default').metrics();
    t.regex(scrape, new RegExp(`^qsync_writes_refused_total\\{queue="default"\\} ${refusedFull}$`, 'm'));
  },
);

test('an integer reply past 2^53 is what plain ioredis returns: single, batched, in multi() and pipeline(), with stringNumbers and Buffer replies', async (t) => {
  const pair = await pairFor(t);
  for (const stringNumbers of [false, true]) {
    const plain = pair.master.client(0, { stringNumbers });
    const db = createProducer(pair.master.client(0, { stringNumbers }));
    const start = '9007199254740000';
    // The same counters on both sides: p* through plain ioredis, q* through the producer.
    await plain.mset('p', start, 'p2', start, 'q', start, 'q2', start);
    await plain.hset('ph', 'f', start);
    await plain.hset('qh', 'f', start);
    const steps = ['991', '1', '2', '3', '7', '1000', '12345', '123456789', '4000000000000000', '1000000000000000000', '3'];
    for (const step of steps) {
      t.deepEqual(await db.incrby('q', step), await plain.incrby('p', step), `incrby ${step}, stringNumbers ${stringNumbers}`);
      t.deepEqual(await db.hincrby('qh', 'f', step), await plain.hincrby('ph', 'f', step), `hincrby ${step}`);
      t.deepEqual(await db.callBuffer('INCRBY', 'q', 1), await plain.callBuffer('INCRBY', 'p', 1), 'callBuffer');
      t.deepEqual(await db.incr('q'), await plain.incr('p'), 'incr');
      t.deepEqual(await db.decrby('q2', step), await plain.decrby('p2', step), `decrby ${step}`);
      t.deepEqual(await db.decr('q2'), await plain.decr('p2'), 'decr');
      // Writes of one tick share a script call.
      t.deepEqual(
        await Promise.all([db.incrby('q', step), db.set('x', 'y'), db.incr('q')]),
        await Promise.all([plain.incrby('p', step), plain.set('x', 'y'), plain.incr('p')]),
        'batched',
      );
      t.deepEqual(
        await db.multi().incrby('q', step).get('q').hincrby('qh', 'f', 1).exec(),
        await plain.multi().incrby('p', step).get('p').hincrby('ph', 'f', 1).exec(),
        'multi',
      );
      t.deepEqual(
        await db.pipeline().incrby('q', step).get('q').decr('q2').exec(),
        await plain.pipeline().incrby('p', step).get('p').decr('p2').exec(),
        'pipeline',
      );
      const viaCallback = (client: Redis, key: string) =>
        new Promise((resolve, reject) => client.incrby(key, step, (err, n) => (err ? reject(err) : resolve(n))));
      t.deepEqual(await viaCallback(db, 'q'), await viaCallback(plain, 'p'), 'callback');
    }
    t.is(await db.get('q'), await plain.get('p'));
    if (stringNumbers) t.is(String(await db.incr('q')), String(BigInt((await plain.get('p')) ?? '') + 1n), 'exact with stringNumbers');
  }
});

test('while the replica needs a resync, verify reports the keys that queued entries touch as differences, not in flight', async (t) => {
  const pair = await pairFor(t);
  const master = pair.master.client();
  const db = createProducer(pair.master.client());
  const first = startWorker(pair);
  await db.set('k', '1');
  await waitForDrain(master, pair.replica.client());
  await first.close();
  await db.set('k', '2');
  // The entry the replica needs next is lost: only a resync can help now.
  await master.del(keys.log);
  await db.set('k', '3');
  await db.set('other', 'x');

  const worker = workerFor(t, pair);
  await eventually(() => worker.state === 'resync-needed', 10_000, 'resync-needed');
  await eventually(async () => (await readStatus(master, 'qsync', 'default')).state === 'resync-needed', 5000, 'resync-needed in the status');
  const sides = { master: { host: pair.master.host, port: pair.master.port }, replica: { host: pair.replica.host, port: pair.replica.port } };
  const waiting: unknown[] = [];
  const running = await verify({ ...sides, drainTimeoutMs: 5000, onWaiting: (w) => waiting.push(w) });
  t.is(running.inFlight, 0);
  t.is(running.differences, 2);
  t.like(running.byKind, { value: 1, 'missing-on-replica': 1, 'in-flight': 0 });
  t.regex(String(running.resyncNeeded), /gone from the master's log/);
  t.deepEqual(waiting, [], 'no wait for a consumer that cannot apply them');
  t.regex(formatResult(running), /the replica needs a resync/);

  // With no consumer running, verify finds it by itself.
  await worker.close();
  const alone = await verify({ ...sides, drainTimeoutMs: 5000 });
  t.like(alone, { inFlight: 0, differences: 2 });
  t.regex(String(alone.resyncNeeded), /entries 2 to 2 are gone/);
});

test('reading a batch from a log of entries bigger than its byte budget copies one entry into the script, not a chunk of 64', async (t) => {
  const pair = await pairFor(t);
  const master = pair.master.client();
  defineScripts(master);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 4; i++) await db.set(`big${i}`, Buffer.alloc(2 * 1024 * 1024, 'x'));
  await db.set('small', 'x');
  const monitor = await pair.master.client().monitor();
  t.teardown(() => monitor.disconnect());
  const ranges: string[][] = [];
  monitor.on('monitor', (_time: string, args: string[]) => {
    if (String(args[0]).toLowerCase() === 'lrange') ranges.push(args.slice(2));
  });
  const [, , remaining, ...entries] = await master.qsyncReadBatchBuffer(keys.log, keys.meta, 0, 1000, 1024 * 1024, 4);
  t.is(entries.length, 1, 'an entry over the budget goes alone');
  t.is(Number(remaining), 4);
  await eventually(() => ranges.length > 0, 5000, 'the read seen by MONITOR');
  t.deepEqual(ranges, [['0', '0']]);
});

test("verify reads a log of big entries a few at a time, so that they do not pile up in the master's reply", async (t) => {
  const pair = await pairFor(t);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 5; i++) await db.set(`big${i}`, Buffer.alloc(2 * 1024 * 1024, 'x'));
  const monitor = await pair.master.client().monitor();
  t.teardown(() => monitor.disconnect());
  const ranges: number[] = [];
  monitor.on('monitor', (_time: string, args: string[]) => {
    if (String(args[0]).toLowerCase() === 'lrange' && args[1] === keys.log) ranges.push(Number(args[3]) - Number(args[2]) + 1);
  });
  const sides = { master: { host: pair.master.host, port: pair.master.port }, replica: { host: pair.replica.host, port: pair.replica.port } };
  const result = await verify({ ...sides, drainTimeoutMs: 300 });
  t.is(result.inFlight, 5, 'the five keys wait in the queue');
  await verify({ ...sides, mode: 'recent', recent: 5, drainTimeoutMs: 300 });
  await eventually(() => ranges.length > 2, 5000, 'the reads seen by MONITOR');
  t.true(
    ranges.every((n) => n <= 2),
    `entries read at once: ${ranges.join(', ')}`,
  );
});
