/**
 * Streams and their consumer groups through the producer: each command is
 * logged in the deterministic form Redis 7.0 propagates (the ID an XADD got,
 * exact trims, `$` resolved, reads and claims as their effect on the group
 * with absolute delivery times), and the replica ends with the master's
 * streams and groups, as verify compares them.
 */
import test, { type ExecutionContext } from 'ava';
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { decodeEntry, VIEW_ANY } from '../shared/entry.js';
import { compareKeys } from '../consumer/verify/compare.js';
import { streamDifference } from '../consumer/verify/streams.js';
import { runResync } from '../consumer/copy/resync.js';
import { runRepair } from '../consumer/copy/repair.js';
import { setLimits } from '../consumer/queue/limits.js';
import { aclRules } from '../shared/acl.js';
import { QueueKeys } from '../shared/keys.js';
import { startPair, startWorker, waitForDrain, datasetDiff, type Pair } from './support/fixtures.js';
import { eventually } from './support/wait.js';

const keys = new QueueKeys('qsync', 'default');

interface Setup {
  pair: Pair;
  master: Redis;
  replica: Redis;
  producer: Redis;
}

/** A pair and a producer; the worker starts at the first assertReplicated, so that the log holds every entry until then. */
async function setup(t: ExecutionContext): Promise<Setup> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const master = pair.master.client();
  return { pair, master, replica: pair.replica.client(), producer: createProducer(pair.master.client()) };
}

/** What the writes of `run` logged, each entry's commands as text lines. */
async function logOf(master: Redis, run: () => Promise<unknown>): Promise<string[][]> {
  const from = await master.llen(keys.log);
  await run();
  return (await master.lrangeBuffer(keys.log, from, -1)).map((raw) => decodeEntry(raw).commands.map((c) => c.map(String).join(' ')));
}

/** The views of the commands logged by `run`, per entry. */
async function viewsOf(master: Redis, run: () => Promise<unknown>): Promise<number[][][]> {
  const from = await master.llen(keys.log);
  await run();
  return (await master.lrangeBuffer(keys.log, from, -1)).map((raw) => decodeEntry(raw).views ?? []);
}

/** Drained, and every key equal on both sides: streams compared as verify compares them. */
async function assertReplicated(t: ExecutionContext, s: Setup, streams: string[]): Promise<void> {
  const worker = startWorker(s.pair);
  t.teardown(() => worker.close());
  await waitForDrain(s.master, s.replica);
  for (const key of streams) t.is(await streamDifference(s.master, s.replica, Buffer.from(key)), undefined, `stream ${key}`);
  t.deepEqual(await datasetDiff(s.pair.master, s.pair.replica), []);
}

/** The absolute delivery time of a pending entry, as XINFO STREAM FULL gives it. */
async function deliveryTime(client: Redis, key: string, group: string, id: string): Promise<number | undefined> {
  const full = (await client.call('XINFO', 'STREAM', key, 'FULL', 'COUNT', 0)) as unknown[];
  const groups = full[full.indexOf('groups') + 1] as unknown[][];
  for (const g of groups) {
    if (g[g.indexOf('name') + 1] !== group) continue;
    const pel = g[g.indexOf('pending') + 1] as [string, string, number, number][];
    return pel.find((p) => p[0] === id)?.[2];
  }
  return undefined;
}

test('XADD is logged with the ID it got, a trim as the exact length it left, and NOMKSTREAM that added nothing not at all', async (t) => {
  const s = await setup(t);
  const { producer: p, master } = s;
  let id = '';
  t.deepEqual(
    await logOf(master, async () => {
      id = (await p.xadd('xadd:s', '*', 'f', 'v')) as string;
    }),
    [[`xadd xadd:s ${id} f v`]],
  );
  t.deepEqual(
    await logOf(master, () => p.xadd('xadd:s', '5-1', 'a', '1', 'b', '2').catch(() => undefined)),
    [],
    'an ID below the top fails and logs nothing',
  );
  t.deepEqual(
    await logOf(master, () => p.xadd('xadd:s', '99999999999999-*', 'f', 'v')),
    [['xadd xadd:s 99999999999999-0 f v']],
    'a partial ID logged as the whole one',
  );
  t.deepEqual(await logOf(master, () => p.xadd('xadd:none', 'NOMKSTREAM', '*', 'f', 'v')), []);
  t.is(await master.exists('xadd:none'), 0);
  // ~ keeps whole nodes: what stays is the master's choice, logged as a length.
  for (let i = 0; i < 300; i++) await p.xadd('xadd:capped', 'MAXLEN', '~', '100', '*', 'n', String(i));
  const lens = await logOf(master, () => p.xadd('xadd:capped', 'MAXLEN', '~', '10', '*', 'n', 'last'));
  const length = await master.xlen('xadd:capped');
  t.true(length > 10, 'an approximate trim left more than asked');
  t.regex(lens[0][0], new RegExp(`^xadd xadd:capped MAXLEN = ${length} \\d+-\\d+ n last$`));
  t.regex(
    (await logOf(master, () => p.xadd('xadd:capped', 'NOMKSTREAM', 'MINID', '~', '0-1', 'LIMIT', '10', '*', 'n', 'x')))[0][0],
    /^xadd xadd:capped MAXLEN = \d+ \d+-\d+ n x$/,
  );
  await p.xadd('xadd:capped', 'MAXLEN', '=', '50', '*', 'n', 'exact');
  t.is(await master.xlen('xadd:capped'), 50);
  await p.xadd('xadd:minid', 'MINID', '5', '3-1', 'f', 'v');
  await p.xadd('xadd:minid', 'MINID', '5', '7-1', 'f', 'v');
  t.is(await master.xlen('xadd:minid'), 1);
  await assertReplicated(t, s, ['xadd:s', 'xadd:capped', 'xadd:minid']);
});

test('XTRIM exact and approximate, XDEL and XSETID replay to the same stream, length, IDs and counters', async (t) => {
  const s = await setup(t);
  const { producer: p, master } = s;
  for (let i = 1; i <= 500; i++) await p.xadd('trim:s', `${i}-1`, 'n', String(i));
  const approx = await logOf(master, () => p.xtrim('trim:s', 'MAXLEN', '~', 150));
  t.deepEqual(approx, [[`xtrim trim:s MAXLEN = ${await master.xlen('trim:s')}`]]);
  t.deepEqual(await logOf(master, () => p.xtrim('trim:s', 'MINID', '~', '1-1', 'LIMIT', 100)), [], 'a trim that removed nothing logs nothing');
  const exact = await logOf(master, () => p.xtrim('trim:s', 'MINID', '=', '450'));
  t.deepEqual(exact, [['xtrim trim:s MAXLEN = 51']]);
  t.deepEqual(await logOf(master, () => p.xtrim('trim:missing', 'MAXLEN', 0)), []);
  t.deepEqual(await logOf(master, () => p.xdel('trim:s', '460-1', '461-1', '1-1')), [['xdel trim:s 460-1 461-1 1-1']]);
  t.deepEqual(await logOf(master, () => p.xdel('trim:s', '1-1')), [], 'deleting nothing logs nothing');
  t.deepEqual(await logOf(master, () => p.xsetid('trim:s', '900-5', 'ENTRIESADDED', 1000, 'MAXDELETEDID', '800-0')), [
    ['xsetid trim:s 900-5 ENTRIESADDED 1000 MAXDELETEDID 800-0'],
  ]);
  await p.xadd('trim:empty', '1-1', 'f', 'v');
  await p.xdel('trim:empty', '1-1');
  await p.xsetid('trim:empty', '5-0');
  await assertReplicated(t, s, ['trim:s', 'trim:empty']);
});

test('XGROUP subcommands: CREATE and SETID with $ resolved, MKSTREAM, ENTRIESREAD; DESTROY, CREATECONSUMER, DELCONSUMER when they changed something', async (t) => {
  const s = await setup(t);
  const { producer: p, master } = s;
  await p.xadd('group:s', '10-1', 'f', 'v');
  await p.xadd('group:s', '20-1', 'f', 'v');
  t.deepEqual(await logOf(master, () => p.xgroup('CREATE', 'group:s', 'g1', '$')), [['xgroup CREATE group:s g1 20-1 ENTRIESREAD -1']]);
  t.deepEqual(await logOf(master, () => p.xgroup('CREATE', 'group:s', 'g2', '0', 'ENTRIESREAD', 0)), [
    ['xgroup CREATE group:s g2 0-0 ENTRIESREAD 0'],
  ]);
  t.deepEqual(await logOf(master, () => p.xgroup('CREATE', 'group:new', 'g', '$', 'MKSTREAM')), [
    ['xgroup CREATE group:new g 0-0 MKSTREAM ENTRIESREAD -1'],
  ]);
  await t.throwsAsync(p.xgroup('CREATE', 'group:s', 'g1', '$'), { message: /BUSYGROUP/ });
  await t.throwsAsync(p.xgroup('CREATE', 'group:missing', 'g', '$'), { message: /requires the key to exist/ });
  await p.xadd('group:s', '30-1', 'f', 'v');
  t.deepEqual(await logOf(master, () => p.xgroup('SETID', 'group:s', 'g2', '$')), [['xgroup SETID group:s g2 30-1 ENTRIESREAD -1']]);
  t.deepEqual(await logOf(master, () => p.xgroup('SETID', 'group:s', 'g2', '10-1', 'ENTRIESREAD', 1)), [
    ['xgroup SETID group:s g2 10-1 ENTRIESREAD 1'],
  ]);
  t.deepEqual(await logOf(master, () => p.xgroup('CREATECONSUMER', 'group:s', 'g1', 'alice')), [['xgroup CREATECONSUMER group:s g1 alice']]);
  t.deepEqual(await logOf(master, () => p.xgroup('CREATECONSUMER', 'group:s', 'g1', 'alice')), []);
  await p.xgroup('CREATECONSUMER', 'group:s', 'g1', 'bob');
  t.deepEqual(await logOf(master, () => p.xgroup('DELCONSUMER', 'group:s', 'g1', 'bob')), [['xgroup DELCONSUMER group:s g1 bob']]);
  t.deepEqual(await logOf(master, () => p.xgroup('DELCONSUMER', 'group:s', 'g1', 'nobody')), [], 'a consumer that did not exist');
  await p.xgroup('CREATE', 'group:s', 'gone', '0');
  t.deepEqual(await logOf(master, () => p.xgroup('DESTROY', 'group:s', 'gone')), [['xgroup DESTROY group:s gone']]);
  t.deepEqual(await logOf(master, () => p.xgroup('DESTROY', 'group:s', 'gone')), []);
  t.deepEqual(
    await viewsOf(master, () => p.xgroup('CREATECONSUMER', 'group:s', 'g2', 'carol')),
    [[[3, -1]]],
    'the view names the key, the third argument of XGROUP',
  );
  await assertReplicated(t, s, ['group:s', 'group:new']);
});

test('XREADGROUP is logged as its effect on the group: consumers created, pending entries with absolute delivery times, the group moved', async (t) => {
  const s = await setup(t);
  const { producer: p, master, replica } = s;
  for (let i = 1; i <= 5; i++) await p.xadd('read:a', `${i}-1`, 'n', String(i));
  await p.xadd('read:b', '1-1', 'n', 'b1');
  await p.xgroup('CREATE', 'read:a', 'g', '0');
  await p.xgroup('CREATE', 'read:b', 'g', '0');
  const log = await logOf(master, () => p.xreadgroup('GROUP', 'g', 'alice', 'COUNT', 2, 'STREAMS', 'read:a', 'read:b', '>', '>'));
  t.is(log.length, 1, 'one entry');
  const [cmds] = log;
  t.is(cmds[0], 'xgroup CREATECONSUMER read:a g alice');
  t.regex(cmds[1], /^xclaim read:a g alice 0 1-1 TIME \d{13} RETRYCOUNT 1 FORCE JUSTID$/);
  t.regex(cmds[2], /^xclaim read:a g alice 0 2-1 TIME \d{13} RETRYCOUNT 1 FORCE JUSTID$/);
  t.is(cmds[3], 'xgroup SETID read:a g 2-1 ENTRIESREAD 2');
  t.is(cmds[4], 'xgroup CREATECONSUMER read:b g alice');
  t.regex(cmds[5], /^xclaim read:b g alice 0 1-1 TIME \d{13} RETRYCOUNT 1 FORCE JUSTID$/);
  t.is(cmds[6], 'xgroup SETID read:b g 1-1 ENTRIESREAD 1');
  t.is(await deliveryTime(master, 'read:a', 'g', '1-1'), Number(cmds[1].split(' ')[7]), 'the master delivery time, exactly');
  await p.xadd('read:b', '2-1', 'n', 'b2');
  t.deepEqual(
    await viewsOf(master, () => p.xreadgroup('GROUP', 'g', 'bob', 'COUNT', 1, 'STREAMS', 'read:b', 'read:a', '>', '>')),
    [
      [
        [3, -1],
        [2, VIEW_ANY],
        [3, VIEW_ANY],
        [3, -1],
        [2, VIEW_ANY],
        [3, VIEW_ANY],
      ],
    ],
    'each stream has its own view, on the key of each logged command',
  );
  t.deepEqual(await logOf(master, () => p.xreadgroup('GROUP', 'g', 'carol', 'STREAMS', 'read:b', '>')), [], 'nothing new: nothing changed');
  // NOACK moves the group without pending entries.
  t.deepEqual(await logOf(master, () => p.xreadgroup('GROUP', 'g', 'dave', 'COUNT', 1, 'NOACK', 'STREAMS', 'read:a', '>')), [
    ['xgroup CREATECONSUMER read:a g dave', 'xgroup SETID read:a g 4-1 ENTRIESREAD 4'],
  ]);
  // History: alice's own pending entries delivered again, count and time updated.
  await new Promise((r) => setTimeout(r, 5));
  const history = await logOf(master, () => p.xreadgroup('GROUP', 'g', 'alice', 'STREAMS', 'read:a', '0'));
  t.is(history[0].length, 2);
  t.regex(history[0][0], /^xclaim read:a g alice 0 1-1 TIME \d{13} RETRYCOUNT 2 FORCE JUSTID$/);
  // A pending entry whose stream entry is gone comes back without fields and is not delivered again.
  await p.xdel('read:a', '2-1');
  const gone = await logOf(master, () => p.xreadgroup('GROUP', 'g', 'alice', 'STREAMS', 'read:a', '0'));
  t.is(gone[0].length, 1);
  t.regex(gone[0][0], /^xclaim read:a g alice 0 1-1 TIME \d{13} RETRYCOUNT 3 FORCE JUSTID$/);
  await assertReplicated(t, s, ['read:a', 'read:b']);
  t.is(await deliveryTime(replica, 'read:a', 'g', '1-1'), await deliveryTime(master, 'read:a', 'g', '1-1'));
});

test('XREADGROUP with BLOCK waits through the producer until an entry comes or the time passes; reads of streams stay reads', async (t) => {
  const s = await setup(t);
  const { producer: p, master } = s;
  await p.xgroup('CREATE', 'block:s', 'g', '$', 'MKSTREAM');
  const before = await master.llen(keys.log);
  // Nothing comes: null once the time has passed, nothing logged.
  let started = Date.now();
  t.is((await p.xreadgroup('GROUP', 'g', 'c', 'BLOCK', 300, 'STREAMS', 'block:s', '>')) as unknown, null);
  t.true(Date.now() - started >= 300, 'it waited its whole timeout');
  t.is(await master.llen(keys.log), before, 'a read that found nothing logged nothing');
  // An entry added by another client wakes it (BLOCK 0: for ever).
  const other = createProducer(s.pair.master.client());
  started = Date.now();
  const waiting = p.xreadgroup('GROUP', 'g', 'c', 'COUNT', 5, 'BLOCK', 0, 'STREAMS', 'block:s', '>');
  setTimeout(() => void other.xadd('block:s', '1-1', 'f', 'v'), 200);
  t.deepEqual(await waiting, [['block:s', [['1-1', ['f', 'v']]]]]);
  t.true(Date.now() - started >= 150, 'it waited for the entry');
  const log = await logOf(master, () => p.xreadgroup('GROUP', 'g', 'c', 'BLOCK', 10, 'STREAMS', 'block:s', '0'));
  t.regex(log[0][0], /^xclaim block:s g c 0 1-1 TIME \d{13} RETRYCOUNT 2 FORCE JUSTID$/, 'a history read does not wait');
  await t.throwsAsync(p.xreadgroup('GROUP', 'g', 'c', 'BLOCK', -1, 'STREAMS', 'block:s', '>'), { message: /timeout is negative/ });
  await t.throwsAsync(p.xreadgroup('GROUP', 'g', 'c', 'BLOCK', 'soon', 'STREAMS', 'block:s', '>'), { message: /timeout is not an integer/ });
  // Inside multi() it does not wait, as inside a MULTI.
  started = Date.now();
  t.deepEqual(await p.multi().xreadgroup('GROUP', 'g', 'c', 'BLOCK', 5000, 'STREAMS', 'block:s', '>').exec(), [[null, null]]);
  t.true(Date.now() - started < 4000);
  // A group named BLOCK is not the option.
  await p.xgroup('CREATE', 'block:s', 'BLOCK', '0');
  t.truthy(await p.xreadgroup('GROUP', 'BLOCK', 'c', 'STREAMS', 'block:s', '>'));
  t.deepEqual(await p.xread('STREAMS', 'block:s', '0'), [['block:s', [['1-1', ['f', 'v']]]]]);
  t.deepEqual(await p.xread('BLOCK', 10, 'STREAMS', 'block:s', '$'), null, 'XREAD BLOCK waits, on the connection');
  t.is(await p.xlen('block:s'), 1);
  t.is((await p.xrange('block:s', '-', '+')).length, 1);
  t.is((await p.xrevrange('block:s', '+', '-')).length, 1);
  t.true(((await p.xinfo('STREAM', 'block:s')) as unknown[]).length > 0);
  t.is(((await p.xpending('block:s', 'BLOCK')) as unknown[])[0], 1);
  await assertReplicated(t, s, ['block:s']);
});

test('XACK, XCLAIM with every option and XAUTOCLAIM are logged with absolute times, and dropped entries as XACK', async (t) => {
  const s = await setup(t);
  const { producer: p, master } = s;
  for (let i = 1; i <= 8; i++) await p.xadd('claim:s', `${i}-1`, 'n', String(i));
  await p.xgroup('CREATE', 'claim:s', 'g', '0');
  await p.xreadgroup('GROUP', 'g', 'alice', 'STREAMS', 'claim:s', '>');
  t.deepEqual(await logOf(master, () => p.xack('claim:s', 'g', '1-1', '99-1')), [['xack claim:s g 1-1 99-1']]);
  t.deepEqual(await logOf(master, () => p.xack('claim:s', 'g', '1-1')), []);
  const at = Date.now() - 60_000;
  const time = await logOf(master, () => p.xclaim('claim:s', 'g', 'bob', 0, '2-1', 'TIME', at, 'RETRYCOUNT', 7));
  t.deepEqual(time, [['xgroup CREATECONSUMER claim:s g bob', `xclaim claim:s g bob 0 2-1 TIME ${at} RETRYCOUNT 7 FORCE JUSTID`]]);
  const idle = await logOf(master, () => p.xclaim('claim:s', 'g', 'bob', 0, '3-1', 'IDLE', 30_000, 'JUSTID'));
  const idleAt = Number(idle[0][0].split(' ')[7]);
  t.true(Math.abs(idleAt - (Date.now() - 30_000)) < 5_000, 'IDLE as an absolute time');
  t.is(await deliveryTime(master, 'claim:s', 'g', '3-1'), idleAt);
  t.regex(idle[0][0], /RETRYCOUNT 1 FORCE JUSTID$/, 'JUSTID keeps the count');
  t.deepEqual(await logOf(master, () => p.xclaim('claim:s', 'g', 'carol', 3_600_000, '4-1')), [], 'not idle long enough: nothing claimed');
  const forced = await logOf(master, () => p.xclaim('claim:s', 'g', 'bob', 0, '4-1', '5-1', 'FORCE', 'LASTID', '9-1'));
  t.is(forced[0].length, 3);
  t.regex(forced[0][1], /^xclaim claim:s g bob 0 5-1 TIME \d{13} RETRYCOUNT 2 FORCE JUSTID$/);
  t.is(forced[0][2], 'xgroup SETID claim:s g 9-1 ENTRIESREAD 8');
  await p.xack('claim:s', 'g', '6-1');
  t.regex(
    (await logOf(master, () => p.xclaim('claim:s', 'g', 'bob', 0, '6-1', 'FORCE')))[0][0],
    /^xclaim claim:s g bob 0 6-1 TIME/,
    'FORCE makes the entry pending',
  );
  // Entries deleted while pending: XCLAIM and XAUTOCLAIM drop them from the pending list.
  await p.xdel('claim:s', '7-1', '8-1');
  t.deepEqual(await logOf(master, () => p.xclaim('claim:s', 'g', 'bob', 0, '7-1')), [['xack claim:s g 7-1']]);
  const auto = await logOf(master, () => p.xautoclaim('claim:s', 'g', 'dave', 0, '0', 'COUNT', 10));
  t.is(auto[0][0], 'xgroup CREATECONSUMER claim:s g dave');
  t.is(auto[0].at(-1), 'xack claim:s g 8-1');
  t.true(auto[0].slice(1, -1).every((c) => /^xclaim claim:s g dave 0 \d+-1 TIME \d{13} RETRYCOUNT \d+ FORCE JUSTID$/.test(c)));
  t.regex(
    (await logOf(master, () => p.xautoclaim('claim:s', 'g', 'erin', 0, '0', 'JUSTID')))[0][1],
    /^xclaim claim:s g erin 0 2-1 TIME \d{13} RETRYCOUNT 8 FORCE JUSTID$/,
  );
  // A bad ID fails the claim alone: the write batched with it is still logged.
  const [set, bad] = await Promise.allSettled([p.set('claim:other', 'v'), p.xclaim('claim:s', 'g', 'bob', 0, '99999999999999999999999-1')]);
  t.is(set.status, 'fulfilled');
  t.is(bad.status, 'rejected');
  await assertReplicated(t, s, ['claim:s']);
  t.is(await s.replica.get('claim:other'), 'v');
});

test('a BullMQ-like load (events capped with MAXLEN ~, a group of workers reading, acking, claiming) leaves equal streams and groups', async (t) => {
  const s = await setup(t);
  const { producer: p, master } = s;
  await p.xgroup('CREATE', 'load:jobs', 'workers', '$', 'MKSTREAM');
  const producers = Array.from({ length: 4 }, (_, w) =>
    (async () => {
      for (let i = 0; i < 150; i++) {
        await p.xadd('load:jobs', '*', 'job', `${w}:${i}`);
        await p.xadd('load:events', 'MAXLEN', '~', 50, '*', 'event', 'added', 'jobId', `${w}:${i}`);
      }
    })(),
  );
  const workers = Array.from({ length: 3 }, (_, w) =>
    (async () => {
      let kept = '';
      for (let round = 0; round < 80; round++) {
        const got = (await p.xreadgroup('GROUP', 'workers', `w${w}`, 'COUNT', 5, 'BLOCK', 20, 'STREAMS', 'load:jobs', '>')) as
          | [string, [string, string[]][]][]
          | null;
        for (const [, entries] of got ?? []) {
          // A job in three is left pending, as if its worker had died.
          entries.forEach(([id], i) => {
            if (i % 3 === 0) kept = id;
          });
          for (const [id] of entries) if (id !== kept) await p.xack('load:jobs', 'workers', id);
        }
        if (round % 10 === 9) await p.xautoclaim('load:jobs', 'workers', `w${w}`, 0, '0', 'COUNT', 3);
        if (round % 15 === 14 && kept) await p.xclaim('load:jobs', 'workers', `w${(w + 1) % 3}`, 0, kept, 'IDLE', 500);
      }
    })(),
  );
  await Promise.all([...producers, ...workers]);
  t.true((await master.xlen('load:events')) < 600, 'the events were trimmed');
  const [pendingCount] = (await master.call('XPENDING', 'load:jobs', 'workers')) as [number];
  t.true(pendingCount > 0, 'some jobs stay pending');
  await assertReplicated(t, s, ['load:jobs', 'load:events']);
});

test('verify reports a stream whose group changed behind the producer, and one whose entries differ', async (t) => {
  const s = await setup(t);
  const { producer: p, master, replica } = s;
  for (let i = 1; i <= 3; i++) await p.xadd('diff:s', `${i}-1`, 'n', String(i));
  await p.xgroup('CREATE', 'diff:s', 'g', '0');
  await p.xreadgroup('GROUP', 'g', 'c', 'STREAMS', 'diff:s', '>');
  await p.xadd('diff:t', '1-1', 'n', '1');
  await assertReplicated(t, s, ['diff:s', 'diff:t']);
  t.deepEqual(await compareKeys(master, replica, [Buffer.from('diff:s'), Buffer.from('diff:t')], 0), []);
  await master.xack('diff:s', 'g', '2-1');
  t.is(await streamDifference(master, replica, Buffer.from('diff:s')), 'group g');
  await replica.xadd('diff:t', '2-1', 'n', '2');
  const diffs = await compareKeys(master, replica, [Buffer.from('diff:s'), Buffer.from('diff:t')], 0);
  t.deepEqual(
    diffs.map((d) => [d.key.toString(), d.kind]),
    [
      ['diff:s', 'value'],
      ['diff:t', 'value'],
    ],
  );
  // Only the pending entry's delivery time differs.
  await master.xclaim('diff:s', 'g', 'c', 0, '3-1', 'TIME', Date.now() - 1000, 'RETRYCOUNT', 1, 'JUSTID');
  await master.xack('diff:s', 'g', '1-1');
  await replica.xack('diff:s', 'g', '1-1', '2-1');
  t.is(await streamDifference(master, replica, Buffer.from('diff:s')), 'delivery times in g');
});

test('a resync copies streams whole, with their groups and pending entries (DUMP and RESTORE)', async (t) => {
  const s = await setup(t);
  const { master, replica, pair } = s;
  // Written around the producer: the resync must bring them over.
  for (let i = 1; i <= 20; i++) await master.xadd('copy:s', `${i}-1`, 'n', String(i));
  await master.xgroup('CREATE', 'copy:s', 'g', '0');
  await master.xreadgroup('GROUP', 'g', 'c', 'COUNT', 7, 'STREAMS', 'copy:s', '>');
  await master.xdel('copy:s', '3-1');
  await s.producer.xadd('copy:s', '21-1', 'n', '21');
  const result = await runResync({
    master: { host: pair.master.host, port: pair.master.port },
    replica: { host: pair.replica.host, port: pair.replica.port },
    leaseMs: 2000,
  });
  t.truthy(result);
  t.is(await streamDifference(master, replica, Buffer.from('copy:s')), undefined, 'the copy has the groups and pending entries');
  t.is(await replica.xlen('copy:s'), 20);
  await s.producer.xreadgroup('GROUP', 'g', 'c', 'STREAMS', 'copy:s', '>');
  await s.producer.xclaim('copy:s', 'g', 'd', 0, '1-1');
  await assertReplicated(t, s, ['copy:s']);
});

test('stream writes inside a script are logged as the same writes sent alone', async (t) => {
  const s = await setup(t);
  const { producer: p, master } = s;
  await p.xgroup('CREATE', 'lua:a', 'g', '$', 'MKSTREAM');
  await p.xgroup('CREATE', 'lua:b', 'g', '$', 'MKSTREAM');
  const log = await logOf(master, () =>
    p.eval(
      `redis.call('XADD', KEYS[1], 'MAXLEN', '~', 100, '*', 'f', 'v')
       redis.call('XADD', KEYS[2], '5-1', 'f', 'v')
       local read = redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'STREAMS', KEYS[1], KEYS[2], '>', '>')
       redis.call('XCLAIM', KEYS[2], 'g', 'd', 0, '5-1', 'IDLE', 1000)
       return #read`,
      2,
      'lua:a',
      'lua:b',
    ),
  );
  t.is(log.length, 1, 'one entry for the call');
  const [cmds] = log;
  t.regex(cmds[0], /^xadd lua:a MAXLEN = 1 \d+-\d+ f v$/);
  t.is(cmds[1], 'xadd lua:b 5-1 f v');
  t.is(cmds[2], 'xgroup CREATECONSUMER lua:a g c');
  t.regex(cmds[3], /^xclaim lua:a g c 0 \d+-\d+ TIME \d{13} RETRYCOUNT 1 FORCE JUSTID$/);
  t.is(cmds[4], 'xgroup SETID lua:a g '.concat(cmds[3].split(' ')[5], ' ENTRIESREAD 1'));
  t.regex(cmds[6], /^xclaim lua:b g c 0 5-1 TIME \d{13} RETRYCOUNT 1 FORCE JUSTID$/);
  t.is(cmds[8], 'xgroup CREATECONSUMER lua:b g d');
  t.regex(cmds[9], /^xclaim lua:b g d 0 5-1 TIME \d{13} RETRYCOUNT 2 FORCE JUSTID$/);
  await assertReplicated(t, s, ['lua:a', 'lua:b']);
});

test('stream writes inside a script that switched to RESP3 are logged as under RESP2', async (t) => {
  const s = await setup(t);
  const { producer: p, master } = s;
  await p.xgroup('CREATE', 'resp3:s', 'g', '$', 'MKSTREAM');
  for (let i = 1; i <= 3; i++) await p.xadd('resp3:s', `${i}-1`, 'f', 'v');
  const log = await logOf(master, () =>
    p.eval(
      `redis.setresp(3)
       redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'STREAMS', KEYS[1], '>')
       redis.call('XDEL', KEYS[1], '3-1')
       redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'STREAMS', KEYS[1], '0')
       redis.call('XCLAIM', KEYS[1], 'g', 'd', 0, '1-1')
       redis.call('XAUTOCLAIM', KEYS[1], 'g', 'e', 0, '0')
       return 1`,
      1,
      'resp3:s',
    ),
  );
  const cmds = log[0].map((c) => c.replace(/TIME \d{13}/, 'TIME t'));
  t.deepEqual(cmds, [
    'xgroup CREATECONSUMER resp3:s g c',
    'xclaim resp3:s g c 0 1-1 TIME t RETRYCOUNT 1 FORCE JUSTID',
    'xclaim resp3:s g c 0 2-1 TIME t RETRYCOUNT 1 FORCE JUSTID',
    'xclaim resp3:s g c 0 3-1 TIME t RETRYCOUNT 1 FORCE JUSTID',
    'xgroup SETID resp3:s g 3-1 ENTRIESREAD 3',
    'xdel resp3:s 3-1',
    'xclaim resp3:s g c 0 1-1 TIME t RETRYCOUNT 2 FORCE JUSTID',
    'xclaim resp3:s g c 0 2-1 TIME t RETRYCOUNT 2 FORCE JUSTID',
    'xgroup CREATECONSUMER resp3:s g d',
    'xclaim resp3:s g d 0 1-1 TIME t RETRYCOUNT 3 FORCE JUSTID',
    'xgroup CREATECONSUMER resp3:s g e',
    'xclaim resp3:s g e 0 1-1 TIME t RETRYCOUNT 4 FORCE JUSTID',
    'xclaim resp3:s g e 0 2-1 TIME t RETRYCOUNT 3 FORCE JUSTID',
    'xack resp3:s g 3-1',
  ]);
  await assertReplicated(t, s, ['resp3:s']);
});

test('a stream the replica lost is copied from the master with its groups (held keys)', async (t) => {
  const s = await setup(t);
  const { producer: p, master, replica, pair } = s;
  await p.xadd('held:s', '1-1', 'n', '1');
  await p.xgroup('CREATE', 'held:s', 'g', '0');
  await p.pexpire('held:s', 60_000);
  const first = startWorker(pair);
  await waitForDrain(master, replica);
  await first.close();
  // Gone from the replica only (as when it expired there first): the next writes cannot apply to it.
  await replica.del('held:s');
  await p.xadd('held:s', '2-1', 'n', '2');
  await p.xreadgroup('GROUP', 'g', 'c', 'STREAMS', 'held:s', '>');
  await p.xclaim('held:s', 'g', 'd', 0, '1-1', 'IDLE', 500);
  const worker = startWorker(pair);
  t.teardown(() => worker.close());
  await waitForDrain(master, replica);
  // The copy follows the batch that found the key missing, once that batch is confirmed.
  await eventually(() => worker.expiryFixes.copied > 0 || undefined, 10_000, 'the stream copied from the master');
  t.is(await streamDifference(master, replica, Buffer.from('held:s')), undefined);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

test('a repair copies the streams written while the queue was full under mark-dirty, with their groups', async (t) => {
  const s = await setup(t);
  const { producer: p, master, replica, pair } = s;
  await p.xadd('dirty:s', '1-1', 'n', '1');
  await p.xgroup('CREATE', 'dirty:s', 'g', '0');
  const first = startWorker(pair);
  await waitForDrain(master, replica);
  await first.close();
  await setLimits(master, keys, { maxEntries: 1, policy: 'mark-dirty' });
  // Not queued: the keys are recorded as dirty instead.
  await p.xadd('dirty:s', '2-1', 'n', '2');
  await p.xreadgroup('GROUP', 'g', 'c', 'COUNT', 5, 'STREAMS', 'dirty:s', '>');
  await p.xclaim('dirty:s', 'g', 'd', 0, '1-1');
  t.is(await master.sismember(keys.dirty, '0:dirty:s'), 1);
  await setLimits(master, keys, { maxEntries: 1_000_000 });
  const result = await runRepair({
    master: { host: pair.master.host, port: pair.master.port },
    replica: { host: pair.replica.host, port: pair.replica.port },
    leaseMs: 2000,
  });
  t.true(result.repaired);
  t.is(await streamDifference(master, replica, Buffer.from('dirty:s')), undefined, 'the copy has the groups and pending entries');
  await p.xack('dirty:s', 'g', '1-1');
  await assertReplicated(t, s, ['dirty:s']);
});

test("the least-privilege ACL users are enough for streams and their groups: the producer's rules read the group, the replica applies the logged forms", async (t) => {
  const s = await setup(t);
  const { master, replica, pair } = s;
  await master.call('ACL', 'SETUSER', 'qsync-consumer', 'on', '>m-secret', ...aclRules('consumer-master'));
  await replica.call('ACL', 'SETUSER', 'qsync-consumer', 'on', '>r-secret', ...aclRules('consumer-replica'));
  await master.call('ACL', 'SETUSER', 'app', 'on', '>app-secret', '~app:*', '+info', ...aclRules('producer'));
  const app = createProducer(pair.master.client(0, { username: 'app', password: 'app-secret' }));
  await app.xgroup('CREATE', 'app:s', 'g', '$', 'MKSTREAM');
  for (let i = 1; i <= 5; i++) await app.xadd('app:s', 'MAXLEN', '~', 100, `${i}-1`, 'n', String(i));
  await app.xreadgroup('GROUP', 'g', 'c', 'COUNT', 3, 'STREAMS', 'app:s', '>');
  await app.xclaim('app:s', 'g', 'd', 0, '1-1', 'IDLE', 100);
  await app.xautoclaim('app:s', 'g', 'e', 0, '0', 'COUNT', 1);
  await app.xack('app:s', 'g', '2-1');
  await app.xtrim('app:s', 'MAXLEN', 4);
  await app.xgroup('DELCONSUMER', 'app:s', 'g', 'c');
  const worker = startWorker(pair, {
    master: { host: pair.master.host, port: pair.master.port, username: 'qsync-consumer', password: 'm-secret' },
    replica: { host: pair.replica.host, port: pair.replica.port, username: 'qsync-consumer', password: 'r-secret' },
  });
  t.teardown(() => worker.close());
  await waitForDrain(master, replica);
  t.is(await streamDifference(master, replica, Buffer.from('app:s')), undefined);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

test('verify reads a big stream and a big pending list in chunks, and still finds a difference deep in them', async (t) => {
  const s = await setup(t);
  const { producer: p, master, replica } = s;
  const pipeline = p.pipeline();
  for (let i = 1; i <= 2500; i++) pipeline.xadd('big:s', `${i}-1`, 'n', String(i));
  await pipeline.exec();
  await p.xgroup('CREATE', 'big:s', 'g', '0');
  await p.xreadgroup('GROUP', 'g', 'c', 'STREAMS', 'big:s', '>');
  await assertReplicated(t, s, ['big:s']);
  await master.xclaim('big:s', 'g', 'c', 0, '2400-1', 'TIME', Date.now() - 5000, 'RETRYCOUNT', 1, 'JUSTID');
  t.is(
    await streamDifference(master, replica, Buffer.from('big:s')),
    'delivery times in g',
    'a delivery time past the first chunk of pending entries',
  );
  await master.xclaim('big:s', 'g', 'other', 0, '2450-1', 'JUSTID');
  t.is(await streamDifference(master, replica, Buffer.from('big:s')), 'group g', 'a consumer more');
});

test('a read whose delivery times span a clock tick is logged, and set on the master, with one time for all', async (t) => {
  const s = await setup(t);
  const { producer: p, master } = s;
  for (let from = 0; from < 20_000; from += 1000) {
    const pipeline = master.pipeline();
    for (let i = from + 1; i <= from + 1000; i++) pipeline.xadd('tick:s', `${i}-1`, 'n', 'x');
    await pipeline.exec();
  }
  await p.xgroup('CREATE', 'tick:s', 'g', '0');
  const started = Date.now();
  const [cmds] = await logOf(master, () => p.xreadgroup('GROUP', 'g', 'c', 'STREAMS', 'tick:s', '>'));
  t.true(Date.now() - started > 2, 'the read took more than a millisecond');
  const times = new Set(cmds.filter((c) => c.startsWith('xclaim')).map((c) => c.split(' ')[7]));
  t.is(times.size, 1, 'every delivery logged at the later reading of the clock');
  const [time] = times;
  t.is(await deliveryTime(master, 'tick:s', 'g', '1-1'), Number(time));
  t.is(await deliveryTime(master, 'tick:s', 'g', '20000-1'), Number(time));
});
