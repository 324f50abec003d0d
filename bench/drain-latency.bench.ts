/**
 * Drain over a slow link: the same drain as on loopback, with the worker's
 * replica connection going through a proxy that adds round-trip latency, as
 * a fraction of the direct loopback rate measured in the same round.
 */
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { startPair } from '../test/support/fixtures.js';
import { WORKER_DEFAULTS, type WorkerOptions } from '../consumer/drain/worker.js';
import { DrainRig } from './support/drain-rig.js';
import { startProxyProcess } from './support/proxy-process.js';
import type { Scenario } from './support/result.js';
import { backToBack, measured, median, ratio } from './support/stats.js';
import { connected } from './support/workload.js';

const ENTRIES = 200_000;
const TARGET_RTT = 50;
const PINGS = 5;

interface Setting {
  /** added round trip, ms; 0 shows what the proxy itself costs */
  rtt: number;
  /** worker options other than the defaults: other windows, to show what the window buys */
  worker: Partial<WorkerOptions>;
}

const SETTINGS: Setting[] = [
  ...[0, 1, 25, TARGET_RTT].map((rtt) => ({ rtt, worker: {} })),
  { rtt: TARGET_RTT, worker: { window: 8 } },
  { rtt: TARGET_RTT, worker: { window: 64 } },
];

/** Median time of PINGS PINGs. */
async function roundTrip(client: Redis): Promise<number> {
  const times: number[] = [];
  for (let p = 0; p < PINGS; p++) {
    const start = performance.now();
    await client.ping();
    times.push(performance.now() - start);
  }
  return median(times);
}

/**
 * A worker keeps at most window × batch entries in flight on the replica
 * link, so a round trip caps its rate at window × batch ÷ RTT.
 */
function boundNote(slow: number[][], rtt: number[][]): string {
  const i = SETTINGS.findIndex((s) => s.rtt === TARGET_RTT && isDefault(s));
  const inFlight = WORKER_DEFAULTS.window * WORKER_DEFAULTS.batchSize;
  const seen = median(rtt[i]);
  return (
    `At +${TARGET_RTT} ms the defaults keep at most ${WORKER_DEFAULTS.window} × ${WORKER_DEFAULTS.batchSize} = ${inFlight} entries in flight per ` +
    `round trip of ${seen.toFixed(1)} ms: at most ${Math.round(inFlight / (seen / 1000)).toLocaleString('en-US')} entries/s; ` +
    `measured ${Math.round(median(slow[i])).toLocaleString('en-US')}.`
  );
}

const label = (s: Setting) => `+${s.rtt} ms round trip${s.worker.window ? `, window ${s.worker.window}` : ''}`;
const isDefault = (s: Setting) => Object.keys(s.worker).length === 0;

export const scenario: Scenario = {
  name: 'drain-latency',
  title: 'Drain over a slow link',
  method:
    `The drain of the loopback scenario (${ENTRIES / 1000}k SETs restored onto an idle worker with default settings), with the ` +
    "worker's replica connection going through the fault proxy of test/support (in a child process), which delays each " +
    'direction by half the added round trip. The master link stays direct. Every setting is measured back to back with a ' +
    'direct drain (the baseline), alternating which goes first; other windows at the target round trip show what the ' +
    `window buys. The round trip actually seen is the median of ${PINGS} PINGs through the proxy (its timers have 1 ms ` +
    'resolution, so small settings add more than asked).',
  rounds: 5,
  async run(rounds) {
    const pair = await startPair();
    const proxy = await startProxyProcess(pair.replica.port);
    try {
      const rig = await DrainRig.fill(pair.master, pair.replica, ENTRIES);
      const viaProxy = await connected(pair.replica.client(0, { port: proxy.port }));
      const direct = SETTINGS.map(() => [] as number[]);
      const slow = SETTINGS.map(() => [] as number[]);
      const rtt = SETTINGS.map(() => [] as number[]);
      for (let r = 0; r < rounds; r++) {
        for (const [i, setting] of SETTINGS.entries()) {
          await proxy.setRoundTrip(setting.rtt);
          rtt[i].push(await roundTrip(viaProxy));
          const [d, s] = await backToBack(
            (r + i) % 2 === 0,
            () => rig.drain({}),
            () => rig.drain(setting.worker, proxy.port),
          );
          direct[i].push(d.perSecond);
          slow[i].push(s.perSecond);
        }
      }
      const target = (s: Setting) => (s.rtt === TARGET_RTT && isDefault(s) ? ({ op: '>=', value: 0.5 } as const) : undefined);
      return {
        rows: [
          measured('direct loopback (defaults)', 'entries/s', direct.flat()),
          ...SETTINGS.map((s, i) => measured(`through the proxy, ${label(s)}`, 'entries/s', slow[i])),
          ...SETTINGS.map((s, i) => ratio(`${label(s)} ÷ direct`, slow[i], direct[i], target(s))),
          ...SETTINGS.flatMap((s, i) => (isDefault(s) ? [measured(`PING round trip through the proxy at +${s.rtt} ms`, 'ms', rtt[i])] : [])),
        ],
        notes: [boundNote(slow, rtt)],
        details: { entries: ENTRIES },
      };
    } finally {
      await pair.destroy();
      await proxy.close();
    }
  },
};
