/**
 * The worker reads the common entries of a batch (one command, the master's
 * view of its first key or none) and sends them to the apply script as
 * numbers and plain arguments (consumer/drain/flat.ts), the other entries
 * as bytes in their places. What the worker reads must be what the entry
 * says; the script checks what it applies from the numbers as from bytes,
 * and refuses a batch whose numbers and arguments do not add up.
 */
import test, { type ExecutionContext } from 'ava';
import { Command } from 'ioredis';
import { flatBatch, flatRequest, readCommonEntry } from '../consumer/drain/flat.js';
import { createProducer } from '../producer/index.js';
import { decodeEntry, VIEW_ANY } from '../shared/entry.js';
import { QueueKeys } from '../shared/keys.js';
import { ReplyCode } from '../shared/reply-codes.js';
import { defineScripts } from '../shared/scripts.js';
import { datasetDiff, startPair, type Pair } from './support/fixtures.js';

const keys = new QueueKeys('qsync', 'default');

async function pairFor(t: ExecutionContext): Promise<Pair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  return pair;
}

async function logOf(pair: Pair) {
  const master = pair.master.client();
  const replica = pair.replica.client();
  defineScripts(replica);
  const epoch = (await master.hget(keys.meta, 'epoch'))!;
  const entries = await master.lrangeBuffer(keys.log, 0, -1);
  const send = (args: (Buffer | string)[]) => replica.qsyncApplyBatch(keys.applied, epoch, '0', 'halt', ...args);
  return { entries, send, apply: (batch: Buffer[]) => send(flatBatch(batch)), replica };
}

/** Common writes and others, in two dbs, SETs in runs between them. */
async function writes(pair: Pair): Promise<void> {
  const p = createProducer(pair.master.client());
  const p2 = createProducer(pair.master.client(2));
  await p.set('a', '1');
  await p.set('b', 'x'.repeat(1000));
  await p.incr('n');
  await p.set('c', '1');
  await p2.set('a', 'db2');
  await p2.set('b', 'db2');
  await p.set('d', '1', 'PX', 600_000);
  await p.multi().set('e', '1').incr('n').exec();
  await p.set('f', 'x'.repeat(70_000));
  await p.hset('h', 'f', 'v');
  await p.incr('d');
  await p.set('g', '1');
}

test('the worker reads of an entry what its bytes say, and declines whatever it cannot read so', async (t) => {
  const pair = await pairFor(t);
  await writes(pair);
  const entries = await pair.master.client().lrangeBuffer(keys.log, 0, -1);
  const same = (raw: Buffer): boolean | null => {
    const read = readCommonEntry(raw);
    if (!read) return null;
    let e: ReturnType<typeof decodeEntry>;
    try {
      e = decodeEntry(raw);
    } catch {
      return false;
    }
    const view = e.views?.[0];
    const want = view && view.length === 2 && view[0] === 2 ? view[1] : view && view.length === 0 ? null : undefined;
    return (
      e.commands.length === 1 &&
      e.seq === read.seq &&
      e.ts === read.ts &&
      e.prevTs === read.prev &&
      e.db === read.db &&
      Buffer.concat(e.commands[0]).equals(Buffer.concat(read.args)) &&
      e.commands[0].length === read.args.length &&
      e.commands[0].every((a, i) => a.length === read.args[i].length) &&
      (want === read.want || (want === VIEW_ANY && read.want === VIEW_ANY))
    );
  };
  const read = entries.map(same);
  // All but the MULTI (two commands).
  t.is(read.filter((r) => r === true).length, 11, read.join(','));
  t.deepEqual(
    read.filter((r) => r === false),
    [],
  );
  // Every byte changed, every length cut (but in the 70 KB entry: its header and its end).
  for (const e of entries) {
    for (let i = 0; i < e.length; i++) {
      if (e.length > 2000 && i > 40 && i < e.length - 40) continue;
      for (const b of [0x00, 0x7f, 0x91, 0x92, 0xa0, 0xcf, 0xd3, 0xd9, 0xda, 0xdb, 0xfd, 0xff, e[i] ^ 0x01]) {
        const m = Buffer.from(e);
        m[i] = b;
        if (same(m) === false) t.fail(`byte ${i} of entry ${e.toString('hex')} set to ${b}: read otherwise`);
      }
      if (same(e.subarray(0, i)) === false) t.fail(`entry ${e.toString('hex')} cut at ${i}: read otherwise`);
    }
  }
});

test('common entries go as arguments, the others as bytes in their places; every cut of the batch applies once', async (t) => {
  const pair = await pairFor(t);
  await writes(pair);
  const { entries, apply, replica } = await logOf(pair);
  t.is(entries.length, 12);
  const [, bytes, relayLog, relayMeta, ...args] = flatBatch(entries);
  // Only the MULTI (two commands) goes as bytes.
  t.is(bytes.length, entries[7].length);
  t.deepEqual([relayLog, relayMeta], ['', '']);
  t.true(args.some((a) => a.length === 1000));
  for (const cut of [1, 2, 3, 5, 6, 8, 11]) {
    t.deepEqual((await apply(entries.slice(0, cut)))[0], ReplyCode.ok);
    // The same batch again, and from the middle of what was applied.
    t.deepEqual(await apply(entries.slice(0, cut)), [ReplyCode.ok, cut, 0]);
    t.deepEqual(await apply(entries.slice(Math.floor(cut / 2), cut)), [ReplyCode.ok, cut, 0]);
  }
  t.deepEqual(await apply(entries), [ReplyCode.ok, 12, 1]);
  t.deepEqual(await apply(entries), [ReplyCode.ok, 12, 0]);
  t.deepEqual(await datasetDiff(pair.master, pair.replica, { ttlToleranceMs: 0 }), []);
  t.is(await replica.get('n'), '2');
});

test('a batch whose header names more arguments than were sent is refused there, what ran before it kept once', async (t) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  await p.incr('n');
  for (const k of ['a', 'b', 'c']) await p.set(k, k);
  const { entries, send, apply, replica } = await logOf(pair);
  const args = flatBatch(entries);
  const err = await send(args.slice(0, -1) as Buffer[]).catch((e: Error) => e);
  t.true(err instanceof Error);
  t.regex(String((err as Error).message), /apply-batch: the common entry at position 4 is cut short/);
  t.deepEqual([await replica.get('n'), await replica.get('a'), await replica.get('b'), await replica.get('c')], ['1', 'a', 'b', null]);
  t.is(await replica.hget(keys.applied, 'seq'), '3');
  t.deepEqual(await apply(entries), [ReplyCode.ok, 4, 1]);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

test('a gap or a broken chain among common entries stops the batch there, as for entries sent as bytes', async (t) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  for (const k of ['a', 'b', 'c', 'd']) await p.set(k, k);
  const { entries, apply, replica } = await logOf(pair);
  t.deepEqual(await apply([entries[0], entries[1], entries[3]]), [ReplyCode.gap, 2, 4]);
  t.deepEqual([await replica.get('b'), await replica.get('d')], ['b', null]);
  // Entry 3 as another master wrote it: another time before it.
  const other = Buffer.from(entries[2]);
  const e = decodeEntry(other);
  const at = other.lastIndexOf(Buffer.from(e.prevTs.toString(16).padStart(16, '0'), 'hex'));
  t.true(at > 0);
  other.writeBigUInt64BE(BigInt(e.prevTs + 1), at);
  t.deepEqual(await apply([other, entries[3]]), [ReplyCode.brokenChain, 2, 3]);
  t.deepEqual(await apply(entries), [ReplyCode.ok, 4, 2]);
});

test('the request the worker writes itself is the one the client would write for the same arguments', async (t) => {
  const pair = await pairFor(t);
  await writes(pair);
  const { entries } = await logOf(pair);
  const lead = [keys.applied, 'epoch', '0', 'park'];
  const sha = 'a'.repeat(40);
  for (const batch of [entries, entries.slice(7, 8), entries.slice(0, 2), []]) {
    const client = new Command('evalsha', [sha, '1', ...lead, ...flatBatch(batch)]).toWritable(undefined as never);
    t.true(Buffer.from(client).equals(flatRequest(sha, lead, batch)));
  }
});
