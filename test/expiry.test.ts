/**
 * Expiry is decided by the master's clock: whatever the replica's lag and
 * whatever its clock says, each write has on the replica the effect it had
 * on the master, and keys end with the master's value and absolute expiry.
 * Renewals while the consumer is away, writes applied after the key expired
 * on the replica, a replica clock ahead or behind (simulated by shifting
 * the replica's expiries), random writes with short TTLs and cuts, and a
 * real session store with rolling sessions. Real servers, short TTLs.
 */
import test, { type ExecutionContext } from 'ava';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import express from 'express';
import session from 'express-session';
import RedisStore from 'connect-redis';
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import type { SyncWorker } from '../consumer/drain/worker.js';
import { verify } from '../consumer/verify/verify.js';
import { runRepair } from '../consumer/copy/repair.js';
import { setLimits } from '../consumer/queue/limits.js';
import { QueueKeys } from '../shared/keys.js';
import { workerMetrics } from '../consumer/metrics/metrics.js';
import { frameBatch } from '../shared/entry.js';
import { defineScripts } from '../shared/scripts.js';
import { startPair, startWorker, waitForDrain, datasetDiff, type Pair } from './support/fixtures.js';
import { eventually } from './support/wait.js';
import type { RedisServer } from './support/redis-server.js';

type Producer = ReturnType<typeof createProducer>;

/** A master and a replica, destroyed after the test. */
async function pairFor(t: ExecutionContext): Promise<Pair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  return pair;
}

/** A consumer that can be stopped and started again, closed after the test. */
function consumer(t: ExecutionContext, pair: Pair): { start(): SyncWorker; stop(): Promise<void> } {
  let worker: SyncWorker | undefined;
  t.teardown(() => worker?.close());
  return {
    start: () => (worker = startWorker(pair)),
    stop: async () => {
      await worker?.close();
      worker = undefined;
    },
  };
}

/** Starts the consumer, waits until the replica has every entry, and stops it. */
async function drainOnce(t: ExecutionContext, pair: Pair): Promise<SyncWorker> {
  const c = consumer(t, pair);
  const worker = c.start();
  await waitForDrain(pair.master.client(), pair.replica.client(), { timeoutMs: 5000 });
  await c.stop();
  return worker;
}

/** Every application key of a db with an expiry gets it moved by `ms` on this server: a clock that runs `-ms` off. */
async function shiftExpiries(server: RedisServer, ms: number, db = 0): Promise<void> {
  const client = server.client(db);
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'COUNT', 1000);
    cursor = next;
    for (const key of keys) {
      if (key.startsWith('qsync:')) continue;
      const at = await client.pexpiretime(key);
      if (at > 0) await client.pexpireat(key, at + ms);
    }
  } while (cursor !== '0');
  client.disconnect();
}

/** Waits until the absolute time `at` (ms) has passed. */
async function until(at: number): Promise<void> {
  const wait = at - Date.now();
  if (wait > 0) await sleep(wait);
}

test("keys renewed while the consumer is away longer than their TTL end alive on the replica, with the master's expiry", async (t) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  const c = consumer(t, pair);
  const kinds = [
    'expire',
    'pexpire',
    'expireat',
    'pexpireat',
    'getex-ex',
    'getex-px',
    'getex-exat',
    'getex-pxat',
    'getex-persist',
    'persist',
    'keepttl',
  ];
  const start = Date.now();
  for (const k of kinds) await p.set(`r:${k}`, 'v', 'PX', 4000);
  await p.set('r:counter', '10', 'PX', 4000);
  await p.hset('r:hash', 'old', '1');
  await p.pexpire('r:hash', 4000);
  const setUp = Date.now();
  c.start();
  await waitForDrain(pair.master.client(), pair.replica.client());
  await c.stop();

  // The consumer is away; the keys are renewed on the master.
  const far = Date.now() + 60_000;
  await p.expire('r:expire', 60);
  await p.pexpire('r:pexpire', 60_000);
  await p.expireat('r:expireat', Math.floor(far / 1000));
  await p.pexpireat('r:pexpireat', far);
  await p.getex('r:getex-ex', 'EX', 60);
  await p.getex('r:getex-px', 'PX', 60_000);
  await p.getex('r:getex-exat', 'EXAT', Math.floor(far / 1000));
  await p.getex('r:getex-pxat', 'PXAT', far);
  await p.getex('r:getex-persist', 'PERSIST');
  await p.persist('r:persist');
  await p.expire('r:keepttl', 60);
  await p.set('r:keepttl', 'v2', 'KEEPTTL');
  // A counter renewed then incremented, a hash renewed then written.
  await p.expire('r:counter', 60);
  await p.incr('r:counter');
  await p.expire('r:hash', 60);
  await p.hset('r:hash', 'new', '2');
  t.true(Date.now() < start + 4000, 'the keys were renewed while alive');
  await until(setUp + 4100); // every original TTL has run out, on both sides

  const worker = c.start();
  const registry = workerMetrics(worker, pair.master.client(), 'qsync', 'default');
  await waitForDrain(pair.master.client(), pair.replica.client());
  // The copy follows the batch that found the keys missing, once that batch is confirmed.
  await eventually(() => worker.expiryFixes.copied > 0 || undefined, 10_000, 'the keys the replica had lost copied from the master');
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  const replica = pair.replica.client();
  t.is(await replica.get('r:counter'), '11');
  t.deepEqual(await replica.hgetall('r:hash'), { old: '1', new: '2' });
  t.regex(await registry.metrics(), /qsync_expiry_fixes_total\{queue="default",kind="copied"\} [1-9]/);
});

/** Writes made while a key was alive on the master, each set up first with a TTL of 600 ms. */
const WHILE_ALIVE: Record<string, (p: Producer) => Promise<unknown>> = {
  incr: async (p) => {
    await p.set('a:incr', '10', 'PX', 600);
    await p.incr('a:incr');
  },
  append: async (p) => {
    await p.set('a:append', 'ab', 'PX', 600);
    await p.append('a:append', 'cd');
  },
  setrange: async (p) => {
    await p.set('a:setrange', 'hello', 'PX', 600);
    await p.setrange('a:setrange', 1, 'EE');
  },
  incrbyfloat: async (p) => {
    await p.set('a:float', '1.5', 'PX', 600);
    await p.incrbyfloat('a:float', '1');
  },
  hset: async (p) => {
    await p.hset('a:hset', 'f', '1');
    await p.pexpire('a:hset', 600);
    await p.hset('a:hset', 'g', '2');
  },
  hsetnx: async (p) => {
    await p.hset('a:hsetnx', 'f', '1');
    await p.pexpire('a:hsetnx', 600);
    await p.hsetnx('a:hsetnx', 'g', '2');
  },
  hincrbyfloat: async (p) => {
    await p.hset('a:hif', 'f', '1');
    await p.pexpire('a:hif', 600);
    await p.hincrbyfloat('a:hif', 'f', '1.5');
  },
  sadd: async (p) => {
    await p.sadd('a:sadd', 'x');
    await p.pexpire('a:sadd', 600);
    await p.sadd('a:sadd', 'y');
  },
  lpush: async (p) => {
    await p.rpush('a:lpush', 'x');
    await p.pexpire('a:lpush', 600);
    await p.lpush('a:lpush', 'y');
  },
  'zadd incr': async (p) => {
    await p.zadd('a:zadd', 1, 'x');
    await p.pexpire('a:zadd', 600);
    await p.zadd('a:zadd', 'INCR', 2, 'x');
  },
  pfadd: async (p) => {
    await p.pfadd('a:pf', 'x');
    await p.pexpire('a:pf', 600);
    await p.pfadd('a:pf', 'y');
  },
  lmove: async (p) => {
    await p.rpush('a:lsrc', 'x', 'y');
    await p.pexpire('a:lsrc', 600);
    await p.lmove('a:lsrc', 'a:ldst', 'LEFT', 'LEFT');
  },
  smove: async (p) => {
    await p.sadd('a:ssrc', 'x', 'y');
    await p.pexpire('a:ssrc', 600);
    await p.smove('a:ssrc', 'a:sdst', 'x');
  },
  'sinterstore, sunionstore, sdiffstore': async (p) => {
    await p.sadd('a:in1', 'x', 'y');
    await p.pexpire('a:in1', 600);
    await p.sadd('a:in2', 'x');
    await p.sinterstore('a:inter', 'a:in1', 'a:in2');
    await p.sunionstore('a:union', 'a:in1', 'a:in2');
    await p.sdiffstore('a:diff', 'a:in1', 'a:in2');
  },
  'copy replace': async (p) => {
    await p.set('a:csrc', 'new', 'PX', 600);
    await p.set('a:cdst', 'old');
    await p.copy('a:csrc', 'a:cdst', 'REPLACE');
  },
  rename: async (p) => {
    await p.set('a:rsrc', 'v', 'PX', 600);
    await p.rename('a:rsrc', 'a:rdst');
    await p.persist('a:rdst');
  },
  lset: async (p) => {
    await p.rpush('a:lset', 'x');
    await p.pexpire('a:lset', 600);
    await p.lset('a:lset', 0, 'y');
    await p.persist('a:lset');
  },
};

test('writes applied after their keys expired on the replica (lag longer than the TTL) have the effect they had on the master', async (t) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  // "SET k 10 PX 1500; INCR k", applied late.
  await p.set('lag:k', '10', 'PX', 1500);
  await p.incr('lag:k');
  for (const write of Object.values(WHILE_ALIVE)) await write(p);
  await sleep(1600);

  consumer(t, pair).start();
  await waitForDrain(pair.master.client(), pair.replica.client(), { timeoutMs: 5000 });
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  t.is(await pair.replica.client().get('lag:k'), null);
  t.deepEqual(await pair.replica.client().lrange('a:ldst', 0, -1), ['x']);
});

test('a replica clock ahead: writes on keys alive on the master but already expired on the replica', async (t) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  const start = Date.now();
  await p.set('ahead:counter', '10', 'PX', 3000);
  await p.hset('ahead:hash', 'f', '1');
  await p.pexpire('ahead:hash', 3000);
  await p.set('ahead:renewed', 'v', 'PX', 3000);
  await p.set('ahead:persisted', 'v', 'PX', 3000);
  await p.sadd('ahead:set', 'x');
  await p.pexpire('ahead:set', 3000);
  const setUp = Date.now();
  await drainOnce(t, pair);
  // The replica's clock runs 2 s ahead: its keys expire 2 s early.
  await shiftExpiries(pair.replica, -2000);
  await until(setUp + 1100);
  t.true(Date.now() < start + 2900, 'the keys are still alive on the master');

  await p.incr('ahead:counter');
  await p.hset('ahead:hash', 'g', '2');
  await p.sadd('ahead:set', 'y');
  await p.expire('ahead:renewed', 60);
  await p.persist('ahead:persisted');
  await p.expire('ahead:hash', 60);
  await drainOnce(t, pair);
  await until(setUp + 3100); // the short expiries have passed on both sides
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  t.deepEqual(await pair.replica.client().hgetall('ahead:hash'), { f: '1', g: '2' });
});

test('a replica clock behind: writes on keys expired on the master but still alive on the replica', async (t) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  const short = async (key: string) => p.pexpire(key, 500);
  await p.set('behind:msetnx', 'old', 'PX', 500);
  await p.set('behind:rsrc', 'v');
  await p.set('behind:rdst', 'old', 'PX', 500);
  await p.set('behind:cdst', 'old', 'PX', 500);
  await p.hset('behind:hash', 'f', 'old');
  await short('behind:hash');
  await p.sadd('behind:set', 'old');
  await short('behind:set');
  await p.rpush('behind:list', 'old');
  await short('behind:list');
  await p.sadd('behind:sdst', 'old');
  await short('behind:sdst');
  await p.sadd('behind:ssrc', 'x');
  await p.rpush('behind:ldst', 'old');
  await short('behind:ldst');
  await p.rpush('behind:lsrc', 'x');
  await p.pfadd('behind:pf', 'old');
  await short('behind:pf');
  await p.set('behind:counter', '10', 'PX', 500);
  await p.set('behind:float', '10', 'PX', 500);
  await p.sadd('behind:in1', 'x');
  await short('behind:in1');
  await p.sadd('behind:in2', 'x');
  // COPY ... DB 3 onto a key of db 3 that expired on the master only.
  await p.set('behind:cdbsrc', 'v');
  await createProducer(pair.master.client(3)).set('behind:cdbdst', 'old', 'PX', 500);
  const setUp = Date.now();
  await drainOnce(t, pair);
  // The replica's clock runs 2 s behind: its keys expire 2 s late.
  await shiftExpiries(pair.replica, 2000);
  await shiftExpiries(pair.replica, 2000, 3);
  await until(setUp + 600);

  await p.msetnx('behind:msetnx', 'new', 'behind:msetnx2', 'new');
  await p.renamenx('behind:rsrc', 'behind:rdst');
  await p.set('behind:csrc', 'v');
  await p.copy('behind:csrc', 'behind:cdst');
  await p.hsetnx('behind:hash', 'g', 'new');
  await p.sadd('behind:set', 'new');
  await p.lpush('behind:list', 'new');
  await p.smove('behind:ssrc', 'behind:sdst', 'x');
  await p.lmove('behind:lsrc', 'behind:ldst', 'LEFT', 'LEFT');
  await p.pfadd('behind:pf', 'new');
  await p.incr('behind:counter');
  await p.incrbyfloat('behind:float', '1');
  await p.sinterstore('behind:inter', 'behind:in1', 'behind:in2');
  await p.copy('behind:cdbsrc', 'behind:cdbdst', 'DB', 3);
  await drainOnce(t, pair);
  await until(setUp + 2600); // the replica's late expiries have passed too
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  t.deepEqual(await pair.replica.client().hgetall('behind:hash'), { g: 'new' });
  t.is(await pair.replica.client().get('behind:counter'), '1');
  t.is(await pair.replica.client(3).get('behind:cdbdst'), 'v');
});

/** Random writes on a few keys with short or long TTLs, pauses, and consumer cuts. */
const key = fc.constantFrom('a', 'b', 'c');
const ttl = fc.constantFrom(300, 500, 800, 60_000);
const often = (arbitrary: fc.Arbitrary<unknown[]>) => ({ weight: 3, arbitrary });
const op = fc.oneof(
  often(fc.tuple(fc.constant('set'), key, ttl)),
  often(fc.tuple(fc.constant('incr'), key)),
  often(fc.tuple(fc.constant('hset'), key)),
  { weight: 1, arbitrary: fc.tuple(fc.constant('sadd'), key) },
  often(fc.tuple(fc.constant('pexpire'), key, ttl)),
  { weight: 1, arbitrary: fc.tuple(fc.constant('persist'), key) },
  often(fc.tuple(fc.constant('getex'), key, ttl)),
  { weight: 1, arbitrary: fc.tuple(fc.constant('smove'), key, key) },
  { weight: 1, arbitrary: fc.tuple(fc.constant('rename'), key, key) },
  { weight: 1, arbitrary: fc.tuple(fc.constant('sunionstore'), key, key) },
  { weight: 2, arbitrary: fc.tuple(fc.constant('pause'), fc.constantFrom(100, 250, 400)) },
  { weight: 2, arbitrary: fc.tuple(fc.constant('cut')) },
);

test('random writes with short TTLs, pauses and consumer cuts end equal: DUMP and PEXPIRETIME of every key', async (t) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  const c = consumer(t, pair);
  let run = 0;
  await t.notThrowsAsync(
    fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 4, maxLength: 14 }), async (ops) => {
        run++;
        const k = (name: unknown) => `p${run}:${String(name)}`;
        let up = true;
        c.start();
        for (const [name, a, b] of ops as [string, unknown, unknown][]) {
          // Wrong types are part of the game: a failed write logs nothing.
          const ignore = () => {};
          if (name === 'pause') await sleep(a as number);
          else if (name === 'cut') {
            if (up) await c.stop();
            else c.start();
            up = !up;
          } else if (name === 'set') await p.set(k(a), 'v', 'PX', b as number).catch(ignore);
          else if (name === 'incr') await p.incr(k(a)).catch(ignore);
          else if (name === 'hset') await p.hset(k(a), `f${run}`, '1').catch(ignore);
          else if (name === 'sadd') await p.sadd(k(a), `m${run}`).catch(ignore);
          else if (name === 'pexpire') await p.pexpire(k(a), b as number).catch(ignore);
          else if (name === 'persist') await p.persist(k(a)).catch(ignore);
          else if (name === 'getex') await p.getex(k(a), 'PX', b as number).catch(ignore);
          else if (name === 'smove') await p.smove(k(a), k(b), `m${run}`).catch(ignore);
          else if (name === 'rename') await p.rename(k(a), k(b)).catch(ignore);
          else if (name === 'sunionstore') await p.sunionstore(k(a), k(a), k(b)).catch(ignore);
        }
        // The writes since the last cut wait past every short TTL (which
        // also keeps any key from expiring while the sides are compared).
        if (up) await c.stop();
        await sleep(850);
        c.start();
        await waitForDrain(pair.master.client(), pair.replica.client(), { timeoutMs: 5000 });
        await c.stop();
        const diff = (await datasetDiff(pair.master, pair.replica)).filter((d) => d.includes(` p${run}:`));
        assert.deepStrictEqual(diff, []);
      }),
      { numRuns: 15, includeErrorInReport: true },
    ),
  );
});

test('express-session with connect-redis: rolling sessions touched during a consumer outage of 2.5 times their TTL all reach the replica', async (t) => {
  const pair = await pairFor(t);
  const c = consumer(t, pair);
  const producer = createProducer(pair.master.client());
  const app = express();
  app.use(
    session({
      store: new RedisStore({ client: producer, prefix: 'sess:' }),
      secret: 'test',
      resave: false,
      saveUninitialized: false,
      rolling: true,
      cookie: { maxAge: 2000 },
    }),
  );
  app.get('/login/:user', (req, res) => {
    (req.session as unknown as Record<string, string>).user = req.params.user;
    res.send('ok');
  });
  app.get('/me', (req, res) => {
    res.send((req.session as unknown as Record<string, string>).user ?? 'nobody');
  });
  const server = app.listen(0, '127.0.0.1');
  t.teardown(() => server.close());
  await once(server, 'listening');
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const cookies: string[] = [];
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${base}/login/u${i}`);
    cookies.push(res.headers.get('set-cookie')!.split(';')[0]);
  }
  c.start();
  await waitForDrain(pair.master.client(), pair.replica.client());
  await c.stop();

  // 5 s (2.5 times the sessions' 2 s) without a consumer; every session is used (and so touched) every 100 ms.
  const end = Date.now() + 5000;
  while (Date.now() < end) {
    await Promise.all(cookies.map(async (cookie) => (await fetch(`${base}/me`, { headers: { cookie } })).text()));
    await sleep(100);
  }

  c.start();
  await waitForDrain(pair.master.client(), pair.replica.client());
  const sessions = async (client: Redis) => {
    const keys = (await client.keys('sess:*')).sort();
    return Promise.all(keys.map(async (k) => [k, await client.get(k), await client.pexpiretime(k)]));
  };
  const onMaster = await sessions(pair.master.client());
  t.true(onMaster.length > 0, 'sessions kept alive on the master');
  t.deepEqual(await sessions(pair.replica.client()), onMaster);
});

test('verify reports a difference on a key about to expire instead of waiting until both sides have expired it', async (t) => {
  const pair = await pairFor(t);
  const [m, r] = [pair.master.client(), pair.replica.client()];
  const at = Date.now() + 1800;
  // The same expiry, values that differ; and a key the replica lacks, 1.8 s from its expiry (beyond the tolerance of 200 ms).
  await m.set('soon:value', 'master', 'PXAT', at);
  await r.set('soon:value', 'replica', 'PXAT', at);
  await m.set('soon:missing', 'v', 'PXAT', at);
  // A key on one side only, expiring within the tolerance: the other side may have expired it already.
  await m.set('soon:expiring', 'v', 'PXAT', Date.now() + 100);
  const result = await verify({
    master: { host: pair.master.host, port: pair.master.port },
    replica: { host: pair.replica.host, port: pair.replica.port },
    drainTimeoutMs: 1000,
    ttlToleranceMs: 200,
  });
  t.deepEqual(result.examples.map((d) => `${String(d.key)} ${d.kind}`).sort(), ['soon:missing missing-on-replica', 'soon:value value']);
});

test("a repair replays the log with the master's view too: keys that expired on the replica during the lag are copied again", async (t) => {
  const pair = await pairFor(t);
  const [m, keys] = [pair.master.client(), new QueueKeys('qsync', 'default')];
  const p = createProducer(pair.master.client());
  await p.set('base', '1');
  await drainOnce(t, pair);
  // Queued while no consumer runs, replayed by the repair after the TTLs ran out.
  await p.set('lag:counter', '10', 'PX', 600);
  await p.incr('lag:counter');
  await p.set('lag:renewed', 'v', 'PX', 600);
  await p.pexpire('lag:renewed', 60_000);
  await p.hset('lag:hash', 'f', '1');
  await p.pexpire('lag:hash', 600);
  await p.hset('lag:hash', 'g', '2');
  await p.persist('lag:hash');
  // A write the full log does not take: the queue needs a repair.
  await setLimits(m, keys, { maxEntries: await m.llen(keys.log), policy: 'mark-dirty' });
  await p.set('dirty', 'x');
  t.is(await m.hget(keys.meta, 'state'), 'repair-needed');
  await setLimits(m, keys, { maxEntries: 1_000_000 });
  await sleep(800);

  const result = await runRepair({
    master: { host: pair.master.host, port: pair.master.port },
    replica: { host: pair.replica.host, port: pair.replica.port },
    leaseMs: 2000,
  });
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  t.deepEqual(await pair.replica.client().hgetall('lag:hash'), { f: '1', g: '2' });
  t.true(result.recopies > 0, 'keys lost on the replica were copied again');
});

test("entries already in a key's copy from the master are skipped, and the held fields go once the watermark passes the copy", async (t) => {
  const pair = await pairFor(t);
  const [m, r] = [pair.master.client(), pair.replica.client()];
  defineScripts(r);
  defineScripts(m);
  const keys = new QueueKeys('qsync', 'default');
  const p = createProducer(pair.master.client());
  await p.set('k', '10', 'PX', 500); // entry 1
  await p.incr('k'); // 2
  await p.pexpire('k', 60_000); // 3
  await p.incr('k'); // 4: the master holds 12, for a minute
  await sleep(600);
  const epoch = (await m.hget(keys.meta, 'epoch'))!;
  const log = await m.lrangeBuffer(keys.log, 0, -1);
  const apply = (entries: Buffer[]) => r.qsyncApplyBatch(keys.applied, epoch, '0', 'halt', ...frameBatch(entries));

  // Applied late: k expired here before entry 2, which is held back.
  t.deepEqual(await apply(log.slice(0, 2)), [0, 2, 2, [], 1, 0, 1]);
  t.is(await r.hget(keys.applied, 'held:0:k'), 'p2');
  // The copy reflects every entry up to 4; entries 3 and 4, applied after it, are in it.
  const [seq, , key, , dump, at] = (await m.qsyncResyncCopyBuffer(keys.meta, 0, 0, 1000, 1_000_000, '', 'k')) as Buffer[];
  t.deepEqual(await r.qsyncRestoreHeld(keys.applied, epoch, 0, 0, String(seq), key, String(at), dump), [0, 1, 0]);
  t.is(await r.hget(keys.applied, 'held:0:k'), 'm4');
  t.deepEqual(await apply(log.slice(2)), [0, 4, 2, [], 0, 0, 2]);
  t.is(await r.get('k'), '12', 'the INCR in the copy is not applied again');
  t.is(await r.pexpiretime('k'), await m.pexpiretime('k'));
  // Past the marker, nothing is held any more: the next batch drops the fields.
  await p.incr('k');
  t.deepEqual(await apply((await m.lrangeBuffer(keys.log, 0, -1)).slice(4)), [0, 5, 1]);
  t.is(await r.get('k'), '13');
  t.deepEqual(
    (await r.hkeys(keys.applied)).filter((f) => f.startsWith('held')),
    [],
  );
});
