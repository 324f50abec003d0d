/**
 * Producer overhead: SETs through createProducer (each one also logged by the
 * log-write script) against the same SETs through a plain ioredis client,
 * with and without auto-pipelining; and a Lua script through the producer
 * (run in its wrapper, its writes logged) against the same script plain.
 */
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { startRedis } from '../test/support/redis-server.js';
import { startCluster } from '../test/support/redis-cluster.js';
import type { Scenario } from './support/result.js';
import { commandUsec, nodeCpu, SCRIPT_COMMANDS, usecOf } from './support/server-time.js';
import { measured, median, ratio, type Row } from './support/stats.js';
import { connected, key, runConcurrent, value, VALUE_BYTES, writeSets } from './support/workload.js';

const OPS = 50_000;
const CONCURRENCY = 64;
/** The value size of the second pair of rows: a value copied once more into the log costs more when it is big */
const LARGE = 1024;
/** A rate limiter's counter, as such libraries write it: the script of the script rows. */
const SCRIPT = "local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n";
const SCRIPT_OPS = OPS / 2;

type Counter = Redis & { hit(key: string, ttlMs: number): Promise<number> };

/** Samples of each contender: one unmeasured warm-up round, then `rounds` in a rotating order. */
async function rotatingRounds<C>(contenders: C[], rounds: number, sample: (c: C) => Promise<Sample>): Promise<Sample[][]> {
  for (const c of contenders) await sample(c);
  const samples = contenders.map(() => [] as Sample[]);
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < contenders.length; k++) {
      const i = (k + r) % contenders.length;
      samples[i].push(await sample(contenders[i]));
    }
  }
  return samples;
}

/** Masters of the cluster rows. */
const CLUSTER_MASTERS = 3;

/**
 * The producer on a Redis Cluster of CLUSTER_MASTERS masters against a plain
 * Cluster client: SETs of keys spread over every slot (about one script call
 * a write: a call holds one slot's writes) and of keys of one slot (one hash
 * tag: a tick's writes share a call, as on a standalone master).
 */
async function clusterRows(rounds: number): Promise<{ rows: Row[]; note: string }> {
  const cluster = await startCluster({ masters: CLUSTER_MASTERS });
  try {
    const masters = cluster.masters.map((m) => m.admin);
    const plain = cluster.client();
    const producer = createProducer(cluster.client());
    const contenders = [
      { label: `plain ioredis Cluster SET, ${CLUSTER_MASTERS} masters, keys over every slot`, client: plain, commands: ['set'], keyOf: key },
      {
        label: `createProducer on a ${CLUSTER_MASTERS}-master Cluster, keys over every slot`,
        client: producer,
        commands: SCRIPT_COMMANDS,
        keyOf: key,
      },
      {
        label: `createProducer on a ${CLUSTER_MASTERS}-master Cluster, keys of one slot`,
        client: producer,
        commands: SCRIPT_COMMANDS,
        keyOf: (i: number) => `{bench}:${i}`,
      },
    ];
    const sample = async (c: (typeof contenders)[number]): Promise<Sample> => {
      await Promise.all(masters.map(async (m) => m.flushall().then(() => m.config('RESETSTAT'))));
      const cpu = nodeCpu();
      const perSecond = await runConcurrent(OPS, CONCURRENCY, (i) => c.client.set(c.keyOf(i), value(i)));
      const nodeUs = cpu() / OPS;
      let serverUs = 0;
      for (const m of masters) serverUs += usecOf(await commandUsec(m), c.commands);
      return { perSecond, nodeUs, serverUs: serverUs / OPS };
    };
    const samples = await rotatingRounds(contenders, rounds, sample);
    const [base, spread, oneSlot] = samples;
    const perSecond = (of: Sample[]) => of.map((s) => s.perSecond);
    const us = (of: Sample[], side: 'serverUs' | 'nodeUs') => median(of.map((s) => s[side])).toFixed(2);
    return {
      rows: [
        ...contenders.map((c, i) => measured(c.label, 'ops/s', perSecond(samples[i]))),
        ratio('cluster producer ÷ plain Cluster client, keys over every slot', perSecond(spread), perSecond(base)),
        ratio('cluster producer, keys of one slot ÷ keys over every slot', perSecond(oneSlot), perSecond(spread)),
      ],
      note:
        `On a ${CLUSTER_MASTERS}-master cluster, CPU per write (median, the masters summed): redis-server ${us(base, 'serverUs')} µs for a plain SET, ` +
        `${us(spread, 'serverUs')} µs of log scripts with keys over every slot, ${us(oneSlot, 'serverUs')} µs with keys of one slot; ` +
        `Node ${us(base, 'nodeUs')} µs plain, ${us(spread, 'nodeUs')} µs and ${us(oneSlot, 'nodeUs')} µs through the producer.`,
    };
  } finally {
    await cluster.destroy();
  }
}

/** Calls of SCRIPT per second through a client that defined it. */
function hits(client: Counter): Promise<number> {
  return runConcurrent(SCRIPT_OPS, CONCURRENCY, (i) => client.hit(`rl:${i % 1000}`, 60_000));
}

interface Sample {
  perSecond: number;
  /** CPU microseconds per write in redis-server (the SET, or the script call) and in this Node process */
  serverUs: number;
  nodeUs: number;
}

interface Contender {
  label: string;
  client: Redis;
  /** what the server runs for one of its writes, for the CPU figures */
  serverCommands: string[];
  /** log entries one sample leaves */
  logged: number;
  /** bytes of each value */
  valueBytes: number;
}

export const scenario: Scenario = {
  name: 'producer-overhead',
  title: 'Producer overhead',
  method:
    `${OPS / 1000}k SETs of ${VALUE_BYTES} B values with ${CONCURRENCY} in flight from one Node process, through a plain ioredis client (the baseline), ` +
    'through a plain client with enableAutoPipelining (one socket write per tick, as the producer gathers the writes of a ' +
    'tick into script calls) and through createProducer, each on its own connection to the same fresh redis-server; ' +
    `then the same with ${LARGE} B values, plain and through createProducer. ` +
    'Every round measures the five on a flushed server in a rotating order; one unmeasured warm-up round comes first. ' +
    `Then ${SCRIPT_OPS / 1000}k calls of a rate limiter's Lua script (INCR, PEXPIRE on the first hit) defined with defineCommand, ` +
    'through a plain client and through createProducer (the script runs in its wrapper and its writes are logged), alternating. ' +
    `Last, on a local Redis Cluster of ${CLUSTER_MASTERS} masters, the same ${OPS / 1000}k SETs through a plain Cluster client and through ` +
    'createProducer, keys spread over every slot and keys of one slot (one hash tag), in a rotating order after a warm-up round.',
  rounds: 9,
  async run(rounds) {
    const server = await startRedis();
    try {
      const plain = await connected(server.client());
      const producer = createProducer(await connected(server.client()));
      const contenders: Contender[] = [
        { label: `plain ioredis SET, ${CONCURRENCY} in flight`, client: plain, serverCommands: ['set'], logged: 0, valueBytes: VALUE_BYTES },
        {
          label: 'plain ioredis SET with enableAutoPipelining',
          client: await connected(server.client(0, { enableAutoPipelining: true })),
          serverCommands: ['set'],
          logged: 0,
          valueBytes: VALUE_BYTES,
        },
        {
          label: 'createProducer SET (write + log entry)',
          client: producer,
          serverCommands: SCRIPT_COMMANDS,
          logged: OPS,
          valueBytes: VALUE_BYTES,
        },
        { label: `plain ioredis SET of ${LARGE} B values`, client: plain, serverCommands: ['set'], logged: 0, valueBytes: LARGE },
        { label: `createProducer SET of ${LARGE} B values`, client: producer, serverCommands: SCRIPT_COMMANDS, logged: OPS, valueBytes: LARGE },
      ];
      const sample = async (c: Contender): Promise<Sample> => {
        await plain.flushall();
        await plain.config('RESETSTAT');
        const cpu = nodeCpu();
        const perSecond = await writeSets(c.client, OPS, CONCURRENCY, c.valueBytes);
        const nodeUs = cpu() / OPS;
        const depth = await plain.llen('qsync:default:log');
        if (depth !== c.logged) throw new Error(`${depth} entries in the log after ${OPS} SETs through ${c.label}, expected ${c.logged}`);
        return { perSecond, nodeUs, serverUs: usecOf(await commandUsec(plain), c.serverCommands) / OPS };
      };
      const samples = await rotatingRounds(contenders, rounds, sample);
      const [base, auto, cand, largeBase, largeCand] = samples;
      const scripted = [plain, createProducer(await connected(server.client()))].map((c) => {
        c.defineCommand('hit', { numberOfKeys: 1, lua: SCRIPT });
        return c as Counter;
      });
      const scriptRuns: [number[], number[]] = [[], []];
      for (let r = 0; r <= rounds; r++) {
        for (const i of r % 2 === 0 ? [0, 1] : [1, 0]) {
          await plain.flushall();
          const perSecond = await hits(scripted[i]);
          if (r > 0) scriptRuns[i].push(perSecond);
        }
      }
      const us = (of: Sample[], side: 'serverUs' | 'nodeUs') => median(of.map((s) => s[side]));
      const perSecond = (of: Sample[]) => of.map((s) => s.perSecond);
      const onCluster = await clusterRows(rounds);
      return {
        rows: [
          ...contenders.map((c, i) => measured(c.label, 'ops/s', perSecond(samples[i]))),
          ratio('producer ÷ plain', perSecond(cand), perSecond(base), { op: '>=', value: 0.9 }),
          ratio('producer ÷ plain with enableAutoPipelining', perSecond(cand), perSecond(auto)),
          ratio(`producer ÷ plain, ${LARGE} B values`, perSecond(largeCand), perSecond(largeBase), { op: '>=', value: 0.9 }),
          measured(
            `log-write script, server time per logged SET of ${VALUE_BYTES} B (plain SET: ${us(base, 'serverUs').toFixed(2)} µs)`,
            'µs',
            cand.map((s) => s.serverUs),
            { op: '<=', value: 1.5 },
          ),
          measured('plain ioredis, a Lua script (defineCommand)', 'calls/s', scriptRuns[0]),
          measured('createProducer, the same script (wrapped, writes logged)', 'calls/s', scriptRuns[1]),
          ratio('script through the producer ÷ the same script plain', scriptRuns[1], scriptRuns[0]),
          ...onCluster.rows,
        ],
        notes: [
          `CPU per write (median): redis-server ${us(base, 'serverUs').toFixed(2)} µs for a plain SET, ` +
            `${us(auto, 'serverUs').toFixed(2)} µs auto-pipelined, ${us(cand, 'serverUs').toFixed(2)} µs of log-write script; ` +
            `Node ${us(base, 'nodeUs').toFixed(2)} µs plain, ${us(auto, 'nodeUs').toFixed(2)} µs auto-pipelined, ` +
            `${us(cand, 'nodeUs').toFixed(2)} µs through the producer. With ${LARGE} B values: redis-server ` +
            `${us(largeBase, 'serverUs').toFixed(2)} µs plain, ${us(largeCand, 'serverUs').toFixed(2)} µs of log-write script; ` +
            `Node ${us(largeBase, 'nodeUs').toFixed(2)} µs plain, ${us(largeCand, 'nodeUs').toFixed(2)} µs through the producer.`,
          onCluster.note,
        ],
        details: { samples: Object.fromEntries(contenders.map((c, i) => [c.label, samples[i]])) },
      };
    } finally {
      await server.destroy();
    }
  },
};
