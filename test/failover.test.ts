import test, { type ExecutionContext } from 'ava';
import type { Redis } from 'ioredis';
import { createProducer, FencedError } from '../producer/index.js';
import { ExitCode } from '../shared/errors.js';
import { QueueKeys } from '../shared/keys.js';
import { datasetDiff, startPair, startWorker, waitForDrain, type Pair } from './support/fixtures.js';
import { startProxy } from './support/fault-proxy.js';
import { runCli } from './support/cli.js';
import { eventually } from './support/wait.js';
import type { RedisServer } from './support/redis-server.js';

const keys = new QueueKeys('qsync', 'default');

async function pairFor(t: ExecutionContext): Promise<Pair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  return pair;
}

/** Stops a worker when the test ends, or earlier. */
function workerFor(t: ExecutionContext, pair: Pair, swap = false) {
  const worker = startWorker(swap ? { master: pair.replica, replica: pair.master, destroy: pair.destroy } : pair);
  t.teardown(() => worker.close());
  return worker;
}

/** How many keys a server was read for copies since its stats were reset (each key copied is asked its TYPE once). */
async function copiedKeys(server: Redis): Promise<number> {
  const m = /cmdstat_type:calls=(\d+)/.exec(await server.info('commandstats'));
  return m ? Number(m[1]) : 0;
}

/**
 * A writer that goes on through a failover: each write is one INCR of a
 * counter and one RPUSH of its number, in one multi() (one entry). A
 * FencedError moves it to the server the error names; each acknowledged
 * write is counted once.
 */
function steadyWriter(servers: RedisServer[]) {
  const producers = new Map(servers.map((s) => [s.url, createProducer(s.client())]));
  let current = servers[0].url;
  let acked = 0;
  let refusals = 0;
  let running = true;
  const done = (async () => {
    while (running) {
      const n = acked + 1;
      try {
        await producers.get(current)!.multi().incr('counter').rpush('writes', String(n)).exec();
        acked = n;
      } catch (err) {
        if (!(err instanceof FencedError)) throw err;
        refusals++;
        const named = servers.find((s) => err.message.includes(s.url));
        if (!named) throw new Error(`the FencedError names no known server: ${err.message}`);
        current = named.url;
        await new Promise((r) => setTimeout(r, 1));
      }
    }
  })();
  return {
    get acked() {
      return acked;
    },
    get refusals() {
      return refusals;
    },
    get current() {
      return current;
    },
    async stop() {
      running = false;
      await done;
    },
  };
}

test('a planned failover under a steady writer loses and doubles no acknowledged write; the old master streams from the new one with no copy', async (t) => {
  const pair = await pairFor(t);
  const [a, b] = [pair.master, pair.replica];
  const forward = workerFor(t, pair);
  const writer = steadyWriter([a, b]);
  await eventually(() => writer.acked > 200, 10_000, 'writes before the failover');

  const run = await runCli(['failover', '--master', a.url, '--replica', b.url, '--log-level', 'silent']);
  t.is(run.code, 0, run.stderr.join('\n'));
  const pause = run.stdout.find((l) => l.startsWith('writes were refused for'));
  t.truthy(pause, run.stdout.join('\n'));
  t.log(`${pause} (${writer.refusals} refusals seen by the writer)`);

  await eventually(() => writer.current === b.url && writer.acked > 0, 10_000, 'the writer on the new master');
  const movedAt = writer.acked;
  await eventually(() => writer.acked > movedAt + 200, 10_000, 'writes on the new master');
  await writer.stop();
  await forward.close();

  // The old master refuses writes, naming the new one.
  const left = createProducer(a.client());
  const err = await t.throwsAsync(left.set('late', '1'), { instanceOf: FencedError });
  t.regex(err!.message, /fenced/);
  t.true(err!.message.includes(b.url));
  // A Lua script's writes go through the same check.
  await t.throwsAsync(left.eval("return redis.call('SET', KEYS[1], '1')", 1, 'late'), { instanceOf: FencedError });
  t.is(await a.client().exists('late'), 0);

  // Every acknowledged write is on the new master exactly once.
  const nb = b.client();
  t.is(Number(await nb.get('counter')), writer.acked);
  const writes = (await nb.lrange('writes', 0, -1)).map(Number);
  t.deepEqual(
    writes,
    Array.from({ length: writer.acked }, (_, i) => i + 1),
  );

  // The old master follows the new one from the start of its log: no copy.
  const [seq, epoch] = await nb.hmget(keys.meta, 'seq', 'epoch');
  t.true(Number(seq) > 0);
  t.deepEqual(await a.client().hmget(keys.applied, 'epoch'), [epoch]);
  workerFor(t, pair, true);
  t.is(await waitForDrain(nb, a.client()), Number(seq));
  t.deepEqual(await datasetDiff(b, a), []);

  const status = await runCli(['status', '--master', b.url]);
  t.true(
    status.stdout.some((l) => / promoted \(failover\) from /.test(l)),
    status.stdout.join('\n'),
  );
  const old = await runCli(['status', '--master', a.url]);
  t.true(
    old.stdout.some((l) => l.includes(`fenced          writes are refused here`) && l.includes(b.url)),
    old.stdout.join('\n'),
  );
});

test('failover while no consumer runs: the replica cannot catch up, the master is unfenced and nothing changed', async (t) => {
  const pair = await pairFor(t);
  const [a, b] = [pair.master, pair.replica];
  const producer = createProducer(a.client());
  await producer.set('k', '1');
  const worker = workerFor(t, pair);
  await waitForDrain(a.client(), b.client());
  await worker.close();
  await producer.set('k', '2');
  const before = await Promise.all([a.client().hgetall(keys.meta), b.client().hgetall(keys.applied), b.client().exists(keys.meta)]);

  const run = await runCli(['failover', '--master', a.url, '--replica', b.url, '--timeout-ms', '300']);
  t.is(run.code, ExitCode.notCaughtUp);
  t.is(run.stderr.length, 1, run.stderr.join('\n'));
  t.regex(run.stderr[0], /applied up to seq 1 of 2 within 300 ms.*unfenced and nothing changed/);
  t.deepEqual(await Promise.all([a.client().hgetall(keys.meta), b.client().hgetall(keys.applied), b.client().exists(keys.meta)]), before);
  t.is(await producer.set('k', '3'), 'OK');
});

test('failover --abort takes back a failover that stopped before the promotion: the master takes writes again; a finished one is not taken back', async (t) => {
  const pair = await pairFor(t);
  const [a, b] = [pair.master, pair.replica];
  const producer = createProducer(a.client());
  await producer.set('k', '1');
  workerFor(t, pair);
  await waitForDrain(a.client(), b.client());
  // A failover killed after its first two steps: the replica marked, the master fenced, naming it.
  await b.client().hset(keys.meta, 'fenced', b.url, 'fencedAt', Date.now());
  await a.client().hset(keys.meta, 'fenced', b.url, 'fencedAt', Date.now());
  await t.throwsAsync(producer.set('k', '2'), { instanceOf: FencedError });

  const run = await runCli(['failover', '--abort', '--master', a.url, '--replica', b.url]);
  t.is(run.code, 0, run.stderr.join('\n'));
  t.regex(run.stdout.join('\n'), /taken back: .* takes writes again; .* is a plain replica again/);
  t.is(await producer.set('k', '3'), 'OK');
  await waitForDrain(a.client(), b.client());
  t.deepEqual(await datasetDiff(a, b), []);

  const again = await runCli(['failover', '--abort', '--master', a.url, '--replica', b.url]);
  t.is(again.code, ExitCode.wrongRole);
  t.is(again.stderr.length, 1, again.stderr.join('\n'));
  t.regex(again.stderr[0], /no failover from .* to take back .*nothing changed/);

  const done = await runCli(['failover', '--master', a.url, '--replica', b.url]);
  t.is(done.code, 0, done.stderr.join('\n'));
  const late = await runCli(['failover', '--abort', '--master', a.url, '--replica', b.url]);
  t.is(late.code, ExitCode.wrongRole);
  t.regex(late.stderr[0], /was promoted already, the failover is done: bring .* back with qsync rejoin/);
});

test('an emergency promote while the link is cut: writes queued on the old master never reach the promoted replica, and a stale consumer says why', async (t) => {
  const pair = await pairFor(t);
  const [a, b] = [pair.master, pair.replica];
  const proxy = await startProxy(a.port);
  t.teardown(() => proxy.close());
  const producer = createProducer(a.client());
  for (let i = 0; i < 20; i++) await producer.set(`k${i}`, 'before');
  const stale = startWorker(pair, { master: { host: '127.0.0.1', port: proxy.port } });
  t.teardown(() => stale.close());
  await waitForDrain(a.client(), b.client());
  // The trim follows the apply: the log holds only what is queued after the cut.
  await eventually(async () => (await a.client().llen(keys.log)) === 0, 10_000, 'the applied entries trimmed');

  proxy.cut();
  for (let i = 0; i < 10; i++) await producer.set(`k${i}`, 'queued');
  const applied = await b.client().hget(keys.applied, 'seq');

  // The old master cannot be reached through the cut link: promote names it only.
  const run = await runCli(['promote', '--replica', b.url, '--master', proxy.url]);
  t.is(run.code, 0, run.stderr.join('\n'));
  t.true(
    run.stdout.some((l) => l.includes('was not fenced')),
    run.stdout.join('\n'),
  );
  t.is(await createProducer(b.client()).set('new', 'on b'), 'OK');
  const promotedData = await b.client().mget(...Array.from({ length: 20 }, (_, i) => `k${i}`));
  t.true(promotedData.every((v) => v === 'before'));

  proxy.heal();
  await eventually(() => stale.state === 'replica-promoted', 10_000, 'the stale consumer refusing');
  const status = await runCli(['status', '--master', a.url]);
  t.true(
    status.stdout.some((l) => l.includes('replica-promoted') && l.includes('the replica was promoted to master')),
    status.stdout.join('\n'),
  );
  t.is(status.code, ExitCode.wrongRole);
  // Nothing of the old master's tail reached the promoted server.
  t.deepEqual(await b.client().mget(...Array.from({ length: 20 }, (_, i) => `k${i}`)), promotedData);
  t.is(await b.client().hget(keys.applied, 'seq'), applied);
  t.is(await a.client().llen(keys.log), 10);
});

test('rejoin parks the old master tail on the new master and copies only the keys it touched; failover switches the roles back', async (t) => {
  const pair = await pairFor(t);
  const [a, b] = [pair.master, pair.replica];
  const onA = createProducer(a.client());
  // A dataset ten times the tail's keys.
  const DATASET = 1000;
  const TAIL_KEYS = 100;
  for (let i = 0; i < DATASET; i += 100) {
    const p = onA.pipeline();
    for (let j = i; j < i + 100; j++) p.set(`key:${j}`, `v${j}`);
    await p.exec();
  }
  const worker = workerFor(t, pair);
  await waitForDrain(a.client(), b.client());
  await worker.close();

  // The old master takes writes its replica never gets: the tail, one entry a key.
  for (let j = 0; j < TAIL_KEYS / 2; j++) {
    await onA.set(`key:${j * 10}`, 'tail');
    await onA.incr(`key:${j * 10}:hits`);
  }
  const promote = await runCli(['promote', '--replica', b.url, '--json']);
  t.is(promote.code, 0, promote.stderr.join('\n'));
  const onB = createProducer(b.client());
  await onB.set('key:0:hits', 'written on b');
  await onB.set('only-on-b', '1');

  const nb = b.client();
  await nb.config('RESETSTAT');
  const run = await runCli(['rejoin', '--master', b.url, '--replica', a.url, '--json']);
  t.is(run.code, 0, run.stderr.join('\n'));
  const report = JSON.parse(run.stdout.join('\n')) as Record<string, number>;
  t.like(report, { tailEntries: TAIL_KEYS, tailKeys: TAIL_KEYS, parked: TAIL_KEYS, repairedKeys: TAIL_KEYS });
  const copied = await copiedKeys(nb);
  t.log(`copied ${copied} keys for a dataset of ${DATASET}`);
  t.true(copied <= TAIL_KEYS, `${copied} keys were read for a copy`);

  const dlq = await runCli(['dlq', 'list', '--master', b.url, '--json']);
  t.is((JSON.parse(dlq.stdout.join('\n')) as unknown[]).length, TAIL_KEYS);

  // The old master streams from the new master's promotion point on.
  await onB.set('after-rejoin', '1');
  const back = workerFor(t, pair, true);
  await waitForDrain(nb, a.client());
  t.deepEqual(await datasetDiff(b, a), []);
  t.is(await a.client().get('key:0:hits'), 'written on b');
  t.is(await a.client().get('key:0'), 'v0');
  // A parked tail entry applied later: on the new master, through its log, so on the old one too.
  const tailSeq = DATASET + 1;
  const retry = await runCli(['dlq', 'retry', '--master', b.url, '--replica', a.url, '--seq', String(tailSeq)]);
  t.is(retry.code, 0, retry.stderr.join('\n'));
  t.is(await nb.get('key:0'), 'tail');
  await waitForDrain(nb, a.client());
  t.is(await a.client().get('key:0'), 'tail');
  t.is(await a.client().get('key:10'), 'v10');
  t.is(await a.client().exists('key:10:hits'), 0);

  // Fail back.
  const failback = await runCli(['failover', '--master', b.url, '--replica', a.url]);
  t.is(failback.code, 0, failback.stderr.join('\n'));
  await back.close();
  const err = await t.throwsAsync(onB.set('x', '1'), { instanceOf: FencedError });
  t.true(err!.message.includes(a.url));
  await onA.set('after-failback', '1');
  workerFor(t, pair);
  await waitForDrain(a.client(), nb);
  t.deepEqual(await datasetDiff(a, b), []);
  const status = await runCli(['status', '--master', a.url]);
  const history = status.stdout.join('\n');
  t.regex(history, /promoted \(promote\)[\s\S]*rejoined[\s\S]*promoted \(failover\)/);
});

test('bad input gives one line, its own exit code, and changes nothing', async (t) => {
  const pair = await pairFor(t);
  const [a, b] = [pair.master, pair.replica];
  const producer = createProducer(a.client());
  await producer.set('k', '1');
  const snapshot = async () => [
    await a.client().hgetall(keys.meta),
    await b.client().hgetall(keys.applied),
    await b.client().hgetall(keys.meta),
    await a.client().hgetall(keys.applied),
  ];
  const before = await snapshot();

  // b is not yet a replica: it never applied anything.
  const notReplica = await runCli(['promote', '--replica', b.url]);
  t.is(notReplica.code, ExitCode.wrongRole);
  t.deepEqual(notReplica.stderr, [
    `qsync: promote: --replica ${b.url} is not a replica of queue 'default': it holds no watermark (${keys.applied}); nothing changed`,
  ]);

  const same = await runCli(['failover', '--master', a.url, '--replica', a.url]);
  t.is(same.code, ExitCode.usage);
  t.is(same.stderr.length, 1);
  t.regex(same.stderr[0], /same Redis server/);
  t.deepEqual(await snapshot(), before);

  const worker = workerFor(t, pair);
  await waitForDrain(a.client(), b.client());
  await worker.close();
  // The old master answers: it is fenced, naming the promoted replica.
  const promote = await runCli(['promote', '--replica', b.url, '--master', a.url]);
  t.is(promote.code, 0, promote.stderr.join('\n'));
  const fenced = await t.throwsAsync(producer.set('k', '2'), { instanceOf: FencedError });
  t.true(fenced!.message.includes(b.url));
  const promoted = await snapshot();

  const reversed = await runCli(['rejoin', '--master', a.url, '--replica', b.url]);
  t.is(reversed.code, ExitCode.wrongRole);
  t.is(reversed.stderr.length, 1);
  t.regex(reversed.stderr[0], /roles are reversed/);

  const again = await runCli(['promote', '--replica', b.url]);
  t.is(again.code, ExitCode.wrongRole);
  t.regex(again.stderr[0], /promoted to master of queue 'default' already/);

  const tail = await runCli(['rejoin', '--master', b.url, '--replica', a.url, '--tail', 'keep']);
  t.is(tail.code, ExitCode.usage);
  t.is(tail.stderr.length, 1);
  t.regex(tail.stderr[0], /--tail/);
  t.deepEqual(await snapshot(), promoted);
});

test('rejoin --tail apply writes the old master tail on the new master through its log, so the old master gets it back', async (t) => {
  const pair = await pairFor(t);
  const [a, b] = [pair.master, pair.replica];
  const onA = createProducer(a.client());
  await onA.set('n', '1');
  const worker = workerFor(t, pair);
  await waitForDrain(a.client(), b.client());
  await worker.close();
  await onA.incr('n');
  await onA.multi().rpush('l', 'x').sadd('s', 'y').exec();
  t.is((await runCli(['promote', '--replica', b.url])).code, 0);

  const run = await runCli(['rejoin', '--master', b.url, '--replica', a.url, '--tail', 'apply', '--json']);
  t.is(run.code, 0, run.stderr.join('\n'));
  t.like(JSON.parse(run.stdout.join('\n')), { tailEntries: 2, tailKeys: 3, applied: 2, parked: 0 });
  const nb = b.client();
  t.is(await nb.get('n'), '2');
  t.is(await nb.llen(keys.dlq), 0);
  t.is(Number(await nb.hget(keys.meta, 'seq')), 2);
  workerFor(t, pair, true);
  await waitForDrain(nb, a.client());
  t.deepEqual(await datasetDiff(b, a), []);
});
