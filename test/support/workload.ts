/**
 * A mixed workload of non-idempotent writes through the producer (INCR,
 * HINCRBY, INCRBYFLOAT, LPUSH, RPOP, SADD, SPOP, EXPIRE and MULTI groups of
 * them) in several dbs, and a ledger of what was written. Fault tests check
 * the replica against the ledger, not only against the master: a write lost
 * or applied twice shows as a counter off by one, a list value missing or
 * present twice, even where master and replica would agree.
 *
 * Writes whose fate is unknown (the connection broke with the write in
 * flight, as when the master is killed) may or may not have happened; the
 * ledger keeps them apart and allows either.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { createProducer } from '../../producer/index.js';
import type { RedisServer } from './redis-server.js';

/** A deterministic random source (mulberry32): the same seed gives the same choices. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * What a check found: `lost`, acknowledged effects missing (a lost write, or
 * a list pop applied twice, which looks the same); `doubled`, effects present
 * more often than written; `problems`, a line per key that does not match.
 */
export interface LedgerReport {
  lost: number;
  doubled: number;
  problems: string[];
}

/** What a number can be: `min` counts the writes surely done, `max` adds those of unknown fate. */
interface Bound {
  min: number;
  max: number;
}

/**
 * A list or set: values surely added, values that may have been, values
 * popped, and pops of unknown fate (which may have taken any value). Pops are
 * kept apart because a pop's reply can be booked before the push's.
 */
interface Bag {
  sure: Set<string>;
  maybe: Set<string>;
  popped: Set<string>;
  unknownPops: number;
}

export class Ledger {
  /** `db key` → counter (GET), `db key\tfield` → hash field (HGET), for integers and floats alike */
  readonly numbers = new Map<string, Bound>();
  readonly lists = new Map<string, Bag>();
  readonly sets = new Map<string, Bag>();
  /** `db key` of keys surely given an expiry (never removed: the workload never persists a key) */
  readonly expiring = new Set<string>();
  /** writes acknowledged, writes that failed (not sent, or refused), and failed writes whose fate is unknown */
  acknowledged = 0;
  failed = 0;
  unknown = 0;

  add(db: number, key: string, by: number, sure: boolean, field?: string): void {
    const id = field === undefined ? `${db} ${key}` : `${db} ${key}\t${field}`;
    const b = this.numbers.get(id) ?? { min: 0, max: 0 };
    if (sure) b.min += by;
    b.max += by;
    this.numbers.set(id, b);
  }

  put(kind: 'lists' | 'sets', db: number, key: string, values: string[], sure: boolean): void {
    const bag = this.bag(kind, db, key);
    for (const v of values) (sure ? bag.sure : bag.maybe).add(v);
  }

  /** A pop: `value` null means nothing was popped; undefined means the reply was lost. */
  pop(kind: 'lists' | 'sets', db: number, key: string, value: string | null | undefined): void {
    const bag = this.bag(kind, db, key);
    if (value === undefined) bag.unknownPops++;
    else if (value !== null) bag.popped.add(value);
  }

  private bag(kind: 'lists' | 'sets', db: number, key: string): Bag {
    const id = `${db} ${key}`;
    let bag = this[kind].get(id);
    if (!bag) {
      bag = { sure: new Set(), maybe: new Set(), popped: new Set(), unknownPops: 0 };
      this[kind].set(id, bag);
    }
    return bag;
  }

  /** Compares a server's data with the ledger. */
  async check(target: Pick<RedisServer, 'client'>): Promise<LedgerReport> {
    const report: LedgerReport = { lost: 0, doubled: 0, problems: [] };
    const clients = new Map<number, Redis>();
    const on = (id: string) => {
      const [db, rest] = [Number(id.slice(0, id.indexOf(' '))), id.slice(id.indexOf(' ') + 1)];
      if (!clients.has(db)) clients.set(db, target.client(db));
      return { c: clients.get(db)!, key: rest, name: `db${db} ${rest.replace('\t', ' ')}` };
    };
    try {
      for (const [id, b] of this.numbers) {
        const { c, key, name } = on(id);
        const [k, field] = key.split('\t');
        const raw = field === undefined ? await c.get(k) : await c.hget(k, field);
        const value = Number(raw ?? 0);
        if (value < b.min) report.lost += Math.ceil(b.min - value);
        if (value > b.max) report.doubled += Math.ceil(value - b.max);
        if (value < b.min || value > b.max) report.problems.push(`${name} is ${value}, written ${b.min === b.max ? b.min : `${b.min}..${b.max}`}`);
      }
      for (const kind of ['lists', 'sets'] as const) {
        for (const [id, bag] of this[kind]) {
          const { c, key, name } = on(id);
          const items = kind === 'lists' ? await c.lrange(key, 0, -1) : await c.smembers(key);
          // A value twice (or one never written) is a write applied twice; a
          // value still there after it was popped is a lost pop; a value
          // missing is a lost push or a pop applied twice.
          const seen = new Set<string>();
          const extra: string[] = [];
          let unpopped = 0;
          for (const v of items) {
            if (seen.has(v) || !(bag.sure.has(v) || bag.maybe.has(v))) extra.push(v);
            else if (bag.popped.has(v)) unpopped++;
            seen.add(v);
          }
          const expected = [...bag.sure].filter((v) => !bag.popped.has(v));
          const missing = expected.filter((v) => !seen.has(v)).length;
          const lost = Math.max(0, missing - bag.unknownPops) + unpopped;
          report.doubled += extra.length;
          report.lost += lost;
          if (extra.length || lost) {
            report.problems.push(
              `${name}: ${missing} of ${expected.length} missing, ${unpopped} popped but present, ${extra.length} extra (${extra.slice(0, 3).join(', ')})`,
            );
          }
        }
      }
      for (const id of this.expiring) {
        const { c, key, name } = on(id);
        const ttl = await c.pttl(key);
        if (ttl < 0) report.problems.push(`${name} has no expiry (PTTL ${ttl})`);
        if (ttl < 0) report.lost++;
      }
    } finally {
      for (const c of clients.values()) c.disconnect();
    }
    return report;
  }
}

export interface WorkloadOptions {
  /** the master; the workload makes its own connections, which reconnect after a restart */
  host?: string;
  port: number;
  /** @default 4 */
  writers?: number;
  /** @default [0, 3, 7] */
  dbs?: number[];
  /** all writers together; Infinity for as fast as they can. @default 1000 */
  opsPerSecond?: number;
  /** size of each pushed list value. @default 16 */
  payloadBytes?: number;
  /** @default 1 */
  seed?: number;
}

export interface Workload {
  readonly ledger: Ledger;
  /** Connects and starts the writers; resolves once they run. */
  start(): Promise<void>;
  /** Stops the writers after their current write and disconnects; resolves to the ledger. Safe to call more than once. */
  stop(): Promise<Ledger>;
  /** Latencies (ms) of the writes acknowledged since the last call. */
  takeLatencies(): number[];
}

/** A write: sends it, then books its reply into the ledger (`undefined` with sure = false when its fate is unknown). */
type Write = { send(): Promise<unknown>; book(reply: unknown, sure: boolean): void };

/** The connection never sent it (it was down), so it surely did not happen. */
const NOT_SENT = /Stream isn't writeable|enableOfflineQueue/;
/** Keys per kind per db: few, so that writers contend on the same keys. */
const KEYS = 4;
/** Expiries far beyond any test, so that nothing expires under a check. */
const EXPIRY_S = 3600;

export function createWorkload(options: WorkloadOptions): Workload {
  const { host = '127.0.0.1', port, writers = 4, dbs = [0, 3, 7], opsPerSecond = 1000, payloadBytes = 16, seed = 1 } = options;
  const ledger = new Ledger();
  const clients = dbs.map(
    (db) =>
      new Redis({
        host,
        port,
        db,
        lazyConnect: true,
        enableOfflineQueue: false,
        autoResendUnfulfilledCommands: false,
        maxRetriesPerRequest: 0,
        retryStrategy: () => 50,
      }),
  );
  for (const c of clients) c.on('error', () => {});
  const producers = clients.map((c) => createProducer(c));
  let latencies: number[] = [];
  let running = false;
  let loops: Promise<void>[] = [];
  let stopped: Promise<Ledger> | undefined;

  /** The writes, by weight; each picks its keys from `r`. Writer `w` makes values and members no other writer makes. */
  function writes(w: number): Array<[number, (p: Redis, db: number, r: () => number) => Write]> {
    let n = 0;
    const pick = (r: () => number, kind: string) => `${kind}:${Math.floor(r() * KEYS)}`;
    const value = () => `${w}:${n++}:`.padEnd(payloadBytes, 'x');
    const member = () => String(w * 10_000_000 + n++);
    const popped = (v: unknown, sure: boolean) => (sure ? (v as string | null) : undefined);
    const op = (send: () => Promise<unknown>, book: Write['book']): Write => ({ send, book });
    return [
      [
        18,
        (p, db, r) => {
          const k = pick(r, 'counter');
          return op(
            () => p.incr(k),
            (_, sure) => ledger.add(db, k, 1, sure),
          );
        },
      ],
      [
        14,
        (p, db, r) => {
          const [k, f, by] = [pick(r, 'hash'), `f${Math.floor(r() * 3)}`, 1 + Math.floor(r() * 5)];
          return op(
            () => p.hincrby(k, f, by),
            (_, sure) => ledger.add(db, k, by, sure, f),
          );
        },
      ],
      // Multiples of 1/4 add up exactly in binary floating point.
      [
        8,
        (p, db, r) => {
          const [k, by] = [pick(r, 'float'), (1 + Math.floor(r() * 6)) / 4];
          return op(
            () => p.incrbyfloat(k, by),
            (_, sure) => ledger.add(db, k, by, sure),
          );
        },
      ],
      [
        16,
        (p, db, r) => {
          const [k, v] = [pick(r, 'list'), value()];
          return op(
            () => p.lpush(k, v),
            (_, sure) => ledger.put('lists', db, k, [v], sure),
          );
        },
      ],
      [
        6,
        (p, db, r) => {
          const k = pick(r, 'list');
          return op(
            () => p.rpop(k),
            (v, sure) => ledger.pop('lists', db, k, popped(v, sure)),
          );
        },
      ],
      [
        8,
        (p, db, r) => {
          const [k, m] = [pick(r, 'set'), [member(), member(), member()]];
          return op(
            () => p.sadd(k, ...m),
            (_, sure) => ledger.put('sets', db, k, m, sure),
          );
        },
      ],
      [
        8,
        (p, db, r) => {
          const k = pick(r, 'set');
          return op(
            () => p.spop(k),
            (v, sure) => ledger.pop('sets', db, k, popped(v, sure)),
          );
        },
      ],
      [
        6,
        (p, db, r) => {
          const k = pick(r, 'counter');
          return op(
            () => p.expire(k, EXPIRY_S),
            (done, sure) => {
              if (sure && done === 1) ledger.expiring.add(`${db} ${k}`);
            },
          );
        },
      ],
      [
        18,
        (p, db, r) => {
          const [e, l, h, s, v] = [pick(r, 'expiring'), pick(r, 'list'), pick(r, 'hash'), pick(r, 'set'), value()];
          return op(
            () => p.multi().incr(e).expire(e, EXPIRY_S).lpush(l, v).hincrby(h, 'group', 1).spop(s).exec(),
            (reply, sure) => {
              ledger.add(db, e, 1, sure);
              if (sure) ledger.expiring.add(`${db} ${e}`);
              ledger.put('lists', db, l, [v], sure);
              ledger.add(db, h, 1, sure, 'group');
              ledger.pop('sets', db, s, popped(sure && (reply as [Error | null, unknown][])[4][1], sure));
            },
          );
        },
      ],
    ];
  }

  /** Sends a write and books it: done, not done (never sent), or of unknown fate. */
  async function attempt(write: Write): Promise<void> {
    const sent = performance.now();
    let reply: unknown;
    try {
      reply = await write.send();
    } catch (err) {
      ledger.failed++;
      if (!NOT_SENT.test((err as Error).message)) {
        ledger.unknown++;
        write.book(undefined, false);
      }
      await sleep(50); // the master is away: do not spin
      return;
    }
    latencies.push(performance.now() - sent);
    ledger.acknowledged++;
    write.book(reply, true);
  }

  async function writer(w: number): Promise<void> {
    const r = prng(seed * 1000 + w);
    const table = writes(w);
    const total = table.reduce((s, [weight]) => s + weight, 0);
    const interval = (writers * 1000) / opsPerSecond;
    let due = performance.now();
    while (running) {
      let roll = r() * total;
      const make = table.find(([weight]) => {
        roll -= weight;
        return roll < 0;
      })![1];
      const d = Math.floor(r() * dbs.length);
      await attempt(make(producers[d], dbs[d], r));
      due += interval;
      const now = performance.now();
      // After an outage, carry on at the rate instead of catching up in a burst.
      if (due < now - 1000) due = now;
      if (due > now) await sleep(due - now);
    }
  }

  return {
    ledger,
    async start() {
      await Promise.all(clients.map((c) => c.connect()));
      running = true;
      loops = Array.from({ length: writers }, (_, w) => writer(w));
    },
    stop() {
      running = false;
      stopped ??= Promise.all(loops).then(() => {
        for (const c of clients) c.disconnect();
        return ledger;
      });
      return stopped;
    },
    takeLatencies() {
      const taken = latencies;
      latencies = [];
      return taken;
    },
  };
}

/**
 * Multi-key writes through the producer between a few keys of db `db`
 * (SMOVE between sets `pool:0..7`, RENAME between `hot:*` counters, LMOVE
 * between `ring:*` lists), which a copy reaches at different times; runs until
 * stop(), which resolves to the number of writes.
 */
export function startMoves(master: Pick<RedisServer, 'client'>, db: number, seedNo: number): { stop(): Promise<number> } {
  const client = master.client(db);
  const p = createProducer(client);
  const r = prng(seedNo);
  let running = true;
  let n = 0;
  const pick = (kind: string) => `${kind}:${Math.floor(r() * 8)}`;
  const done = (async () => {
    while (running) {
      const roll = r();
      try {
        if (roll < 0.4) {
          const [from, to] = [pick('pool'), pick('pool')];
          const member = await client.srandmember(from);
          if (member) await p.smove(from, to, member);
        } else if (roll < 0.7) {
          await p.incr(pick('hot'));
          await p.rename(pick('hot'), pick('hot'));
        } else {
          await p.lpush(pick('ring'), String(n));
          await p.lmove(pick('ring'), pick('ring'), 'LEFT', 'RIGHT');
        }
      } catch (err) {
        if (!/no such key/i.test((err as Error).message)) throw err;
      }
      n++;
    }
    return n;
  })();
  done.catch(() => {}); // a test that fails early tears the servers down under the loop
  return {
    stop: async () => {
      running = false;
      return done;
    },
  };
}
