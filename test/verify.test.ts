/**
 * `qsync verify` compares the master and the replica key by key in both
 * directions, tells each kind of difference apart, does not mistake entries
 * still queued for differences, and runs as a control job in a consumer,
 * once or on a schedule.
 */
import { readFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { ExitCode } from '../shared/errors.js';
import { controlQueue, registerJobType, startJobWorker } from '../consumer/jobs/runner.js';
import type { SyncWorker } from '../consumer/drain/worker.js';
import { createLogger } from '../shared/logger.js';
import { listJobs } from '../consumer/jobs/view.js';
import { startPair, startWorker, waitForDrain, type Pair } from './support/fixtures.js';
import { freePort, startRedis } from './support/redis-server.js';
import { runCli, spawnCli, type CliProcess } from './support/cli.js';
import { eventually } from './support/wait.js';

interface Difference {
  db: number;
  key: string;
  kind: string;
  found?: string;
}

interface Result {
  keysChecked: number;
  differences: number;
  inFlight: number;
  byKind: Record<string, number>;
  examples: Difference[];
  job?: string;
}

async function pairFor(t: ExecutionContext): Promise<Pair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  return pair;
}

function consumer(t: ExecutionContext, pair: Pair, ...extra: string[]): CliProcess {
  const cli = spawnCli(['consume', '--master', pair.master.url, '--replica', pair.replica.url, '--lease-ms', '1000', ...extra]);
  t.teardown(() => cli.kill('SIGKILL'));
  return cli;
}

const both = (pair: Pair) => ['--master', pair.master.url, '--replica', pair.replica.url];

/** The control jobs of the pair's default queue, read in-process (polling through the CLI would cost a process per look). */
async function jobsOf(pair: Pair): Promise<Awaited<ReturnType<typeof listJobs>>> {
  const queue = controlQueue({ master: { host: pair.master.host, port: pair.master.port }, queueDb: 0, prefix: 'qsync', queue: 'default' });
  try {
    return await listJobs(queue);
  } finally {
    await queue.close();
  }
}

function json(run: { stdout: string[] }): Result {
  return JSON.parse(run.stdout.join('\n')) as Result;
}

const members = (n: number, p: string) => Array.from({ length: n }, (_, i) => `${p}${i}`);

test('changes made on the replica by hand are found, each with its kind; exit 1 and a report listing them', async (t) => {
  const pair = await pairFor(t);
  const worker = startWorker(pair);
  t.teardown(() => worker.close());
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 50; i++) await db.set(`k${i}`, `v${i}`);
  await db.set('expiring', 'x', 'EX', 3600);
  await db.hset('big', Object.fromEntries(members(1500, 'f').map((f) => [f, `value of ${f}`])));
  await db.select(3);
  await db.sadd('db3-set', ...members(700, 'm'));
  await waitForDrain(pair.master.client(), pair.replica.client());

  const replica = pair.replica.client();
  await replica.set('k1', 'changed by hand');
  await replica.del('k2');
  await replica.set('added', 'by hand');
  await replica.pexpire('k3', 600_000);
  await replica.pexpire('expiring', 7_200_000);
  await replica.del('k4');
  await replica.rpush('k4', 'now a list');
  await replica.hset('big', 'f1200', 'other');
  await pair.replica.client(3).srem('db3-set', 'm650');
  // Expiries 600 ms apart are equal within the default tolerance of 1000 ms.
  const at = Date.now() + 3_600_000;
  await pair.master.client().pexpireat('k5', at);
  await replica.pexpireat('k5', at + 600);
  const dir = mkdtempSync(path.join(tmpdir(), 'qsync-verify-'));
  const file = path.join(dir, 'report.json');

  const run = await runCli(['verify', ...both(pair), '--report', file]);
  t.is(run.code, ExitCode.different, run.stderr.join('\n'));
  const text = run.stdout.join('\n');
  t.regex(text, /8 keys differ/);
  t.regex(text, /db0 k2 {2}missing-on-replica/);

  const report = JSON.parse(readFileSync(file, 'utf8')) as { differences: Difference[]; summary: Result };
  const kinds = Object.fromEntries(report.differences.map((d) => [`${d.db} ${d.key}`, d.kind]));
  t.deepEqual(kinds, {
    '0 k1': 'value',
    '0 k2': 'missing-on-replica',
    '0 added': 'missing-on-master',
    '0 k3': 'ttl',
    '0 expiring': 'ttl',
    '0 k4': 'type',
    '0 big': 'value',
    '3 db3-set': 'value',
  });
  t.like(report.summary, {
    differences: 8,
    inFlight: 0,
    keysChecked: 54,
    byKind: { value: 3, 'missing-on-replica': 1, 'missing-on-master': 1, ttl: 2, type: 1 },
  });
});

test('equal datasets verify equal, hash-table sets and hashes of 500+ members built in different orders included; exit 0', async (t) => {
  const pair = await pairFor(t);
  const [m, r] = [pair.master.client(), pair.replica.client()];
  const fill = async (c: Redis, order: 1 | -1) => {
    const sorted = <T>(xs: T[]) => (order === 1 ? xs : [...xs].reverse());
    const p = c.pipeline();
    // One member at a time, so that the insertion order differs between the sides.
    for (const x of sorted(members(600, 's'))) p.sadd('set', x);
    for (const x of sorted(members(3000, 'S'))) p.sadd('bigset', x);
    for (const f of sorted(members(700, 'f'))) p.hset('hash', f, `v-${f}`);
    for (const f of sorted(members(2500, 'F'))) p.hset('bighash', f, `v-${f}`);
    p.zadd('zset', ...members(1200, 'z').flatMap((z, i) => [i % 7, z]));
    p.rpush('list', ...members(2100, 'e'));
    p.set('long', 'x'.repeat(700_000));
    p.set(Buffer.from([0xff, 0x00, 0x01]), Buffer.from([0x80, 0x81]));
    p.set('expiring', 'v', 'PXAT', Date.now() + 3_600_000);
    await p.exec();
  };
  await fill(m, 1);
  await fill(r, -1);
  await r.pexpireat('expiring', await m.pexpiretime('expiring'));
  await pair.master.client(5).set('in-db-5', 'x');
  await pair.replica.client(5).set('in-db-5', 'x');
  t.is(await m.object('ENCODING', 'set'), 'hashtable');
  t.is(await m.object('ENCODING', 'hash'), 'hashtable');
  t.false((await m.dumpBuffer('bighash'))!.equals((await r.dumpBuffer('bighash'))!), 'DUMP differs: a byte comparison would call them different');

  const run = await runCli(['verify', ...both(pair)]);
  t.is(run.code, ExitCode.ok, run.stdout.join('\n') + run.stderr.join('\n'));
  t.regex(run.stdout[0], /^verify full: 10 keys checked in db 0, 5 \(/);
  t.is(run.stdout[run.stdout.length - 1], 'equal');
});

test('entries still queued are not differences once the consumer applies them within the wait; past it they are in flight', async (t) => {
  const pair = await pairFor(t);
  let worker = startWorker(pair);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 20; i++) await db.set(`k${i}`, `v${i}`);
  await db.sadd('set', ...members(600, 'm'));
  await waitForDrain(pair.master.client(), pair.replica.client());
  await worker.close();
  // The consumer is stopped: these wait in the log.
  await db.set('k1', 'new value');
  await db.del('k2');
  await db.set('fresh', 'x');
  await db.srem('set', 'm7');
  await db.pexpire('k3', 60_000);

  const impatient = await runCli(['verify', ...both(pair), '--json', '--drain-timeout-ms', '300']);
  t.is(impatient.code, ExitCode.different);
  const late = json(impatient);
  t.like(late, { differences: 0, inFlight: 5, byKind: { 'in-flight': 5, value: 0 } });
  t.deepEqual(Object.fromEntries(late.examples.map((d) => [d.key, d.found])), {
    k1: 'value',
    k2: 'missing-on-master',
    fresh: 'missing-on-replica',
    set: 'value',
    k3: 'ttl',
  });

  const patient = spawnCli(['verify', ...both(pair), '--json', '--drain-timeout-ms', '30000']);
  t.teardown(() => patient.kill('SIGKILL'));
  await eventually(() => patient.stderr.some((l) => /5 keys differ while entries touching them wait in the queue/.test(l)), 15_000, 'verify waiting');
  worker = startWorker(pair);
  t.teardown(() => worker.close());
  const exit = await patient.exited;
  t.is(exit.code, ExitCode.ok, patient.stdout.join('\n'));
  t.like(JSON.parse(patient.stdout.join('\n')), { differences: 0, inFlight: 0, keysChecked: 22 });
});

test('sample mode checks about the fraction asked for; recent mode checks only the keys of the newest entries', async (t) => {
  const pair = await pairFor(t);
  const keys = members(2000, 'key');
  await pair.master.client().mset(...keys.flatMap((k) => [k, 'master']));
  await pair.replica.client().mset(...keys.flatMap((k) => [k, 'replica']));
  const sample = json(await runCli(['verify', ...both(pair), '--json', '--mode', 'sample', '--sample', '0.25']));
  t.true(sample.keysChecked > 300 && sample.keysChecked < 700, `${sample.keysChecked} of 2000 keys checked for 25%`);
  t.is(sample.differences, sample.keysChecked, 'every key differs, so every key checked is a difference');

  await pair.master.client().flushall();
  await pair.replica.client().flushall();
  let worker = startWorker(pair);
  const db = createProducer(pair.master.client());
  await db.set('old', 'x');
  // The keys exist on both sides, so the replica applies the entries below on
  // its own copies (a key the master did not have would be deleted first).
  for (let i = 0; i < 20; i++) await db.hset(`r${i}`, 'a', String(i));
  await waitForDrain(pair.master.client(), pair.replica.client());
  await worker.close();
  for (let i = 0; i < 20; i++) await db.hset(`r${i}`, 'c', String(i));
  const replica = pair.replica.client();
  await replica.set('old', 'changed by hand, but not recent');
  // Applied on top of this, the entry leaves r15 different from the master.
  await replica.hset('r15', 'b', 'by hand');

  const recent = spawnCli(['verify', ...both(pair), '--json', '--mode', 'recent', '--recent', '10']);
  t.teardown(() => recent.kill('SIGKILL'));
  await eventually(() => recent.stderr.some((l) => /wait in the queue/.test(l)), 15_000, 'verify waiting');
  worker = startWorker(pair);
  t.teardown(() => worker.close());
  t.is((await recent.exited).code, ExitCode.different, recent.stderr.join('\n'));
  const result = JSON.parse(recent.stdout.join('\n')) as Result;
  t.like(result, { keysChecked: 10, differences: 1, inFlight: 0 });
  t.deepEqual(
    result.examples.map((d) => [d.key, d.kind]),
    [['r15', 'value']],
  );
});

test('--job runs in a qsync consume, detaches on Ctrl-C, and its result shows in status and metrics', async (t) => {
  const pair = await pairFor(t);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 30; i++) await db.set(`k${i}`, `v${i}`);
  const master = ['--master', pair.master.url];

  // No consumer yet: the job waits; Ctrl-C leaves it queued.
  const first = spawnCli(['verify', '--job', ...master]);
  t.teardown(() => first.kill('SIGKILL'));
  await eventually(() => first.stderr.some((l) => /verify job \d+ queued/.test(l)), 15_000, 'job queued');
  first.kill('SIGINT');
  t.is((await first.exited).code, ExitCode.ok);
  t.regex(first.stderr.join('\n'), /detached; verify job \d+ goes on/);

  const port = await freePort();
  consumer(t, pair, '--metrics-port', String(port));
  await waitForDrain(pair.master.client(), pair.replica.client(), { timeoutMs: 40_000 });
  await eventually(async () => (await jobsOf(pair)).jobs.find((j) => j.state === 'completed'), 30_000, 'the detached job completed');
  const listed = await runCli(['jobs', ...master]);
  t.regex(listed.stdout.join('\n'), /^ +\d+ +verify +completed +100% +attempt 1\/3 .* full, 30 keys, equal$/m);

  await pair.replica.client().set('k7', 'changed by hand');
  const run = await runCli(['verify', '--job', ...master, '--json']);
  t.is(run.code, ExitCode.different, run.stderr.join('\n'));
  const result = json(run);
  t.like(result, { keysChecked: 30, differences: 1 });
  t.truthy(result.job);

  const status = await runCli(['status', ...master, '--json']);
  const [row] = JSON.parse(status.stdout.join('\n')) as { lastVerify: Record<string, unknown> }[];
  t.like(row.lastVerify, { mode: 'full', keysChecked: 30, differences: 1, source: `job ${result.job}` });
  const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  t.regex(body, /^qsync_verify_differences\{queue="default"\} 1$/m);
  t.regex(body, /^qsync_verify_last_run_timestamp_seconds\{queue="default"\} \d+/m);
});

test('a consumer stopped while it runs a job puts the job back, and the next consumer runs it to the end', async (t) => {
  const pair = await pairFor(t);
  const master = ['--master', pair.master.url];
  const first = consumer(t, pair);
  const db = createProducer(pair.master.client());
  await db.set('a', '1');
  await waitForDrain(pair.master.client(), pair.replica.client(), { timeoutMs: 40_000 });
  // The replica refuses the next entry: the consumer halts with it queued,
  // so a verification waits for it to be applied.
  await pair.replica.client().set('list', 'a string');
  // The master holds the list too (written around qsync): the replica's key
  // is not one the master lacked, which the replica would delete first.
  await pair.master.client().rpush('list', 'm');
  await db.rpush('list', 'x');
  await first.waitForLog((l) => l.state === 'halted', 30_000, 'halted');

  const follower = spawnCli(['verify', '--job', ...master, '--json']);
  t.teardown(() => follower.kill('SIGKILL'));
  await first.waitForLog((l) => /keys differ while entries touching them wait/.test(String(l.msg)), 30_000, 'the job waiting');
  first.kill('SIGTERM');
  t.is((await first.exited).code, 0);
  t.like((await jobsOf(pair)).jobs, [{ state: 'waiting', attemptsMade: 0 }], 'back in the queue, no attempt lost');

  await pair.replica.client().del('list');
  await pair.replica.client().rpush('list', 'm');
  consumer(t, pair);
  const exit = await follower.exited;
  t.is(exit.code, ExitCode.ok, follower.stderr.join('\n'));
  t.like(JSON.parse(follower.stdout.join('\n')), { differences: 0, inFlight: 0, keysChecked: 2 });
});

test('--every schedules a periodic verification that qsync jobs lists and a consumer runs; --every off removes it', async (t) => {
  const pair = await pairFor(t);
  const master = ['--master', pair.master.url];
  consumer(t, pair);
  const scheduled = await runCli(['verify', ...master, '--every', '2s', '--mode', 'sample', '--sample', '0.5']);
  t.is(scheduled.code, ExitCode.ok, scheduled.stderr.join('\n'));

  await eventually(async () => (await jobsOf(pair)).jobs.filter((j) => j.state === 'completed').length >= 2, 30_000, 'two scheduled runs completed');
  const listing = JSON.parse((await runCli(['jobs', ...master, '--json'])).stdout.join('\n')) as Awaited<ReturnType<typeof listJobs>>;
  t.like(listing.schedules, [{ id: 'verify', everyMs: 2000, data: { mode: 'sample' } }]);
  t.true(listing.jobs.every((j) => j.type === 'verify' && j.schedule === 'verify'));
  const text = await runCli(['jobs', ...master]);
  t.regex(text.stdout.join('\n'), /verify +verify +every 2s, next /);

  t.is((await runCli(['verify', ...master, '--every', 'off'])).code, ExitCode.ok);
  t.deepEqual((await jobsOf(pair)).schedules, []);
});

test('a job type that needs the lease is handed on by a standby, without using an attempt, and runs on the lease holder', async (t) => {
  const server = await startRedis();
  t.teardown(() => server.destroy());
  const ran: string[] = [];
  registerJobType('needs-lease', { leaseHolderOnly: true, run: async (_data, ctx) => void ran.push(ctx.worker.state) });
  // Only the worker's state matters here: standby, until it takes the lease.
  const consumer = { state: 'standby' } as { state: string };
  const place = { master: { host: server.host, port: server.port }, queueDb: 0, prefix: 'qsync', queue: 'default' };
  const runner = startJobWorker({
    ...place,
    replica: place.master,
    timeoutMs: 2000,
    log: createLogger('silent'),
    worker: consumer as unknown as SyncWorker,
  });
  t.teardown(() => runner.close());
  const queue = controlQueue(place);
  t.teardown(() => queue.close());
  const job = await queue.add('needs-lease', {});
  await eventually(async () => (await job.getState()) === 'delayed', 15_000, 'handed on');
  t.deepEqual(ran, []);
  consumer.state = 'streaming';
  await eventually(async () => (await job.getState()) === 'completed', 15_000, 'run by the lease holder');
  t.deepEqual(ran, ['streaming']);
  t.is((await queue.getJob(job.id!))!.attemptsMade, 1, 'the hand-ons used no attempt');
});

test('bad verify flags each give one line naming the value and exit 2', async (t) => {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const ok = ['--master', url, '--replica', url];
  const cases: [string[], RegExp][] = [
    [['verify', ...ok, '--mode', 'most'], /--mode must be one of full, sample, recent, got 'most'/],
    [['verify', ...ok, '--mode', 'sample', '--sample', '2'], /--sample .*'2'/],
    [['verify', ...ok, '--sample', '0.5'], /--sample goes with --mode sample/],
    [['verify', ...ok, '--mode', 'recent', '--recent', '0'], /--recent .*'0'/],
    [['verify', ...ok, '--drain-timeout-ms', 'soon'], /--drain-timeout-ms .*'soon'/],
    [['verify', ...ok, '--every', '5x'], /--every .*'5x'/],
    [['verify', ...ok, '--every', '1h', '--report', 'r.json'], /--report/],
    [['verify', '--master', url], /--replica/],
    [['verify', ...ok, '--report', '/nonexistent-dir/r.json'], /--report '\/nonexistent-dir\/r\.json'/],
  ];
  const runs = await Promise.all(cases.map(([args]) => runCli(args)));
  runs.forEach((run, i) => {
    t.is(run.code, ExitCode.usage, `${cases[i][0].join(' ')}: ${run.stderr.join('\n')}`);
    t.is(run.stderr.length, 1, run.stderr.join('\n'));
    t.regex(run.stderr[0] ?? '', cases[i][1]);
    t.deepEqual(run.stdout, []);
  });
});
