/**
 * Blocking pops through the producer (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH,
 * BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP) and LMPOP / ZMPOP: each pops at once
 * what is there, waits for a write by any client, times out with null, waits
 * for ever with 0, shares an element with racing waiters fairly and ends
 * with its client; the log holds exactly the pops made, so the replica ends
 * equal to the master with nothing popped twice.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { ReplyError, type Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { aclRules } from '../shared/acl.js';
import { KeyWakeups } from '../shared/wake-ups.js';
import { decodeEntry } from '../shared/entry.js';
import { producerPair, type ProducerPair } from './support/fixtures.js';
import { eventually } from './support/wait.js';

const LOG = 'qsync:default:log';

interface Setup extends ProducerPair {
  /** a client that is not a producer: its writes are not logged */
  plain: Redis;
  /** another producer, on a connection of its own */
  other: Redis;
}

async function setup(t: ExecutionContext): Promise<Setup> {
  const fixture = await producerPair(t);
  return { ...fixture, plain: fixture.master, other: createProducer(fixture.pair.master.client()) };
}

/** The logged commands, each as its words joined by spaces (read before a worker trims the log). */
async function loggedCommands(master: Redis): Promise<string[]> {
  const entries = (await master.lrangeBuffer(LOG, 0, -1)).map(decodeEntry);
  return entries.flatMap((e) => e.commands.map((c) => c.map(String).join(' ')));
}

/** Whether a promise settled yet. */
function settled(promise: Promise<unknown>): () => boolean {
  let done = false;
  promise.then(
    () => (done = true),
    () => (done = true),
  );
  return () => done;
}

type Keys = { a: string; b: string; dst: string };

/** A blocking command: what one call pops, put there by `fill`. */
interface Case {
  fill(c: Redis, k: Keys): Promise<unknown>;
  pop(p: Redis, k: Keys, timeout: number): Promise<unknown>;
  reply(k: Keys): unknown;
  /** the pop as logged */
  logged(k: Keys): string;
  /** the keys with what was moved there, once every pop is done */
  left?: (c: Redis, k: Keys) => Promise<unknown>;
}

const CASES: Record<string, Case> = {
  blpop: {
    fill: (c, k) => c.rpush(k.b, 'x'),
    pop: (p, k, s) => p.blpop(k.a, k.b, s),
    reply: (k) => [k.b, 'x'],
    logged: (k) => `lpop ${k.b} 1`,
  },
  brpop: {
    fill: (c, k) => c.rpush(k.b, 'x'),
    pop: (p, k, s) => p.brpop(k.a, k.b, s),
    reply: (k) => [k.b, 'x'],
    logged: (k) => `rpop ${k.b} 1`,
  },
  blmove: {
    fill: (c, k) => c.rpush(k.a, 'x'),
    pop: (p, k, s) => p.blmove(k.a, k.dst, 'LEFT', 'RIGHT', s),
    reply: () => 'x',
    logged: (k) => `lmove ${k.a} ${k.dst} LEFT RIGHT`,
    left: (c, k) => c.lrange(k.dst, 0, -1),
  },
  brpoplpush: {
    fill: (c, k) => c.rpush(k.a, 'x'),
    pop: (p, k, s) => p.brpoplpush(k.a, k.dst, s),
    reply: () => 'x',
    logged: (k) => `rpoplpush ${k.a} ${k.dst}`,
    left: (c, k) => c.lrange(k.dst, 0, -1),
  },
  blmpop: {
    fill: (c, k) => c.rpush(k.b, 'x', 'y'),
    pop: (p, k, s) => p.blmpop(s, 2, k.a, k.b, 'LEFT', 'COUNT', 5),
    reply: (k) => [k.b, ['x', 'y']],
    logged: (k) => `lpop ${k.b} 2`,
  },
  bzpopmin: {
    fill: (c, k) => c.zadd(k.b, 1, 'x'),
    pop: (p, k, s) => p.bzpopmin(k.a, k.b, s),
    reply: (k) => [k.b, 'x', '1'],
    logged: (k) => `zrem ${k.b} x`,
  },
  bzpopmax: {
    fill: (c, k) => c.zadd(k.b, 2, 'x'),
    pop: (p, k, s) => p.bzpopmax(k.a, k.b, s),
    reply: (k) => [k.b, 'x', '2'],
    logged: (k) => `zrem ${k.b} x`,
  },
  bzmpop: {
    fill: (c, k) => c.zadd(k.b, 1, 'x', 2, 'y'),
    pop: (p, k, s) => p.bzmpop(s, 2, k.a, k.b, 'MAX', 'COUNT', 5),
    reply: (k) => [
      k.b,
      [
        ['y', '2'],
        ['x', '1'],
      ],
    ],
    logged: (k) => `zrem ${k.b} y x`,
  },
};

for (const [name, c] of Object.entries(CASES)) {
  const NAME = name.toUpperCase();
  test(`${NAME} pops what is there, waits for a push by any client, times out with null, and waits for ever with 0`, async (t) => {
    const { plain, producer, other, replicate } = await setup(t);
    const k = { a: `${name}:a`, b: `${name}:b`, dst: `${name}:dst` };

    await c.fill(other, k);
    t.deepEqual(await c.pop(producer, k, 1), c.reply(k), 'popped at once');

    const waiting = c.pop(producer, k, 10);
    await sleep(300);
    const pushedAt = Date.now();
    await c.fill(plain, k);
    t.deepEqual(await waiting, c.reply(k), 'woken by a client that is not a producer');
    t.true(Date.now() >= pushedAt);

    const start = Date.now();
    t.is(await c.pop(producer, k, 0.4), null, 'timed out');
    const took = Date.now() - start;
    t.true(took >= 400, `returned after ${took} ms, before its timeout`);
    t.true(took < 5400, `returned after ${took} ms`);

    const forever = c.pop(producer, k, 0);
    const done = settled(forever);
    await sleep(700);
    t.false(done(), 'a timeout of 0 waits');
    await c.fill(other, k);
    t.deepEqual(await forever, c.reply(k), 'woken at last');

    // Three pops logged, nothing for the tries that found nothing, and nothing popped twice.
    const pops = (await loggedCommands(plain)).filter((cmd) => !/^(rpush|zadd) /.test(cmd));
    t.deepEqual(pops, [c.logged(k), c.logged(k), c.logged(k)]);
    t.is(await plain.exists(k.a, k.b), 0);
    if (c.left) t.deepEqual(await c.left(plain, k), ['x', 'x', 'x']);
    await replicate();
  });
}

test('LMPOP and ZMPOP pop from the first key that has something, and answer null at once when none has', async (t) => {
  const { plain, producer, replicate } = await setup(t);
  await producer.rpush('l:b', '1', '2', '3');
  await producer.zadd('z:b', 1, 'a', 2, 'b', 3, 'c');
  t.deepEqual(await producer.lmpop(2, 'l:a', 'l:b', 'RIGHT', 'COUNT', 2), ['l:b', ['3', '2']]);
  t.deepEqual(await producer.zmpop(2, 'z:a', 'z:b', 'MIN'), ['z:b', [['a', '1']]]);
  t.is(await producer.lmpop(1, 'l:a', 'LEFT'), null);
  t.is(await producer.zmpop(1, 'z:a', 'MAX'), null);
  t.deepEqual((await loggedCommands(plain)).slice(2), ['rpop l:b 2', 'zrem z:b a']);
  await replicate();
});

test('the logged pop carries the expiry of the key it popped from, so the replica keeps it', async (t) => {
  const { plain, producer, replicate } = await setup(t);
  await producer.rpush('ttl:b', '1', '2');
  await producer.pexpire('ttl:b', 100_000);
  await producer.zadd('ttl:z', 1, 'a', 2, 'b');
  await producer.expire('ttl:z', 100);
  t.deepEqual(await producer.blpop('ttl:a', 'ttl:b', 1), ['ttl:b', '1']);
  t.deepEqual(await producer.bzmpop(1, 2, 'ttl:a', 'ttl:z', 'MIN'), ['ttl:z', [['a', '1']]]);
  const entries = (await plain.lrangeBuffer(LOG, -2, -1)).map(decodeEntry);
  t.deepEqual(
    entries.map((e) => e.views),
    [[[2, await plain.pexpiretime('ttl:b')]], [[2, await plain.pexpiretime('ttl:z')]]],
  );
  await replicate();
});

test('waiters racing for one element: exactly one gets it, the others time out, and it is popped once', async (t) => {
  const { pair, plain, other, replicate } = await setup(t);
  const waiters = [createProducer(pair.master.client()), createProducer(pair.master.client()), createProducer(pair.master.client())];
  const pops = waiters.map((p) => p.blpop('race', 1.5));
  await sleep(300);
  await other.rpush('race', 'only');
  const replies = await Promise.all(pops);
  t.deepEqual(
    replies.filter((r) => r !== null),
    [['race', 'only']],
  );
  // Two elements for three waiters on the same connection.
  const shared = createProducer(pair.master.client());
  const more = [shared.bzpopmin('race:z', 1.5), shared.bzpopmin('race:z', 1.5), shared.bzpopmin('race:z', 1.5)];
  await sleep(300);
  await other.zadd('race:z', 1, 'a', 2, 'b');
  const got = (await Promise.all(more)).filter((r) => r !== null) as string[][];
  t.deepEqual(got.map((r) => r[1]).sort(), ['a', 'b']);
  t.deepEqual((await loggedCommands(plain)).filter((c) => /^(lpop|zrem)/.test(c)).sort(), ['lpop race 1', 'zrem race:z a', 'zrem race:z b']);
  await replicate();
});

test('a BullMQ-style worker loop (BZPOPMIN on a marker with timeouts, then the jobs) takes every job exactly once', async (t) => {
  const { pair, plain, producer, other, replicate } = await setup(t);
  const jobs = Array.from({ length: 30 }, (_, i) => `job-${i}`);
  const taken: string[] = [];
  let timeouts = 0;
  const worker = (async () => {
    while (taken.length < jobs.length) {
      const marker = await producer.bzpopmin('q:marker', 0.2);
      if (!marker) timeouts++;
      for (;;) {
        const job = await producer.lmove('q:wait', 'q:active', 'RIGHT', 'LEFT');
        if (!job) break;
        taken.push(job);
        await producer.multi().lrem('q:active', 1, job).incr('q:done').exec();
      }
    }
  })();
  for (const [i, job] of jobs.entries()) {
    await other.multi().lpush('q:wait', job).zadd('q:marker', 0, '0').exec();
    // Bursts, and pauses longer than the worker's timeout.
    if (i % 10 === 9) await sleep(1000);
    else await sleep(Math.floor(Math.random() * 40));
  }
  await worker;
  t.deepEqual([...taken].sort(), [...jobs].sort());
  t.is(await plain.get('q:done'), String(jobs.length));
  t.true(timeouts > 0, 'the worker timed out between bursts');
  await replicate();
  t.is(await pair.replica.client().get('q:done'), String(jobs.length));
});

test('a wait holds up neither the client nor other commands, and writes by a plain client wake it through tracking', async (t) => {
  const { plain, producer } = await setup(t);
  const waiting = producer.blpop('idle', 0);
  t.is(await producer.set('meanwhile', '1'), 'OK');
  t.is(await producer.get('meanwhile'), '1');
  // The wake-ups: a connection tracking the key in broadcast mode, redirected to a subscriber.
  const tracking = await eventually(
    async () => ((await plain.client('LIST')) as string).split('\n').find((l) => / flags=\S*B/.test(l)),
    5000,
    'tracking',
  );
  t.regex(tracking, / redir=\d+/);
  const pushedAt = Date.now();
  await plain.rpush('idle', 'x');
  t.deepEqual(await waiting, ['idle', 'x']);
  t.log(`woken ${Date.now() - pushedAt} ms after the push`);
});

test('Buffer variants, callbacks and multi() work as for other writes; in multi() a blocking pop does not wait', async (t) => {
  const { plain, producer, replicate } = await setup(t);
  await producer.rpush('buf', 'x');
  t.deepEqual(await producer.blpopBuffer('buf', 1), [Buffer.from('buf'), Buffer.from('x')]);
  const viaCallback = await new Promise((resolve, reject) => {
    producer.brpop('buf', 0.1, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
  t.is(viaCallback, null);
  t.deepEqual(await producer.multi().blpop('m', 0).rpush('m', 'a').blpop('m', 0).exec(), [
    [null, null],
    [null, 1],
    [null, ['m', 'a']],
  ]);
  t.deepEqual(await producer.pipeline().rpush('pl', 'a').brpoplpush('pl', 'pl:dst', 0).brpoplpush('pl', 'pl:dst', 0.2).exec(), [
    [null, 1],
    [null, 'a'],
    [null, null],
  ]);
  t.deepEqual((await loggedCommands(plain)).slice(-4), ['rpush m a', 'lpop m 1', 'rpush pl a', 'rpoplpush pl pl:dst']);
  await replicate();
});

test('in pipeline() a blocking pop waits, and the commands queued after it run once it popped', async (t) => {
  const { plain, producer, replicate } = await setup(t);
  const calledBack: unknown[] = [];
  const piped = producer
    .pipeline()
    .set('before', '1')
    .blmove('src', 'dst', 'LEFT', 'RIGHT', 0, (err, reply) => calledBack.push(err ?? reply))
    .lrange('dst', 0, -1)
    .incr('after')
    .exec();
  await eventually(() => plain.get('before'), 10_000, 'the part before the blocking pop');
  await sleep(300);
  t.is(await plain.get('after'), null, 'the part after it waits');
  await producer.rpush('src', 'x');
  t.deepEqual(await piped, [
    [null, 'OK'],
    [null, 'x'],
    [null, ['x']],
    [null, 1],
  ]);
  t.deepEqual(calledBack, ['x']);
  t.deepEqual((await loggedCommands(plain)).slice(-4), ['set before 1', 'rpush src x', 'lmove src dst LEFT RIGHT', 'incr after']);
  await replicate();
});

test('a bad timeout or key count is refused by Redis with its own error, and nothing is logged', async (t) => {
  const { plain, producer } = await setup(t);
  await producer.rpush('k', 'x');
  const before = await plain.llen(LOG);
  await t.throwsAsync(producer.blpop('k', -1), { instanceOf: ReplyError, message: 'ERR timeout is negative' });
  await t.throwsAsync(producer.bzpopmin('k', 'soon'), { instanceOf: ReplyError, message: 'ERR timeout is not a float or out of range' });
  await t.throwsAsync(producer.blmove('k', 'd', 'LEFT', 'LEFT', 'x'), { message: /timeout is not a float/ });
  await t.throwsAsync(producer.blmpop(-1, 1, 'k', 'LEFT'), { message: /timeout is negative/ });
  await t.throwsAsync(producer.call('lmpop', 0, 'k', 'LEFT'), { message: /numkeys/ });
  await t.throwsAsync(producer.bzpopmin('k', 0), { message: /WRONGTYPE/ });
  t.is(await plain.llen(LOG), before);
  t.deepEqual(await plain.lrange('k', 0, -1), ['x']);
});

test('disconnect() and quit() end a pending wait as ioredis ends a command on a closed connection, leaving no connection behind', async (t) => {
  const { plain, producer } = await setup(t);
  const clients = async () => ((await plain.client('LIST')) as string).trim().split('\n').length;
  const alone = await clients();
  const waiting = producer.blpop('never', 0);
  await eventually(async () => (await clients()) > alone + 1, 5000, 'the wait connections');
  producer.disconnect();
  await t.throwsAsync(waiting, { message: 'Connection is closed.' });
  await eventually(async () => (await clients()) === alone - 1, 5000, 'connections closed');

  const quitter = createProducer(plain.duplicate());
  const pending = quitter.bzpopmin('never', 0);
  await sleep(200);
  await quitter.quit();
  await t.throwsAsync(pending, { message: 'Connection is closed.' });
  await eventually(async () => (await clients()) === alone - 1, 5000, 'connections closed after quit()');
});

test('a process whose client was disconnected during a wait exits on its own', async (t) => {
  const { pair } = await setup(t);
  const code = `
    import { Redis } from 'ioredis';
    import { createProducer } from './producer/index.js';
    const p = createProducer(new Redis(${pair.master.port}, '${pair.master.host}'));
    const wait = p.blpop('never', 0).catch((e) => console.log(e.message));
    setTimeout(() => p.disconnect(), 300);
    await wait;
  `;
  const child = spawn(process.execPath, ['--import=tsx', '--input-type=module', '-e', code], { cwd: process.cwd() });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const status = await exited;
  clearTimeout(timer);
  t.is(status, 0, out);
  t.regex(out, /Connection is closed\./);
});

test("under the producer's ACL rules a wait is woken through tracking; where the ACL refuses tracking it still pops, by trying again", async (t) => {
  const { pair, plain } = await setup(t);
  await plain.call('ACL', 'SETUSER', 'app', 'on', '>app-secret', '~app:*', ...aclRules('producer'));
  await plain.call('ACL', 'SETUSER', 'untracked', 'on', '>u-secret', '~app:*', ...aclRules('producer'), '-client|tracking');
  const tracked = () => plain.client('LIST').then((list) => / flags=\S*B/.test(list as string));
  for (const [user, password, tracking] of [
    ['app', 'app-secret', true],
    ['untracked', 'u-secret', false],
  ] as const) {
    const producer = createProducer(pair.master.client(0, { username: user, password }));
    const waiting = producer.bzpopmin('app:marker', 10);
    // Tracking starts with the wait (two connections, CLIENT TRACKING): give it time on a loaded machine.
    if (tracking) await eventually(() => tracked(), 10_000, `tracking for ${user}`);
    else await sleep(400);
    t.is(await tracked(), tracking, `tracking for ${user}`);
    await plain.zadd('app:marker', 0, user);
    t.deepEqual(await waiting, ['app:marker', user, '0']);
    producer.disconnect();
    await eventually(async () => !(await tracked()), 5000, 'tracking closed');
  }
});

test('a write by any client to a key waited on, or a flush, wakes the wait without its retry timer', async (t) => {
  const { pair, plain } = await setup(t);
  const wakeups = new KeyWakeups(pair.master.client());
  const wait = wakeups.watch(['wake:a', Buffer.from([0xff, 0x00])]);
  t.teardown(() => wait.close());
  await wait.ready;
  // A timer far past the test's own timeout: only a wake-up resolves next().
  const hour = 3_600_000;
  await plain.rpush('wake:a', 'x');
  await wait.next(hour);
  await plain.set(Buffer.from([0xff, 0x00]), 'x');
  await wait.next(hour);
  await plain.flushall();
  await wait.next(hour);
  t.pass();
});
