/**
 * Libraries apps use, each given producer-wrapped connections the way a user
 * would wrap their own (`createProducer(new Redis(url))`): each library does
 * its work on the master as it does without qsync, and afterwards the
 * replica holds exactly what the master holds (datasetDiff, and
 * `qsync verify` exiting 0).
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import test, { type ExecutionContext } from 'ava';
import { FlowProducer, Queue, QueueEvents, Worker, type Job, type WorkerOptions } from 'bullmq';
import { caching } from 'cache-manager';
import { redisInsStore } from 'cache-manager-ioredis-yet';
import RedisStore from 'connect-redis';
import express from 'express';
import session from 'express-session';
import { Redis, type RedisOptions } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import Redlock, { ExecutionError } from 'redlock';
import { createProducer } from '../producer/index.js';
import { ExitCode } from '../shared/errors.js';
import { runCli } from './support/cli.js';
import { datasetDiff, startPair, startWorker, waitForDrain, type Pair } from './support/fixtures.js';
import { eventually } from './support/wait.js';

interface Setup {
  pair: Pair;
  /** A producer-wrapped connection to the master, closed after the test. */
  connect(options?: RedisOptions): Redis;
  /** A plain connection to the replica, to look at what reached it. */
  replica: Redis;
}

async function setUp(t: ExecutionContext): Promise<Setup> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const worker = startWorker(pair);
  t.teardown(() => worker.close());
  const connect = (options: RedisOptions = {}) => {
    const client = createProducer(new Redis(pair.master.url, options));
    t.teardown(() => client.disconnect());
    return client;
  };
  return { pair, connect, replica: pair.replica.client() };
}

/** Waits for the replica to catch up, then compares both servers key by key, in-process and with `qsync verify`. */
async function assertReplicaEqual(t: ExecutionContext, pair: Pair): Promise<void> {
  await waitForDrain(pair.master.client(), pair.replica.client());
  t.deepEqual(await datasetDiff(pair.master, pair.replica), [], 'datasetDiff between master and replica');
  const run = await runCli(['verify', '--master', pair.master.url, '--replica', pair.replica.url]);
  t.is(run.code, ExitCode.ok, [...run.stdout, ...run.stderr].join('\n'));
}

interface Jobs {
  queue: Queue;
  events: QueueEvents;
  worker: Worker;
  /** 'error' events of the queue, the events and the worker */
  errors: string[];
  close(): Promise<void>;
}

/** A BullMQ queue, its events and a worker running `processor`, each on producer-wrapped connections. */
async function bullmq(
  t: ExecutionContext,
  connect: Setup['connect'],
  name: string,
  processor: (job: Job) => Promise<unknown>,
  options: Omit<WorkerOptions, 'connection'> = {},
): Promise<Jobs> {
  const queue = new Queue(name, { connection: connect() });
  const events = new QueueEvents(name, { connection: connect({ maxRetriesPerRequest: null }) });
  const worker = new Worker(name, processor, { ...options, connection: connect({ maxRetriesPerRequest: null }) });
  const errors: string[] = [];
  const noteError = (err: Error) => errors.push(err.message);
  queue.on('error', noteError);
  events.on('error', noteError);
  worker.on('error', noteError);
  const close = async () => {
    await worker.close();
    await events.close();
    await queue.close();
  };
  t.teardown(close);
  await events.waitUntilReady();
  return { queue, events, worker, errors, close };
}

/** Waits until a short-lived key has expired on the master, so that a comparison never meets it expiring halfway through. */
function expired(master: Redis, key: string): Promise<boolean> {
  return eventually(async () => (await master.exists(key)) === 0, 5_000, `${key} expired`);
}

/** Waits for each job's end and returns their return values. */
function finished(jobs: Job[], { events, errors }: Jobs): Promise<unknown[]> {
  return Promise.all(
    jobs.map((job) => job.waitUntilFinished(events, 30_000).catch((err: Error) => `${err.message} (errors: ${errors.join(' | ')})`)),
  );
}

test('BullMQ: jobs added, processed, retried, delayed and removed over producer connections; the replica holds the same queue', async (t) => {
  const { pair, connect, replica } = await setUp(t);
  const jobs = await bullmq(t, connect, 'mail', async (job: Job<{ to: string }>) => {
    if (job.name === 'flaky' && job.attemptsMade === 0) throw new Error('the mail server said try later');
    return `sent to ${job.data.to}`;
  });
  const { queue, worker } = jobs;
  const failedAttempts: string[] = [];
  worker.on('failed', (job) => failedAttempts.push(job?.name ?? '?'));

  const plain = await Promise.all(['a', 'b', 'c'].map((to) => queue.add('welcome', { to })));
  const flaky = await queue.add('flaky', { to: 'd' }, { attempts: 2, backoff: { type: 'fixed', delay: 100 } });
  const later = await queue.add('reminder', { to: 'e' }, { delay: 500 });
  const cancelled = await queue.add('reminder', { to: 'f' }, { delay: 60_000 });
  await queue.remove(cancelled.id!);

  t.deepEqual(
    await finished([...plain, flaky, later], jobs),
    ['a', 'b', 'c', 'd', 'e'].map((to) => `sent to ${to}`),
  );
  t.deepEqual(failedAttempts, ['flaky'], 'the flaky job failed once, then succeeded on its retry');
  t.like(await queue.getJob(flaky.id!), { attemptsMade: 2, returnvalue: 'sent to d' });
  const reminder = await queue.getJob(later.id!);
  t.true(reminder!.processedOn! - reminder!.timestamp >= 500, 'the delayed job ran after its delay');
  t.is(await queue.getJob(cancelled.id!), undefined);
  t.like(await queue.getJobCounts('completed', 'failed', 'delayed', 'wait', 'active'), { completed: 5, failed: 0, delayed: 0, wait: 0, active: 0 });

  await jobs.close();
  await assertReplicaEqual(t, pair);
  t.is(await replica.zcard('bull:mail:completed'), 5);
  t.is(await replica.exists(`bull:mail:${cancelled.id}`), 0, 'the removed job is gone from the replica too');
  t.deepEqual(jobs.errors, []);
});

test('BullMQ: jobs added in bulk and as a flow of a parent and its children (FlowProducer); the replica holds the same queue', async (t) => {
  const { pair, connect } = await setUp(t);
  const jobs = await bullmq(t, connect, 'reports', async (job: Job<{ n?: number }>) => {
    if (job.name !== 'total') return (job.data.n ?? 0) * 10;
    return Object.values(await job.getChildrenValues<number>()).reduce((a, b) => a + b, 0);
  });
  const flows = new FlowProducer({ connection: connect() });
  t.teardown(() => flows.close());

  const bulk = await jobs.queue.addBulk([1, 2, 3].map((n) => ({ name: 'part', data: { n } })));
  const flow = await flows.add({
    name: 'total',
    queueName: 'reports',
    children: [4, 5].map((n) => ({ name: 'part', queueName: 'reports', data: { n } })),
  });
  t.deepEqual(await finished([...bulk, flow.job], jobs), [10, 20, 30, 90]);
  t.like(await jobs.queue.getJobCounts('completed', 'failed', 'waiting-children'), { completed: 6, failed: 0, 'waiting-children': 0 });

  await flows.close();
  await jobs.close();
  await assertReplicaEqual(t, pair);
  t.deepEqual(jobs.errors, []);
});

test('BullMQ: priorities, progress, a promoted delayed job, a job scheduler and the worker rate limiter, then clean and obliterate; the replica holds the same queue at each step', async (t) => {
  const { pair, connect, replica } = await setUp(t);
  const master = pair.master.client();
  const order: string[] = [];
  const jobs = await bullmq(
    t,
    connect,
    'feeds',
    async (job: Job) => {
      order.push(job.name);
      await job.updateProgress(50);
      return job.name;
    },
    { limiter: { max: 2, duration: 200 } },
  );
  const { queue } = jobs;

  await queue.pause();
  const prioritised = [];
  for (const priority of [3, 1, 2]) prioritised.push(await queue.add(`p${priority}`, {}, { priority }));
  await queue.resume();
  t.deepEqual(await finished(prioritised, jobs), ['p3', 'p1', 'p2']);
  t.deepEqual(order, ['p1', 'p2', 'p3'], 'the most urgent first');
  t.is((await queue.getJob(prioritised[0].id!))?.progress, 50);

  const promoted = await queue.add('promoted', {}, { delay: 60_000 });
  await promoted.promote();
  t.deepEqual(await finished([promoted], jobs), ['promoted']);

  await queue.upsertJobScheduler('tick', { every: 100, limit: 3 }, { name: 'tick' });
  await eventually(
    async () => (await queue.getJobs(['completed'])).filter((j) => j.name === 'tick').length === 3,
    20_000,
    `three ticks (errors: ${jobs.errors.join(' | ')})`,
  );
  t.true(await queue.removeJobScheduler('tick'));
  await expired(master, 'bull:feeds:limiter');
  await assertReplicaEqual(t, pair);

  t.is((await queue.clean(0, 100, 'completed')).length, 7);
  await waitForDrain(master, replica);
  t.is(await replica.zcard('bull:feeds:completed'), 0, 'cleaned on the replica too');
  await jobs.worker.close();
  await queue.obliterate({ force: true });
  await expired(master, 'bull:feeds:limiter');
  t.deepEqual(await master.keys('bull:feeds:*'), []);
  await jobs.close();
  await assertReplicaEqual(t, pair);
  t.deepEqual(jobs.errors, []);
});

test('BullMQ: a job whose worker died mid-job is found stalled and finished by another worker; the replica holds the same queue', async (t) => {
  const { pair, connect } = await setUp(t);
  let hang: () => void = () => undefined;
  // A worker that neither renews its lock nor looks for stalled jobs itself: its job stalls once, found by the other worker only.
  const jobs = await bullmq(t, connect, 'imports', () => new Promise<void>((resolve) => (hang = resolve)), {
    lockDuration: 1000,
    skipLockRenewal: true,
    skipStalledCheck: true,
  });
  t.teardown(() => hang());
  const job = await jobs.queue.add('import', { file: 'a.csv' });
  await eventually(async () => (await jobs.queue.getJobState(job.id!)) === 'active', 10_000, 'the job taken by the first worker');
  // Closed without waiting for its job, as a crash would leave it: the job's lock is left to expire.
  await jobs.worker.close(true);

  const rescuer = new Worker('imports', async (j: Job<{ file: string }>) => `imported ${j.data.file}`, {
    stalledInterval: 300,
    connection: connect({ maxRetriesPerRequest: null }),
  });
  t.teardown(() => rescuer.close());
  const stalled: string[] = [];
  rescuer.on('stalled', (id) => stalled.push(id));
  rescuer.on('error', (err) => jobs.errors.push(err.message));
  t.deepEqual(await finished([job], jobs), ['imported a.csv']);
  t.deepEqual(stalled, [job.id]);

  await rescuer.close();
  await jobs.close();
  await expired(pair.master.client(), 'bull:imports:stalled-check');
  await assertReplicaEqual(t, pair);
  t.deepEqual(jobs.errors, []);
});

/** A lock acquired, refused to a second taker, extended and released; the replica checked after each step. */
async function lockLifecycle(t: ExecutionContext, { pair, replica }: Setup, redlock: Redlock): Promise<void> {
  const master = pair.master.client();
  const resource = 'lock:invoice:7';

  const lock = await redlock.acquire([resource], 60_000);
  t.is(await master.get(resource), lock.value);
  await t.throwsAsync(redlock.acquire([resource], 60_000), { instanceOf: ExecutionError }, 'a held lock is not given twice');
  await waitForDrain(master, replica);
  t.is(await replica.get(resource), lock.value);

  const extended = await lock.extend(600_000);
  t.is(extended.value, lock.value);
  t.true((await master.pttl(resource)) > 60_000, 'the extension moved the expiry');
  await assertReplicaEqual(t, pair);
  t.true((await replica.pttl(resource)) > 60_000, 'the replica has the extended expiry');

  await extended.release();
  t.is(await master.exists(resource), 0);
  await assertReplicaEqual(t, pair);
  t.is(await replica.exists(resource), 0);
}

test('redlock: a lock acquired, refused to a second taker, extended and released over a producer connection; the replica follows each step', async (t) => {
  // redlock sends EVALSHA first: the producer answers NOSCRIPT for a script it has not seen, and the EVAL that follows is logged.
  const setup = await setUp(t);
  await lockLifecycle(t, setup, new Redlock([setup.connect()], { retryCount: 0 }));
});

test('rate-limiter-flexible: RateLimiterRedis consumes until it refuses, rewards and penalises over a producer connection; the replica holds the same counters and expiries', async (t) => {
  const { pair, connect, replica } = await setUp(t);
  const limiter = new RateLimiterRedis({ storeClient: connect(), keyPrefix: 'rl', points: 3, duration: 3600 });

  for (const left of [2, 1, 0]) t.is((await limiter.consume('ip:1')).remainingPoints, left);
  const refused: unknown = await limiter.consume('ip:1').catch((err: unknown) => err);
  t.true(refused instanceof RateLimiterRes, `a fourth point in the window is refused (got ${String(refused)})`);
  t.true((refused as RateLimiterRes).msBeforeNext > 0);

  await limiter.reward('ip:1', 2);
  t.is((await limiter.consume('ip:1')).consumedPoints, 3, 'the reward gave two points back');

  await limiter.penalty('ip:2', 3);
  await t.throwsAsync(limiter.consume('ip:2'), { any: true, instanceOf: RateLimiterRes }, 'the penalty used up the window');
  t.is((await limiter.get('ip:2'))?.consumedPoints, 4);

  await limiter.block('ip:3', 3600);
  await limiter.delete('ip:2');
  await assertReplicaEqual(t, pair);
  t.is(await replica.get('rl:ip:1'), '3');
  t.is(await replica.exists('rl:ip:2'), 0);
  t.true((await replica.pttl('rl:ip:3')) > 0);
});

test('connect-redis with express-session: a session written, read back and destroyed over a producer connection; the replica follows', async (t) => {
  const { pair, connect, replica } = await setUp(t);
  const app = express();
  app.use(session({ store: new RedisStore({ client: connect(), prefix: 'sess:' }), secret: 'test', resave: false, saveUninitialized: false }));
  const user = (req: express.Request) => req.session as unknown as { user?: string };
  app.post('/login/:user', (req, res) => {
    user(req).user = req.params.user;
    res.send('ok');
  });
  app.get('/me', (req, res) => {
    res.send(user(req).user ?? 'nobody');
  });
  app.post('/logout', (req, res, next) => {
    req.session.destroy((err) => (err ? next(err) : res.send('bye')));
  });
  const server = app.listen(0, '127.0.0.1');
  t.teardown(() => server.close());
  await once(server, 'listening');
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const login = await fetch(`${base}/login/ada`, { method: 'POST' });
  t.is(login.status, 200, await login.text());
  const cookie = login.headers.get('set-cookie')!.split(';')[0];
  t.is(await (await fetch(`${base}/me`, { headers: { cookie } })).text(), 'ada');
  const [key] = await pair.master.client().keys('sess:*');
  await assertReplicaEqual(t, pair);
  t.regex((await replica.get(key)) ?? '', /"user":"ada"/);

  t.is(await (await fetch(`${base}/logout`, { method: 'POST', headers: { cookie } })).text(), 'bye');
  t.is(await (await fetch(`${base}/me`, { headers: { cookie } })).text(), 'nobody');
  await assertReplicaEqual(t, pair);
  t.is(await replica.exists(key), 0);
});

test('cache-manager with the ioredis store: set, get, del, ttl and reset (FLUSHDB) over a producer connection; the replica follows, other dbs kept', async (t) => {
  const { pair, connect, replica } = await setUp(t);
  const cache = await caching(redisInsStore(connect(), { ttl: 600_000 }));
  const orders = connect({ db: 1 });
  await orders.set('order:1', 'kept');

  await cache.set('user:1', { name: 'Ada' });
  await cache.set('config', { darkMode: true }, 0);
  await cache.store.mset(
    [
      ['page:home', '<h1>home</h1>'],
      ['page:about', '<h1>about</h1>'],
    ],
    600_000,
  );
  t.deepEqual(await cache.get('user:1'), { name: 'Ada' });
  const ttl = await cache.store.ttl('user:1');
  t.true(ttl > 0 && ttl <= 600_000, `user:1 expires within the default ttl (${ttl} ms)`);
  await cache.del('page:about');
  t.is(await cache.get('page:about'), undefined);
  await assertReplicaEqual(t, pair);
  t.is(await replica.get('config'), '{"darkMode":true}');

  await cache.reset();
  t.is(await cache.get('user:1'), undefined, 'reset emptied the cache');
  await cache.set('after', 'reset');
  t.is(await pair.master.client(1).get('order:1'), 'kept', 'reset empties only the cache db');
  await assertReplicaEqual(t, pair);
  t.is(await replica.exists('user:1', 'config', 'page:home'), 0);
  t.is(await replica.get('after'), '"reset"');
  t.is(await pair.replica.client(1).get('order:1'), 'kept');
});
