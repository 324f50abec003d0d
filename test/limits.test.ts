/**
 * A bounded queue: `qsync limit` caps what the master holds, in entries and/or
 * bytes. Under `reject` a full queue refuses writes whole (QueueFullError,
 * nothing written); under `mark-dirty` writes go on unqueued and their keys
 * are recorded, and the queue needs a repair (or, past --max-dirty keys, a
 * full resync). Either way the master's memory stays bounded. Real servers,
 * writes through the producer, the CLI as users run it.
 */
import test, { type ExecutionContext } from 'ava';
import type { Redis } from 'ioredis';
import { createProducer, QueueFullError } from '../producer/index.js';
import { setLimits } from '../consumer/queue/limits.js';
import { readStatus } from '../consumer/queue/status.js';
import { ExitCode } from '../shared/errors.js';
import { QueueKeys } from '../shared/keys.js';
import { startRedis, type RedisServer } from './support/redis-server.js';
import { startPair, startWorker, waitForDrain, datasetDiff, type Pair } from './support/fixtures.js';
import { runCli } from './support/cli.js';
import { eventually } from './support/wait.js';

const keys = new QueueKeys('qsync', 'default');

async function server(t: ExecutionContext): Promise<RedisServer> {
  const s = await startRedis();
  t.teardown(() => s.destroy());
  return s;
}

async function pair(t: ExecutionContext): Promise<Pair> {
  const p = await startPair();
  t.teardown(() => p.destroy());
  return p;
}

/** `qsync limit <args>` against a master. */
function limit(master: RedisServer, ...args: string[]): ReturnType<typeof runCli> {
  return runCli(['limit', '--master', master.url, ...args]);
}

/** Everything a refused write could have changed on the master, read in one step. */
async function snapshot(client: Redis, ...dataKeys: string[]): Promise<unknown> {
  return client
    .multi()
    .lrange(keys.log, 0, -1)
    .hgetall(keys.meta)
    .exists(keys.dirty)
    .mget(...dataKeys)
    .exec();
}

/** Waits until the replica applied every entry and the consumer trimmed them all. */
async function drained(p: Pair): Promise<void> {
  await waitForDrain(p.master.client(), p.replica.client());
  await eventually(async () => (await p.master.client().llen(keys.log)) === 0, 10_000, 'empty log');
}

test('reject: a full queue refuses single writes, multi() and pipeline() with QueueFullError and writes nothing', async (t) => {
  const s = await server(t);
  const master = s.client();
  const db = createProducer(s.client());
  await setLimits(master, keys, { maxEntries: 3 });
  for (const k of ['k0', 'k1', 'k2']) await db.set(k, 'v');
  const before = await snapshot(master, 'k0', 'k1', 'k2', 'fresh', 'list');

  const single = await t.throwsAsync(db.set('k0', 'changed'), { instanceOf: QueueFullError });
  t.is(single?.message, "qsync: queue 'default' is full (max entries 3); the write was refused and nothing was written");
  t.like(single, { queue: 'default', limit: 'max entries 3' });
  await t.throwsAsync(db.incr('fresh'), { instanceOf: QueueFullError });
  await t.throwsAsync(db.multi().set('k1', 'changed').incr('fresh').get('k1').exec(), { instanceOf: QueueFullError });
  const piped = await db.pipeline().get('k2').set('k2', 'changed').lpush('list', 'x').exec();
  t.deepEqual(piped?.[0], [null, 'v'], 'a read in the pipeline still runs');
  t.true(piped?.[1][0] instanceof QueueFullError);
  t.true(piped?.[2][0] instanceof QueueFullError);
  const heard = await new Promise<unknown>(
    (resolve) =>
      void db
        .pipeline()
        .incr('fresh', (err) => resolve(err))
        .exec(),
  );
  t.true(heard instanceof QueueFullError, "a pipelined write's callback gets it too");

  // Nothing written but the count of refused writes, for the metrics.
  const after = (await snapshot(master, 'k0', 'k1', 'k2', 'fresh', 'list')) as [null, Record<string, string>][];
  t.is(after[1][1].refused, '6', 'each write refused is counted: 1 + 1 + the multi() + 2 in the pipeline + 1');
  delete after[1][1].refused;
  t.deepEqual(after, before);
  t.is(await master.llen(keys.log), 3);
});

test('reject: once the consumer drains the queue, writes are accepted again and replicate', async (t) => {
  const p = await pair(t);
  const master = p.master.client();
  const db = createProducer(p.master.client());
  await setLimits(master, keys, { maxEntries: 5 });
  for (let i = 0; i < 5; i++) await db.incr('n');
  await t.throwsAsync(db.set('late', '1'), { instanceOf: QueueFullError });

  const worker = startWorker(p);
  t.teardown(() => worker.close());
  await drained(p);
  t.is(await db.set('late', '1'), 'OK');
  await db.incr('n');
  await waitForDrain(master, p.replica.client());
  t.deepEqual(await datasetDiff(p.master, p.replica), []);
  t.is(await p.replica.client().get('n'), '6');
});

test('a byte cap refuses writes once the bytes queued reach it; the count is the packed size of the entries', async (t) => {
  const s = await server(t);
  const master = s.client();
  const db = createProducer(s.client());
  await setLimits(master, keys, { maxBytes: 1000 });
  let accepted = 0;
  const refusal = await t.throwsAsync(
    (async () => {
      for (; accepted < 100; accepted++) await db.set(`k${accepted}`, 'x'.repeat(100));
    })(),
    { instanceOf: QueueFullError },
  );
  t.is(refusal?.limit, 'max bytes 1000');
  const entries = await master.lrangeBuffer(keys.log, 0, -1);
  const bytes = entries.reduce((n, e) => n + e.length, 0);
  t.is(entries.length, accepted);
  t.is(Number(await master.hget(keys.meta, 'bytes')), bytes);
  t.true(bytes >= 1000 && bytes - entries[entries.length - 1].length < 1000, `the last entry took the log to the cap (${bytes} bytes)`);
  t.is(await master.exists(`k${accepted}`), 0);
});

test('mark-dirty: once full, writes run unqueued, the keys they change are recorded with their db, and the queue needs a repair even after it drained', async (t) => {
  const p = await pair(t);
  const master = p.master.client();
  const db = createProducer(p.master.client());
  const db3 = createProducer(p.master.client(3));
  await setLimits(master, keys, { maxEntries: 2, policy: 'mark-dirty' });
  await db.set('a', '1');
  await db.set('b', '1');

  t.is(await db.set('c', '1'), 'OK');
  await db.rename('a', 'a2');
  await db.multi().mset('m1', '1', 'm2', '2').incr('c').exec();
  await db.pipeline().set('p1', 'v').hset('h', 'f', 'v').exec();
  await db3.sadd('src', 'x');
  await db3.smove('src', 'dst', 'x');
  await db.copy('c', 'c-copy', 'DB', 5);
  t.is(await db.del('missing'), 0, 'a write that changes nothing is not recorded');
  // COPY ... DB 5 writes its destination in db 5.
  const recorded = ['0:c', '0:a', '0:a2', '0:m1', '0:m2', '0:p1', '0:h', '3:src', '3:dst', '0:c-copy', '5:c-copy'];
  t.deepEqual((await master.smembers(keys.dirty)).sort(), recorded.sort());
  t.deepEqual(await master.mget('a', 'a2', 'c', 'm2'), [null, '1', '2', '2'], 'the writes ran on the master');
  t.is(await master.llen(keys.log), 2);

  for (let i = 0; i < 300; i++) await db.set(`bulk${i % 10}`, String(i));
  t.is(await master.llen(keys.log), 2, 'the log stays at its cap');
  t.is(await master.scard(keys.dirty), recorded.length + 10);
  t.like(await readStatus(master, 'qsync', 'default'), { queueState: 'repair-needed', dirtyKeys: recorded.length + 10, full: true, depth: 2 });

  const worker = startWorker(p);
  t.teardown(() => worker.close());
  await drained(p);
  t.deepEqual(await p.replica.client().mget('a', 'b', 'c'), ['1', '1', null], 'the replica got what was queued, and only that');
  await db.set('after-drain', '1');
  t.is(await master.llen(keys.log), 0, 'a drained log takes no entries while the queue needs a repair');
  t.is(await master.sismember(keys.dirty, '0:after-drain'), 1);

  const status = await runCli(['status', '--master', p.master.url]);
  t.is(status.code, ExitCode.repairNeeded, status.stderr.join('\n'));
  t.regex(status.stdout.join('\n'), new RegExp(`queue state +repair-needed since \\S+, ${recorded.length + 11} dirty keys in qsync:default:dirty`));

  const cleared = await limit(p.master, '--clear-repair');
  t.is(cleared.code, 0, cleared.stderr.join('\n'));
  t.regex(cleared.stdout.join('\n'), /state +ok$/m);
  t.is(await master.exists(keys.dirty), 0);
  await db.set('queued-again', '1');
  t.is(await master.hget(keys.meta, 'seq'), '3', 'writes are queued again');
  await waitForDrain(master, p.replica.client());
  t.is(await p.replica.client().get('queued-again'), '1');
});

test('mark-dirty: more keys than --max-dirty stop the recording and the queue needs a full resync', async (t) => {
  const s = await server(t);
  const master = s.client();
  const db = createProducer(s.client());
  await setLimits(master, keys, { maxEntries: 1, policy: 'mark-dirty', maxDirty: 5 });
  await db.set('queued', '1');
  for (let i = 0; i < 5; i++) await db.set(`d${i}`, '1');
  await db.set('d0', 'again');
  t.is(await master.hget(keys.meta, 'state'), 'repair-needed', 'five keys fit');

  await db.mset('d5', '1', 'd6', '1');
  await db.set('d7', '1');
  t.is(await master.hget(keys.meta, 'state'), 'resync-needed');
  t.is(await master.scard(keys.dirty), 5, 'recording stopped');
  t.deepEqual(await master.mget('d5', 'd7'), ['1', '1'], 'the writes still ran');
  t.is(await master.llen(keys.log), 1);
  const status = await runCli(['status', '--master', s.url, '--json']);
  t.is(status.code, ExitCode.resyncNeeded);
  t.like(JSON.parse(status.stdout.join('\n'))[0], {
    queueState: 'resync-needed',
    dirtyKeys: 5,
    limits: { maxEntries: 1, maxBytes: null, policy: 'mark-dirty', maxDirty: 5 },
  });
});

test('qsync limit sets, shows and clears the cap, and every producer obeys at once; bad flags exit 2 with one line', async (t) => {
  const s = await server(t);
  const db = createProducer(s.client());
  await db.set('x', '1');

  const set = await limit(s, '--max-entries', '1', '--max-bytes', '64mb');
  t.is(set.code, 0, set.stderr.join('\n'));
  t.deepEqual(set.stdout.slice(0, 5), [
    'queue default  (qsync:default:meta)',
    '  max entries     1',
    '  max bytes       64 MiB (67108864)',
    '  policy          reject: writes to a full queue fail with QueueFullError',
    '  max dirty       100000 keys',
  ]);
  t.regex(set.stdout[5], /^ {2}queued {10}1 entries, \d+ B {2}\(full\)$/);
  await t.throwsAsync(db.set('y', '1'), { instanceOf: QueueFullError }, 'a producer made before the cap obeys it');
  t.deepEqual((await limit(s)).stdout, set.stdout, 'no flags: shows the cap');

  const cleared = await limit(s, '--clear');
  t.is(cleared.stdout[1], '  max entries     none');
  t.is(await db.set('y', '1'), 'OK');

  const bad: [string[], RegExp][] = [
    [['--max-entries', '-1'], /^qsync: --max-entries must be a whole number from 0 to \d+, got '-1'$/],
    [['--max-entries', 'ten'], /^qsync: --max-entries must be a whole number/],
    [['--max-bytes', '12xb'], /^qsync: --max-bytes must be a whole number of bytes, optionally with a unit .*, got '12xb'$/],
    [['--policy', 'drop'], /^qsync: --policy must be one of reject, mark-dirty, detach-slowest, got 'drop'$/],
    [['--max-dirty', '0'], /^qsync: --max-dirty must be a whole number from 1/],
    [['--clear', '--max-entries', '5'], /^qsync: --clear removes every cap/],
    [['--queue', 'a b'], /^qsync: --queue must be/],
  ];
  const runs = await Promise.all(bad.map(([args]) => limit(s, ...args)));
  runs.forEach((run, i) => {
    t.is(run.code, ExitCode.usage, bad[i][0].join(' '));
    t.is(run.stderr.length, 1, run.stderr.join('\n'));
    t.regex(run.stderr[0] ?? '', bad[i][1]);
  });
  t.deepEqual(
    await s
      .client()
      .hgetall(keys.meta)
      .then((m) => [m.maxEntries, m.maxBytes, m.policy]),
    [undefined, undefined, undefined],
  );
});

test('trim and park take the bytes of what they remove off the count: it matches the log throughout and is 0 after a full drain, dead letters included', async (t) => {
  const p = await pair(t);
  const master = p.master.client();
  await p.replica.client().set('k', 'a string on the replica: the LPUSH below is refused there');
  // The master holds k too (written around qsync): a key the master lacked would be deleted on the replica first.
  await master.rpush('k', 'm');
  const db = createProducer(p.master.client());
  await db.incr('before');
  await db.lpush('k', 'x');
  for (let i = 0; i < 200; i++) await db.set(`after${i}`, 'v'.repeat(i));

  const worker = startWorker(p, { onError: 'park', batchSize: 16 });
  t.teardown(() => worker.close());
  let samples = 0;
  for (let left = Infinity; left > 0; samples++) {
    const [[, entries], [, counted]] = (await master.multi().lrangeBuffer(keys.log, 0, -1).hget(keys.meta, 'bytes').exec()) as [
      [null, Buffer[]],
      [null, string],
    ];
    t.is(
      Number(counted),
      entries.reduce((n, e) => n + e.length, 0),
    );
    left = entries.length;
  }
  await drained(p);
  t.is(await master.hget(keys.meta, 'bytes'), '0');
  t.is(await master.llen(keys.dlq), 1);
  t.log(`${samples} samples while draining`);
});
