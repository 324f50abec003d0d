/**
 * Producer overhead: SETs through createProducer (each one also logged by the
 * log-write script) against the same SETs through a plain ioredis client.
 */
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { startRedis } from '../test/support/redis-server.js';
import type { Scenario } from './support/result.js';
import { commandUsec, nodeCpu, SCRIPT_COMMANDS, usecOf } from './support/server-time.js';
import { backToBack, measured, median, ratio } from './support/stats.js';
import { connected, writeSets } from './support/workload.js';

const OPS = 50_000;
const CONCURRENCY = 64;

interface Sample {
  perSecond: number;
  /** CPU microseconds per write in redis-server (the SET, or the script call) and in this Node process */
  serverUs: number;
  nodeUs: number;
}

export const scenario: Scenario = {
  name: 'producer-overhead',
  title: 'Producer overhead',
  method:
    `${OPS / 1000}k SETs with ${CONCURRENCY} in flight from one Node process, through a plain ioredis client (baseline) ` +
    'and through createProducer on a second client of the same fresh redis-server (candidate). Every round measures ' +
    'both back to back, alternating which goes first, on a flushed server; one unmeasured warm-up round comes first.',
  rounds: 9,
  async run(rounds) {
    const server = await startRedis();
    try {
      const plain = await connected(server.client());
      const producer = createProducer(await connected(server.client()));
      const sample = async (client: Redis, serverCommands: string[], logged: number): Promise<Sample> => {
        await plain.flushall();
        await plain.config('RESETSTAT');
        const cpu = nodeCpu();
        const perSecond = await writeSets(client, OPS, CONCURRENCY);
        const nodeUs = cpu() / OPS;
        const depth = await plain.llen('qsync:default:log');
        if (depth !== logged) throw new Error(`${depth} entries in the log after ${OPS} SETs, expected ${logged}`);
        return { perSecond, nodeUs, serverUs: usecOf(await commandUsec(plain), serverCommands) / OPS };
      };
      const baseline = () => sample(plain, ['set'], 0);
      const candidate = () => sample(producer, SCRIPT_COMMANDS, OPS);
      await baseline();
      await candidate();
      const base: Sample[] = [];
      const cand: Sample[] = [];
      for (let r = 0; r < rounds; r++) {
        const [b, c] = await backToBack(r % 2 === 0, baseline, candidate);
        base.push(b);
        cand.push(c);
      }
      const us = (samples: Sample[], side: 'serverUs' | 'nodeUs') => median(samples.map((s) => s[side]));
      const perSecond = (samples: Sample[]) => samples.map((s) => s.perSecond);
      return {
        rows: [
          measured(`plain ioredis SET, ${CONCURRENCY} in flight`, 'ops/s', perSecond(base)),
          measured('createProducer SET (write + log entry)', 'ops/s', perSecond(cand)),
          ratio('producer ÷ plain', perSecond(cand), perSecond(base), { op: '>=', value: 0.9 }),
        ],
        notes: [
          `CPU per write (median): redis-server ${us(base, 'serverUs').toFixed(2)} µs for a plain SET and ` +
            `${us(cand, 'serverUs').toFixed(2)} µs for the log-write script call (${(us(cand, 'serverUs') / us(base, 'serverUs')).toFixed(1)}×); ` +
            `Node ${us(base, 'nodeUs').toFixed(2)} µs plain and ${us(cand, 'nodeUs').toFixed(2)} µs through the producer. ` +
            'Node and redis-server share two cores here, so the server-side cost of the script sets the producer\'s rate.',
        ],
        details: { samples: { plain: base, producer: cand } },
      };
    } finally {
      await server.destroy();
    }
  },
};
