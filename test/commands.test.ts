/**
 * Every supported write, driven through the producer with its option variants,
 * replays on the replica to the master's dataset, key by key and expiry by expiry.
 */
import test, { type ExecutionContext } from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { COMMANDS } from '../shared/commands.js';
import { createProducer, ReservedKeyError } from '../producer/index.js';
import { startPair, startWorker, waitForDrain, datasetDiff, type Pair } from './support/fixtures.js';
import { setLimits } from '../consumer/queue/limits.js';
import { QueueKeys } from '../shared/keys.js';
import { aclRules } from '../shared/acl.js';
import { flushedDbs } from '../shared/entry-keys.js';
import { touchedKeys } from '../consumer/copy/log-follower.js';

type Scenario = (p: Redis, t: ExecutionContext) => Promise<unknown>;

const inSeconds = (s: number) => Math.floor(Date.now() / 1000) + s;
const inMs = (ms: number) => Date.now() + ms;

/** One scenario per command in COMMANDS: realistic calls with its options, replies checked. */
const SCENARIOS: Record<string, Scenario> = {
  set: async (p, t) => {
    t.is(await p.set('set:plain', 'v'), 'OK');
    await p.set('set:ex', 'v', 'EX', 100);
    await p.set('set:px', 'v', 'PX', 100_000);
    await p.set('set:exat', 'v', 'EXAT', inSeconds(100));
    await p.set('set:pxat', 'v', 'PXAT', inMs(100_000));
    await p.set('set:ex', 'v2', 'KEEPTTL');
    t.is(await p.set('set:plain', 'x', 'NX'), null);
    t.is(await p.set('set:new', 'x', 'NX'), 'OK');
    t.is(await p.set('set:missing', 'x', 'XX'), null);
    t.is(await p.set('set:plain', 'y', 'XX', 'GET'), 'v');
    t.is(await p.set('set:plain', 'z', 'EX', 50, 'GET'), 'y');
    t.is(await p.set('set:plain', 'w', 'GET'), 'z');
  },
  setnx: async (p, t) => {
    t.is(await p.setnx('setnx:a', '1'), 1);
    t.is(await p.setnx('setnx:a', '2'), 0);
  },
  setex: async (p) => void (await p.setex('setex:a', 100, 'v')),
  psetex: async (p) => void (await p.psetex('psetex:a', 100_000, 'v')),
  mset: async (p) => {
    await p.mset('mset:a', '1', 'mset:b', '2');
    await p.mset({ 'mset:c': '3', 'mset:d': 4 });
  },
  msetnx: async (p, t) => {
    t.is(await p.msetnx('msetnx:a', '1', 'msetnx:b', '2'), 1);
    t.is(await p.msetnx('msetnx:b', 'x', 'msetnx:c', '3'), 0);
  },
  append: async (p, t) => t.is(await p.append('append:a', 'abc'), 3),
  incr: async (p, t) => t.is(await p.incr('incr:a'), 1),
  decr: async (p, t) => t.is(await p.decr('decr:a'), -1),
  incrby: async (p, t) => t.is(await p.incrby('incrby:a', 12345678901234), 12345678901234),
  decrby: async (p, t) => t.is(await p.decrby('decrby:a', 5), -5),
  incrbyfloat: async (p, t) => {
    await p.set('incrbyfloat:a', '10.5', 'EX', 100);
    t.is(await p.incrbyfloat('incrbyfloat:a', '0.1'), '10.6');
    t.is(await p.incrbyfloat('incrbyfloat:b', '5.0e3'), '5000');
  },
  setrange: async (p, t) => t.is(await p.setrange('setrange:a', 5, 'xyz'), 8),
  getset: async (p, t) => {
    await p.set('getset:a', 'old', 'EX', 100);
    t.is(await p.getset('getset:a', 'new'), 'old');
  },
  getdel: async (p, t) => {
    await p.set('getdel:a', 'v');
    t.is(await p.getdel('getdel:a'), 'v');
    t.is(await p.getdel('getdel:a'), null);
  },
  getex: async (p, t) => {
    await p.mset('getex:ex', 'v', 'getex:px', 'v', 'getex:exat', 'v', 'getex:pxat', 'v', 'getex:persist', 'v', 'getex:past', 'v');
    t.is(await p.getex('getex:ex', 'EX', 100), 'v');
    await p.getex('getex:px', 'PX', 100_000);
    await p.getex('getex:exat', 'EXAT', inSeconds(100));
    await p.getex('getex:pxat', 'PXAT', inMs(100_000));
    await p.expire('getex:persist', 100);
    await p.getex('getex:persist', 'PERSIST');
    await p.getex('getex:past', 'PXAT', 1);
    t.is(await p.getex('getex:ex'), 'v');
  },
  setbit: async (p, t) => {
    t.is(await p.setbit('setbit:a', 7, 1), 0);
    t.is(await p.setbit('setbit:a', 100, 1), 0);
  },
  del: async (p, t) => {
    await p.mset('del:a', '1', 'del:b', '2');
    t.is(await p.del('del:a', 'del:b', 'del:missing'), 2);
  },
  unlink: async (p, t) => {
    await p.set('unlink:a', '1');
    t.is(await p.unlink('unlink:a'), 1);
  },
  expire: async (p, t) => {
    await p.mset('expire:a', '1', 'expire:b', '1');
    t.is(await p.expire('expire:a', 100), 1);
    t.is(await p.expire('expire:a', 50, 'NX'), 0);
    t.is(await p.expire('expire:a', 200, 'GT'), 1);
    t.is(await p.expire('expire:a', 150, 'LT'), 1);
    t.is(await p.expire('expire:a', 300, 'XX'), 1);
    t.is(await p.expire('expire:b', 100, 'XX'), 0);
    t.is(await p.expire('expire:missing', 100), 0);
  },
  pexpire: async (p, t) => {
    await p.set('pexpire:a', '1');
    t.is(await p.pexpire('pexpire:a', 100_000, 'NX'), 1);
  },
  expireat: async (p, t) => {
    await p.set('expireat:a', '1');
    t.is(await p.expireat('expireat:a', inSeconds(100)), 1);
  },
  pexpireat: async (p, t) => {
    await p.set('pexpireat:a', '1');
    t.is(await p.pexpireat('pexpireat:a', inMs(100_000), 'NX'), 1);
  },
  persist: async (p, t) => {
    await p.set('persist:a', '1', 'EX', 100);
    t.is(await p.persist('persist:a'), 1);
  },
  rename: async (p) => {
    await p.set('rename:a', '1', 'EX', 100);
    await p.rename('rename:a', 'rename:b');
  },
  renamenx: async (p, t) => {
    await p.mset('renamenx:a', '1', 'renamenx:b', '2');
    t.is(await p.renamenx('renamenx:a', 'renamenx:b'), 0);
    t.is(await p.renamenx('renamenx:a', 'renamenx:c'), 1);
  },
  copy: async (p, t) => {
    await p.set('copy:a', '1', 'EX', 100);
    await p.set('copy:b', '2');
    t.is(await p.copy('copy:a', 'copy:b'), 0);
    t.is(await p.copy('copy:a', 'copy:b', 'REPLACE'), 1);
    t.is(await p.copy('copy:a', 'copy:c', 'DB', 3), 1);
  },
  // whole keys and dbs, stored results, GEOADD and BITFIELD (qsync's keys through a flush: below)
  move: async (p, t) => {
    await p.set('move:a', '1', 'EX', 100);
    await p.rpush('move:l', 'x', 'y');
    t.is(await p.move('move:a', 4), 1);
    t.is(await p.move('move:l', 5), 1);
    t.is(await p.move('move:missing', 4), 0);
    await p.set('move:b', '2');
    await p.copy('move:b', 'move:b', 'DB', 4);
    t.is(await p.move('move:b', 4), 0, 'the key is in db 4 already');
  },
  restore: async (p, t) => {
    await p.rpush('restore:src', 'a', 'b');
    await p.hset('restore:hash', 'f', 'v');
    const [list, hash] = [await p.dumpBuffer('restore:src'), await p.dumpBuffer('restore:hash')];
    t.is(await p.restore('restore:plain', 0, list), 'OK');
    t.is(await p.restore('restore:ttl', 100_000, hash), 'OK');
    t.is(await p.restore('restore:abs', inMs(100_000), list, 'ABSTTL', 'IDLETIME', 5), 'OK');
    t.is(await p.restore('restore:plain', 0, hash, 'REPLACE', 'FREQ', 3), 'OK');
    await p.set('restore:past', 'v');
    t.is(await p.call('RESTORE', 'restore:past', 1, list, 'REPLACE', 'ABSTTL'), 'OK');
    await t.throwsAsync(p.restore('restore:ttl', 0, list), { message: /BUSYKEY/ });
  },
  flushdb: async (p, t) => {
    await p.mset('flushdb:a', '1', 'flushdb:b', '2');
    const other = p.duplicate({ db: 2 });
    await other.set('flushdb:other', '1', 'EX', 100);
    t.is(await other.flushdb(), 'OK');
    await other.set('flushdb:after', '1');
    other.disconnect();
    t.is(await p.flushdb('ASYNC'), 'OK');
    t.is(await p.exists('flushdb:a', 'flushdb:b'), 0);
    await p.set('flushdb:c', '3');
  },
  flushall: async (p, t) => {
    await p.set('flushall:a', '1');
    await p.copy('flushall:a', 'flushall:a', 'DB', 3);
    t.is(await p.flushall('SYNC'), 'OK');
    await p.set('flushall:b', '2', 'EX', 100);
  },
  sort: async (p, t) => {
    await p.rpush('sort:l', '3', '1', '2');
    await p.sadd('sort:s', 'b', 'c', 'a');
    t.deepEqual(await p.sort('sort:l'), ['1', '2', '3']);
    t.is(await p.sort('sort:l', 'DESC', 'STORE', 'sort:dst'), 3);
    t.is(await p.sort('sort:s', 'ALPHA', 'LIMIT', 0, 2, 'STORE', 'sort:alpha'), 2);
    await p.mset('sort:w_1', '30', 'sort:w_2', '10', 'sort:w_3', '20');
    t.is(await p.sort('sort:l', 'BY', 'sort:w_*', 'GET', '#', 'GET', 'sort:w_*', 'STORE', 'sort:by'), 6);
    await p.rpush('sort:emptied', 'x');
    t.is(await p.sort('sort:missing', 'STORE', 'sort:emptied'), 0);
    await p.rpush('sort:big', ...Array.from({ length: 6000 }, (_, i) => String((i * 7919) % 6000)));
    t.is(await p.sort('sort:big', 'STORE', 'sort:big-sorted'), 6000);
  },
  zunionstore: async (p, t) => {
    await p.zadd('zunionstore:a', 1, 'x', 2, 'y');
    await p.zadd('zunionstore:b', 0.1, 'y', 3, 'z');
    t.is(await p.zunionstore('zunionstore:dst', 2, 'zunionstore:a', 'zunionstore:b', 'WEIGHTS', 1.5, 0.3), 3);
    t.is(await p.zunionstore('zunionstore:max', 2, 'zunionstore:a', 'zunionstore:b', 'AGGREGATE', 'MAX'), 3);
    await p.zadd('zunionstore:big', ...Array.from({ length: 3000 }, (_, i) => [i / 7, `m${i}`]).flat());
    t.is(await p.zunionstore('zunionstore:big-copy', 1, 'zunionstore:big'), 3000);
  },
  zinterstore: async (p, t) => {
    await p.zadd('zinterstore:a', 1, 'x', 2, 'y');
    await p.zadd('zinterstore:b', 5, 'y', 3, 'z');
    t.is(await p.zinterstore('zinterstore:dst', 2, 'zinterstore:a', 'zinterstore:b', 'AGGREGATE', 'MIN'), 1);
    await p.set('zinterstore:none', 'x', 'EX', 100);
    t.is(await p.zinterstore('zinterstore:none', 2, 'zinterstore:a', 'zinterstore:missing'), 0);
  },
  zdiffstore: async (p, t) => {
    await p.zadd('zdiffstore:a', 1, 'x', 2, 'y');
    await p.zadd('zdiffstore:b', 5, 'y');
    t.is(await p.zdiffstore('zdiffstore:dst', 2, 'zdiffstore:a', 'zdiffstore:b'), 1);
  },
  zrangestore: async (p, t) => {
    await p.zadd('zrangestore:src', 1, 'a', 2, 'b', 3, 'c');
    t.is(await p.zrangestore('zrangestore:dst', 'zrangestore:src', 0, 1), 2);
    t.is(await p.zrangestore('zrangestore:rev', 'zrangestore:src', '(3', '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1), 1);
  },
  geoadd: async (p, t) => {
    t.is(await p.geoadd('geoadd:g', 13.361389, 38.115556, 'Palermo', 15.087269, 37.502669, 'Catania'), 2);
    t.is(await p.geoadd('geoadd:g', 'NX', 1, 1, 'Palermo', 2, 2, 'Null Island'), 1);
    t.is(await p.geoadd('geoadd:g', 'XX', 'CH', 13.4, 38.1, 'Palermo', 3, 3, 'missing'), 1);
    t.is(await p.geoadd('geoadd:none', 'XX', 1, 1, 'x'), 0);
  },
  georadius: async (p, t) => {
    await p.geoadd('georadius:g', 13.361389, 38.115556, 'Palermo', 15.087269, 37.502669, 'Catania');
    t.deepEqual(await p.georadius('georadius:g', 15, 37, 200, 'km', 'ASC'), ['Catania', 'Palermo']);
    t.is(await p.call('GEORADIUS', 'georadius:g', 15, 37, 200, 'km', 'STORE', 'georadius:store'), 2);
    t.is(await p.call('GEORADIUS', 'georadius:g', 15, 37, 100, 'km', 'COUNT', 1, 'STOREDIST', 'georadius:dist'), 1);
  },
  georadiusbymember: async (p, t) => {
    await p.geoadd('georadiusbymember:g', 13.361389, 38.115556, 'Palermo', 15.087269, 37.502669, 'Catania');
    t.deepEqual(await p.georadiusbymember('georadiusbymember:g', 'Palermo', 200, 'km'), ['Palermo', 'Catania']);
    t.is(await p.georadiusbymember('georadiusbymember:g', 'Palermo', 200, 'km', 'STOREDIST', 'georadiusbymember:dist'), 2);
  },
  geosearchstore: async (p, t) => {
    await p.geoadd('geosearchstore:g', 13.361389, 38.115556, 'Palermo', 15.087269, 37.502669, 'Catania');
    t.is(await p.geosearchstore('geosearchstore:dst', 'geosearchstore:g', 'FROMLONLAT', 15, 37, 'BYRADIUS', 200, 'km', 'ASC'), 2);
    t.is(await p.geosearchstore('geosearchstore:d', 'geosearchstore:g', 'FROMMEMBER', 'Palermo', 'BYBOX', 400, 400, 'km', 'STOREDIST'), 2);
  },
  bitfield: async (p, t) => {
    t.deepEqual(await p.bitfield('bitfield:b', 'GET', 'u8', 0), [0]);
    t.deepEqual(await p.call('BITFIELD', 'bitfield:b', 'SET', 'u8', 0, 200, 'GET', 'u4', 0), [0, 12]);
    t.deepEqual(await p.bitfield('bitfield:b', 'OVERFLOW', 'SAT', 'INCRBY', 'u8', 0, 100), [255]);
    t.deepEqual(await p.bitfield('bitfield:b', 'OVERFLOW', 'FAIL', 'INCRBY', 'u8', 0, 1), [null]);
  },
  bitop: async (p, t) => {
    await p.mset('bitop:a', 'abc', 'bitop:b', 'a');
    t.is(await p.bitop('AND', 'bitop:and', 'bitop:a', 'bitop:b'), 3);
    t.is(await p.bitop('NOT', 'bitop:not', 'bitop:a'), 3);
    await p.set('bitop:gone', 'x', 'EX', 100);
    t.is(await p.bitop('OR', 'bitop:gone', 'bitop:missing'), 0);
  },
  pfmerge: async (p, t) => {
    await p.pfadd('pfmerge:a', 'x', 'y');
    await p.pfadd('pfmerge:b', 'y', 'z');
    t.is(await p.pfmerge('pfmerge:dst', 'pfmerge:a', 'pfmerge:b'), 'OK');
    t.is(await p.pfmerge('pfmerge:a', 'pfmerge:b'), 'OK');
  },
  hset: async (p, t) => {
    t.is(await p.hset('hset:h', 'a', '1', 'b', '2'), 2);
    t.is(await p.hset('hset:h', { b: '3', c: 4 }), 1);
  },
  hsetnx: async (p, t) => {
    t.is(await p.hsetnx('hsetnx:h', 'a', '1'), 1);
    t.is(await p.hsetnx('hsetnx:h', 'a', '2'), 0);
  },
  hmset: async (p) => void (await p.hmset('hmset:h', { a: '1', b: '2' })),
  hdel: async (p, t) => {
    await p.hset('hdel:h', 'a', '1', 'b', '2');
    t.is(await p.hdel('hdel:h', 'a', 'missing'), 1);
  },
  hincrby: async (p, t) => t.is(await p.hincrby('hincrby:h', 'n', 7), 7),
  hincrbyfloat: async (p, t) => {
    t.is(await p.hincrbyfloat('hincrbyfloat:h', 'f', '0.1'), '0.1');
    t.is(await p.hincrbyfloat('hincrbyfloat:h', 'f', '0.2'), '0.3');
  },
  lpush: async (p, t) => t.is(await p.lpush('lpush:l', 'a', 'b'), 2),
  rpush: async (p, t) => t.is(await p.rpush('rpush:l', 'a', 'b'), 2),
  lpushx: async (p, t) => {
    t.is(await p.lpushx('lpushx:missing', 'a'), 0);
    await p.rpush('lpushx:l', 'a');
    t.is(await p.lpushx('lpushx:l', 'b'), 2);
  },
  rpushx: async (p, t) => {
    await p.rpush('rpushx:l', 'a');
    t.is(await p.rpushx('rpushx:l', 'b'), 2);
  },
  lpop: async (p, t) => {
    await p.rpush('lpop:l', 'a', 'b', 'c', 'd');
    t.is(await p.lpop('lpop:l'), 'a');
    t.deepEqual(await p.lpop('lpop:l', 2), ['b', 'c']);
    t.deepEqual(await p.lpop('lpop:l', 5), ['d']);
  },
  rpop: async (p, t) => {
    await p.rpush('rpop:l', 'a', 'b', 'c');
    t.is(await p.rpop('rpop:l'), 'c');
    t.deepEqual(await p.rpop('rpop:l', 1), ['b']);
  },
  linsert: async (p, t) => {
    await p.rpush('linsert:l', 'a', 'c');
    t.is(await p.linsert('linsert:l', 'BEFORE', 'c', 'b'), 3);
    t.is(await p.linsert('linsert:l', 'AFTER', 'c', 'd'), 4);
    t.is(await p.linsert('linsert:l', 'AFTER', 'missing', 'x'), -1);
  },
  lset: async (p) => {
    await p.rpush('lset:l', 'a', 'b');
    await p.lset('lset:l', -1, 'z');
  },
  lrem: async (p, t) => {
    await p.rpush('lrem:l', 'a', 'b', 'a', 'a');
    t.is(await p.lrem('lrem:l', -1, 'a'), 1);
    t.is(await p.lrem('lrem:l', 0, 'a'), 2);
  },
  ltrim: async (p) => {
    await p.rpush('ltrim:l', 'a', 'b', 'c');
    await p.ltrim('ltrim:l', 1, -1);
  },
  lmove: async (p, t) => {
    await p.rpush('lmove:a', '1', '2', '3');
    t.is(await p.lmove('lmove:a', 'lmove:b', 'LEFT', 'RIGHT'), '1');
    t.is(await p.lmove('lmove:a', 'lmove:a', 'RIGHT', 'LEFT'), '3');
    t.is((await p.lmove('lmove:missing', 'lmove:b', 'LEFT', 'LEFT')) as string | null, null);
  },
  rpoplpush: async (p, t) => {
    await p.rpush('rpoplpush:a', '1', '2');
    t.is(await p.rpoplpush('rpoplpush:a', 'rpoplpush:b'), '2');
  },
  // streams (every option: test/streams.test.ts)
  xadd: async (p, t) => {
    t.is(await p.xadd('xadd:s', '1-1', 'f', 'v'), '1-1');
    t.regex((await p.xadd('xadd:s', 'MAXLEN', '~', 1, '*', 'f', 'v')) as string, /^\d+-\d+$/);
    t.is(await p.xadd('xadd:none', 'NOMKSTREAM', '*', 'f', 'v'), null);
  },
  xtrim: async (p, t) => {
    for (let i = 1; i <= 5; i++) await p.xadd('xtrim:s', `${i}-1`, 'f', 'v');
    t.is(await p.xtrim('xtrim:s', 'MAXLEN', 3), 2);
    t.is(await p.xtrim('xtrim:s', 'MINID', '~', '5-1'), 0);
  },
  xdel: async (p, t) => {
    await p.xadd('xdel:s', '1-1', 'f', 'v');
    t.is(await p.xdel('xdel:s', '1-1', '2-1'), 1);
  },
  xsetid: async (p, t) => {
    await p.xadd('xsetid:s', '1-1', 'f', 'v');
    t.is(await p.xsetid('xsetid:s', '10-1', 'ENTRIESADDED', 5, 'MAXDELETEDID', '3-0'), 'OK');
  },
  xgroup: async (p, t) => {
    t.is(await p.xgroup('CREATE', 'xgroup:s', 'g', '$', 'MKSTREAM'), 'OK');
    await p.xadd('xgroup:s', '1-1', 'f', 'v');
    t.is(await p.xgroup('SETID', 'xgroup:s', 'g', '$'), 'OK');
    t.is(await p.xgroup('CREATECONSUMER', 'xgroup:s', 'g', 'c'), 1);
    t.is(await p.xgroup('DELCONSUMER', 'xgroup:s', 'g', 'c'), 0);
    t.is(await p.xgroup('CREATE', 'xgroup:s', 'gone', '0'), 'OK');
    t.is(await p.xgroup('DESTROY', 'xgroup:s', 'gone'), 1);
  },
  xreadgroup: async (p, t) => {
    await p.xadd('xreadgroup:s', '1-1', 'f', 'v');
    await p.xgroup('CREATE', 'xreadgroup:s', 'g', '0');
    t.deepEqual(await p.xreadgroup('GROUP', 'g', 'c', 'STREAMS', 'xreadgroup:s', '>'), [['xreadgroup:s', [['1-1', ['f', 'v']]]]]);
    t.deepEqual(await p.xreadgroup('GROUP', 'g', 'c', 'COUNT', 1, 'STREAMS', 'xreadgroup:s', '0'), [['xreadgroup:s', [['1-1', ['f', 'v']]]]]);
  },
  xack: async (p, t) => {
    await p.xadd('xack:s', '1-1', 'f', 'v');
    await p.xgroup('CREATE', 'xack:s', 'g', '0');
    await p.xreadgroup('GROUP', 'g', 'c', 'STREAMS', 'xack:s', '>');
    t.is(await p.xack('xack:s', 'g', '1-1'), 1);
  },
  xclaim: async (p, t) => {
    await p.xadd('xclaim:s', '1-1', 'f', 'v');
    await p.xgroup('CREATE', 'xclaim:s', 'g', '0');
    await p.xreadgroup('GROUP', 'g', 'a', 'STREAMS', 'xclaim:s', '>');
    t.deepEqual(await p.xclaim('xclaim:s', 'g', 'b', 0, '1-1', 'IDLE', 5000, 'RETRYCOUNT', 3, 'JUSTID'), ['1-1']);
  },
  xautoclaim: async (p, t) => {
    await p.xadd('xautoclaim:s', '1-1', 'f', 'v');
    await p.xgroup('CREATE', 'xautoclaim:s', 'g', '0');
    await p.xreadgroup('GROUP', 'g', 'a', 'STREAMS', 'xautoclaim:s', '>');
    t.deepEqual(await p.xautoclaim('xautoclaim:s', 'g', 'b', 0, '0', 'COUNT', 10), ['0-0', [['1-1', ['f', 'v']]], []]);
  },
  sadd: async (p, t) => t.is(await p.sadd('sadd:s', 'a', 'b', 'a'), 2),
  srem: async (p, t) => {
    await p.sadd('srem:s', 'a', 'b');
    t.is(await p.srem('srem:s', 'a', 'missing'), 1);
  },
  spop: async (p, t) => {
    await p.sadd('spop:s', 'a', 'b', 'c', 'd', 'e', 'f');
    t.is(typeof (await p.spop('spop:s')), 'string');
    t.is((await p.spop('spop:s', 2)).length, 2);
    await p.sadd('spop:all', 'x', 'y');
    t.is((await p.spop('spop:all', 10)).length, 2);
  },
  smove: async (p, t) => {
    await p.sadd('smove:a', 'm');
    t.is(await p.smove('smove:a', 'smove:b', 'm'), 1);
  },
  sinterstore: async (p, t) => {
    await p.sadd('sinterstore:a', 'x', 'y', 'z');
    await p.sadd('sinterstore:b', 'y', 'z', 'w');
    t.is(await p.sinterstore('sinterstore:dst', 'sinterstore:a', 'sinterstore:b'), 2);
  },
  sunionstore: async (p, t) => {
    await p.sadd('sunionstore:a', 'x', 'y');
    await p.sadd('sunionstore:b', 'y', 'z');
    t.is(await p.sunionstore('sunionstore:dst', 'sunionstore:a', 'sunionstore:b'), 3);
  },
  sdiffstore: async (p, t) => {
    await p.sadd('sdiffstore:a', 'x', 'y');
    await p.sadd('sdiffstore:b', 'y');
    t.is(await p.sdiffstore('sdiffstore:dst', 'sdiffstore:a', 'sdiffstore:b'), 1);
  },
  zadd: async (p, t) => {
    t.is(await p.zadd('zadd:z', 1, 'a', 2, 'b'), 2);
    t.is(await p.zadd('zadd:z', 'NX', 5, 'a', 3, 'c'), 1);
    t.is(await p.zadd('zadd:z', 'XX', 'CH', 4, 'a', 9, 'missing'), 1);
    t.is(await p.zadd('zadd:z', 'GT', 'CH', 1, 'a', 10, 'b'), 1);
    t.is(await p.zadd('zadd:z', 'LT', 0.5, 'c'), 0);
    t.is((await p.zadd('zadd:z', 'INCR', 0.25, 'c')) as unknown, '0.75');
  },
  zincrby: async (p, t) => t.is(await p.zincrby('zincrby:z', '1.5', 'm'), '1.5'),
  zrem: async (p, t) => {
    await p.zadd('zrem:z', 1, 'a', 2, 'b');
    t.is(await p.zrem('zrem:z', 'a', 'missing'), 1);
  },
  zremrangebyscore: async (p, t) => {
    await p.zadd('zremrangebyscore:z', 1, 'a', 2, 'b', 3, 'c');
    t.is(await p.zremrangebyscore('zremrangebyscore:z', '(1', 2), 1);
  },
  zremrangebyrank: async (p, t) => {
    await p.zadd('zremrangebyrank:z', 1, 'a', 2, 'b', 3, 'c');
    t.is(await p.zremrangebyrank('zremrangebyrank:z', 0, 1), 2);
  },
  zremrangebylex: async (p, t) => {
    await p.zadd('zremrangebylex:z', 0, 'a', 0, 'b', 0, 'c');
    t.is(await p.zremrangebylex('zremrangebylex:z', '[a', '(c'), 2);
  },
  zpopmin: async (p, t) => {
    await p.zadd('zpopmin:z', 1, 'a', 2, 'b', 3, 'c');
    t.deepEqual(await p.zpopmin('zpopmin:z'), ['a', '1']);
    t.deepEqual(await p.zpopmin('zpopmin:z', 5), ['b', '2', 'c', '3']);
  },
  zpopmax: async (p, t) => {
    await p.zadd('zpopmax:z', 1, 'a', 2, 'b', 3, 'c');
    t.deepEqual(await p.zpopmax('zpopmax:z', 2), ['c', '3', 'b', '2']);
  },
  pfadd: async (p, t) => {
    t.is(await p.pfadd('pfadd:h', 'a', 'b', 'c'), 1);
    t.is(await p.pfadd('pfadd:h', 'a'), 0);
  },
  pfcount: async (p, t) => {
    await p.pfadd('pfcount:a', 'x', 'y');
    await p.pfadd('pfcount:b', 'z');
    t.is(await p.pfcount('pfcount:a'), 2);
    t.is(await p.pfcount('pfcount:a', 'pfcount:b'), 3);
  },
  // pops from the first of several keys, blocking or not (waits: test/blocking.test.ts)
  blpop: async (p, t) => {
    await p.rpush('blpop:b', 'x', 'y');
    t.deepEqual(await p.blpop('blpop:a', 'blpop:b', 0), ['blpop:b', 'x']);
    t.is(await p.blpop('blpop:a', 0.05), null);
  },
  brpop: async (p, t) => {
    await p.rpush('brpop:b', 'x', 'y');
    t.deepEqual(await p.brpop('brpop:a', 'brpop:b', 1), ['brpop:b', 'y']);
  },
  bzpopmin: async (p, t) => {
    await p.zadd('bzpopmin:z', 1, 'a', 2, 'b');
    t.deepEqual(await p.bzpopmin('bzpopmin:missing', 'bzpopmin:z', 0), ['bzpopmin:z', 'a', '1']);
  },
  bzpopmax: async (p, t) => {
    await p.zadd('bzpopmax:z', 1, 'a', 2, 'b');
    t.deepEqual(await p.bzpopmax('bzpopmax:z', 0.5), ['bzpopmax:z', 'b', '2']);
    t.deepEqual(await p.bzpopmax('bzpopmax:z', 0.5), ['bzpopmax:z', 'a', '1']);
  },
  blmove: async (p, t) => {
    await p.rpush('blmove:a', '1', '2');
    t.is(await p.blmove('blmove:a', 'blmove:b', 'RIGHT', 'LEFT', 0), '2');
    t.is(await p.blmove('blmove:a', 'blmove:a', 'LEFT', 'LEFT', 1), '1');
  },
  brpoplpush: async (p, t) => {
    await p.rpush('brpoplpush:a', '1', '2');
    t.is(await p.brpoplpush('brpoplpush:a', 'brpoplpush:b', 0), '2');
  },
  lmpop: async (p, t) => {
    await p.rpush('lmpop:b', '1', '2', '3');
    t.deepEqual(await p.lmpop(2, 'lmpop:a', 'lmpop:b', 'LEFT', 'COUNT', 2), ['lmpop:b', ['1', '2']]);
    t.deepEqual(await p.lmpop(1, 'lmpop:b', 'RIGHT', 'COUNT', 5), ['lmpop:b', ['3']]);
    t.is(await p.lmpop(1, 'lmpop:b', 'RIGHT'), null);
  },
  blmpop: async (p, t) => {
    await p.rpush('blmpop:a', '1', '2', '3');
    t.deepEqual(await p.blmpop(0, 2, 'blmpop:a', 'blmpop:b', 'RIGHT'), ['blmpop:a', ['3']]);
    t.deepEqual(await p.blmpop(0.5, 1, 'blmpop:a', 'LEFT', 'COUNT', 10), ['blmpop:a', ['1', '2']]);
  },
  zmpop: async (p, t) => {
    await p.zadd('zmpop:z', 1, 'a', 2, 'b', 3, 'c');
    t.deepEqual(await p.zmpop(1, 'zmpop:z', 'MIN'), ['zmpop:z', [['a', '1']]]);
    t.deepEqual(await p.zmpop(2, 'zmpop:y', 'zmpop:z', 'MAX', 'COUNT', 5), [
      'zmpop:z',
      [
        ['c', '3'],
        ['b', '2'],
      ],
    ]);
  },
  bzmpop: async (p, t) => {
    await p.zadd('bzmpop:z', 1, 'a', 2, 'b', 3, 'c');
    t.deepEqual(await p.bzmpop(0, 1, 'bzmpop:z', 'MAX', 'COUNT', 2), [
      'bzmpop:z',
      [
        ['c', '3'],
        ['b', '2'],
      ],
    ]);
  },
};

/**
 * Runs writes through a producer on a fresh pair of servers, then checks they
 * were logged and that the replica, once drained, equals the master.
 */
async function replays(t: ExecutionContext, writes: (producer: Redis) => Promise<unknown>): Promise<Pair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const worker = startWorker(pair);
  t.teardown(() => worker.close());
  const master = pair.master.client();
  await writes(createProducer(pair.master.client()));
  t.true(Number(await master.hget('qsync:default:meta', 'seq')) > 0, 'the writes were logged');
  await waitForDrain(master, pair.replica.client());
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  return pair;
}

test('every command in the command table has a scenario, and every scenario a command', (t) => {
  t.deepEqual(
    Object.keys(COMMANDS).filter((name) => !(name in SCENARIOS)),
    [],
    'commands without a scenario',
  );
  t.deepEqual(
    Object.keys(SCENARIOS).filter((name) => !(name in COMMANDS)),
    [],
    'scenarios without a command',
  );
});

for (const name of Object.keys(COMMANDS)) {
  test.serial(`${name.toUpperCase()} replays to the master's dataset`, async (t) => {
    const scenario = SCENARIOS[name];
    if (!scenario) return t.fail(`no scenario for ${name}`);
    await replays(t, (producer) => scenario(producer, t));
  });
}

test('SPOP, INCRBYFLOAT and HINCRBYFLOAT replay to exactly the master values', async (t) => {
  const members = Array.from({ length: 300 }, (_, i) => `member-${i}`);
  const pair = await replays(t, async (producer) => {
    await producer.sadd('exact:set', ...members);
    for (let i = 0; i < 5; i++) await producer.spop('exact:set', 20);
    await producer.spop('exact:set');
    for (const by of ['0.1', '1e-7', '-3.3333333333333335', '1.5e20']) {
      await producer.incrbyfloat('exact:float', by);
      await producer.hincrbyfloat('exact:hash', 'f', by);
    }
  });
  const [master, replica] = [pair.master.client(), pair.replica.client()];
  t.deepEqual((await replica.smembers('exact:set')).sort(), (await master.smembers('exact:set')).sort());
  t.is(await replica.scard('exact:set'), members.length - 101);
  t.is(await replica.get('exact:float'), await master.get('exact:float'));
  t.is(await replica.hget('exact:hash', 'f'), await master.hget('exact:hash', 'f'));
});

test('EXPIRE and SET EXAT with a time in the past delete the key on both sides', async (t) => {
  const pair = await replays(t, async (producer) => {
    await producer.mset('past:expire', '1', 'past:set', '1');
    t.is(await producer.expire('past:expire', -10), 1);
    t.is(await producer.set('past:set', 'v', 'EXAT', 1), 'OK');
    t.is(await producer.pexpireat('past:missing', 1), 0);
  });
  t.is(await pair.replica.client().exists('past:expire', 'past:set'), 0);
  t.is(await pair.master.client().exists('past:expire', 'past:set'), 0);
});

test('PFCOUNT, a read that caches the count inside the value, is logged only when it rewrote the cache', async (t) => {
  await replays(t, async (producer) => {
    const seq = async () => Number(await producer.hget('qsync:default:meta', 'seq'));
    await producer.pfadd('hll', 'a', 'b');
    t.is(await producer.pfcount('hll'), 2);
    t.is(await seq(), 2, 'the first count rewrote the cache and was logged');
    t.is(await producer.pfcount('hll'), 2);
    t.is(await producer.pfcount('hll', 'missing'), 2);
    t.is(await seq(), 2, 'the later counts changed nothing and logged nothing');
  });
});

test('a key set with EX 100 and replayed 2 s later keeps the master expiry, not 100 s from the replay', async (t) => {
  const own = await startPair();
  t.teardown(() => own.destroy());
  const p = createProducer(own.master.client());
  await p.set('ttl:k', 'v', 'EX', 100);
  await sleep(2000);
  const w = startWorker(own);
  t.teardown(() => w.close());
  await waitForDrain(own.master.client(), own.replica.client());
  const masterAt = await own.master.client().pexpiretime('ttl:k');
  t.true(masterAt > Date.now() + 90_000);
  t.is(await own.replica.client().pexpiretime('ttl:k'), masterAt);
  t.deepEqual(await datasetDiff(own.master, own.replica), []);
});

test("FLUSHDB and FLUSHALL keep qsync's own keys on both sides, and the stream goes on after them", async (t) => {
  const keys = new QueueKeys('qsync', 'default');
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const worker = startWorker(pair);
  t.teardown(() => worker.close());
  const [master, replica] = [pair.master.client(), pair.replica.client()];
  const producer = createProducer(pair.master.client());
  await producer.set('before', '1');
  await waitForDrain(master, replica);
  const epoch = await master.hget(keys.meta, 'epoch');
  // qsync's keys that are not the queue's own: another queue's, a control job's
  await master.set('qsync-jobs:control:1', 'job', 'EX', 100);
  await replica.hset('qsync:other:applied', 'seq', '7');
  await master.set('qsync-like', 'app');
  t.is(await producer.flushdb(), 'OK');
  await producer.set('between', '1');
  t.is(await producer.flushall(), 'OK');
  await producer.set('after', '1');
  await waitForDrain(master, replica);
  t.is(await master.hget(keys.meta, 'epoch'), epoch, "the master's queue kept its sequence");
  t.is(await master.hget(keys.meta, 'seq'), '5');
  t.is(await replica.hget(keys.applied, 'seq'), '5');
  t.true((await master.pexpiretime('qsync-jobs:control:1')) > Date.now());
  t.is(await replica.hget('qsync:other:applied', 'seq'), '7');
  t.deepEqual(await master.keys('[ab]*'), ['after']);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

test('inside a Lua script, MOVE, RESTORE, a stored result, GEOADD, BITFIELD and a flush are logged as when sent alone', async (t) => {
  const pair = await replays(t, async (producer) => {
    await producer.rpush('src', '3', '1', '2');
    await producer.set('moved', 'v', 'EX', 100);
    await producer.set('gone', 'v');
    const script = `
      redis.call('FLUSHDB')
      redis.call('RPUSH', KEYS[1], '3', '1', '2')
      redis.call('SET', KEYS[2], 'v', 'EX', 100)
      redis.call('MOVE', KEYS[2], 6)
      redis.call('RESTORE', KEYS[4], 100000, redis.call('DUMP', KEYS[1]))
      redis.call('GEOADD', KEYS[5], 13.361389, 38.115556, 'Palermo')
      redis.call('GEORADIUS', KEYS[5], 13, 38, 100, 'km', 'STORE', KEYS[6])
      redis.call('BITFIELD', KEYS[7], 'SET', 'u8', 0, 200)
      return redis.call('SORT', KEYS[1], 'STORE', KEYS[3])`;
    t.is(await producer.eval(script, 7, 'src', 'moved', 'sorted', 'restored', 'geo', 'near', 'bits'), 3);
  });
  const replica = pair.replica.client();
  t.deepEqual(await replica.lrange('sorted', 0, -1), ['1', '2', '3']);
  t.is(await replica.exists('gone'), 0);
  t.is(await pair.replica.client(6).get('moved'), 'v');
});

test('a flush in the log touches every key of its db for verify, and stops a resync or repair that meets it', (t) => {
  const entry = (db: number, ...commands: string[][]) => ({ db, commands: commands.map((c) => c.map((a) => Buffer.from(a))) });
  t.is(flushedDbs(entry(3, ['set', 'k', 'v'], ['flushdb']) as never), 3);
  t.is(flushedDbs(entry(3, ['flushall'], ['set', 'k', 'v']) as never), 'all');
  t.is(flushedDbs(entry(3, ['set', 'k', 'v']) as never), undefined);
  t.throws(() => touchedKeys(0, [Buffer.from('flushall')]), { message: /FLUSHALL made during the run; run it again/ });
  t.deepEqual(touchedKeys(2, [Buffer.from('move'), Buffer.from('k'), Buffer.from('5')]), ['2\nk']);
});

test('SORT and GEORADIUS without STORE, BITFIELD with GET alone are reads: sent as they are, nothing logged', async (t) => {
  await replays(t, async (producer) => {
    await producer.rpush('l', '2', '1');
    await producer.geoadd('g', 1, 1, 'm');
    const seq = async () => Number(await producer.hget('qsync:default:meta', 'seq'));
    const before = await seq();
    t.deepEqual(await producer.sort('l'), ['1', '2']);
    t.deepEqual(await producer.call('SORT', 'l', 'BY', 'nosort', 'GET', '#'), ['2', '1']);
    t.deepEqual(await producer.georadius('g', 1, 1, 10, 'km'), ['m']);
    t.deepEqual(await producer.georadiusbymember('g', 'm', 10, 'km'), ['m']);
    t.deepEqual(await producer.bitfield('b', 'GET', 'u8', 0), [0]);
    t.deepEqual(await producer.call('SORT_RO', 'l', 'DESC'), ['2', '1']);
    t.deepEqual(await producer.call('BITFIELD_RO', 'b', 'GET', 'u8', 0), [0]);
    t.is(await seq(), before);
    t.is(await producer.exists('b'), 0);
    await t.throwsAsync(producer.sort('l', 'STORE', 'qsync:default:log'), { instanceOf: ReservedKeyError });
    await t.throwsAsync(producer.call('GEORADIUS', 'g', 1, 1, 10, 'km', 'STOREDIST', 'qsync:x'), { instanceOf: ReservedKeyError });
  });
});

test("under the documented producer ACL, a flush of the queue db keeps the control jobs' keys", async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const admin = pair.master.client();
  await admin.call('ACL', 'SETUSER', 'app', 'on', '>app-secret', '~app:*', '+get', ...aclRules('producer'));
  const app = createProducer(pair.master.client(0, { username: 'app', password: 'app-secret' }));
  await app.set('app:a', '1');
  await admin.set('qsync-jobs:control:1', 'job', 'EX', 100);
  t.is(await app.flushdb(), 'OK');
  t.deepEqual((await admin.keys('*')).sort(), ['qsync-jobs:control:1', 'qsync:default:log', 'qsync:default:meta']);
  t.true((await admin.pexpiretime('qsync-jobs:control:1')) > Date.now());
});

test('under mark-dirty, a stored result records its destination and a flush sends the queue to a full resync', async (t) => {
  const keys = new QueueKeys('qsync', 'default');
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const master = pair.master.client();
  const producer = createProducer(pair.master.client());
  await setLimits(master, keys, { maxEntries: 1, policy: 'mark-dirty' });
  await producer.rpush('src', 'b', 'a');
  t.is(await producer.sort('src', 'ALPHA', 'STORE', 'dst'), 2);
  await producer.zadd('z', 1, 'm');
  t.is(await producer.call('GEORADIUS', 'z', 0, 0, 20000, 'km', 'STORE', 'geo-dst'), 1);
  t.deepEqual((await master.smembers(keys.dirty)).sort(), ['0:dst', '0:geo-dst', '0:src', '0:z']);
  t.is(await master.hget(keys.meta, 'state'), 'repair-needed');
  t.is(await producer.flushdb(), 'OK');
  t.is(await master.hget(keys.meta, 'state'), 'resync-needed');
  t.is(await master.llen(keys.log), 1, 'the log kept its entry through the flush');
});
