/**
 * Drain on loopback: how fast a SyncWorker empties a backlog onto the
 * replica, against the same writes sent to the replica as plain pipelines,
 * for a few window and batch sizes.
 */
import { WORKER_DEFAULTS, type WorkerOptions } from '../consumer/drain/worker.js';
import { startPair } from '../test/support/fixtures.js';
import { DrainRig, type DrainSample } from './support/drain-rig.js';
import { pipelinedSetCeiling, PIPELINED_SET_ARGS } from './support/redis-benchmark.js';
import type { Scenario } from './support/result.js';
import { backToBack, measured, median, ratio, type Row } from './support/stats.js';

const ENTRIES = 200_000;
const PIPELINE = 1000;
type Config = Required<Pick<WorkerOptions, 'window' | 'batchSize'>>;
/** The defaults, other windows at the default batch size, other batch sizes at the default window. */
const CONFIGS: Config[] = [
  { window: WORKER_DEFAULTS.window, batchSize: WORKER_DEFAULTS.batchSize },
  ...[1, 4, 16].filter((w) => w !== WORKER_DEFAULTS.window).map((window) => ({ window, batchSize: WORKER_DEFAULTS.batchSize })),
  ...[500, 2000].filter((b) => b !== WORKER_DEFAULTS.batchSize).map((batchSize) => ({ window: WORKER_DEFAULTS.window, batchSize })),
];

const isDefault = (c: Config) => c.window === WORKER_DEFAULTS.window && c.batchSize === WORKER_DEFAULTS.batchSize;
const name = (c: Config) => `window ${c.window}, batch ${c.batchSize}${isDefault(c) ? ' (defaults)' : ''}`;

/** Medians of the CPU microseconds per entry, by process. */
function cpuOf(samples: DrainSample[]): DrainSample['cpuUsPerEntry'] {
  const of = (side: keyof DrainSample['cpuUsPerEntry']) => Math.round(median(samples.map((s) => s.cpuUsPerEntry[side])) * 100) / 100;
  return { master: of('master'), replica: of('replica'), node: of('node') };
}

export const scenario: Scenario = {
  name: 'drain',
  title: 'Drain on loopback',
  method:
    `The master's log is filled with ${ENTRIES / 1000}k SETs through the producer while no worker runs. Each sample ` +
    "restores that log onto an idle, connected SyncWorker (in the bench's process) and times until the replica's watermark " +
    `reaches the last entry. The baseline sends the same ${ENTRIES / 1000}k writes (decoded from the log) to the emptied ` +
    `replica as plain commands in sequential ioredis pipelines of ${PIPELINE}, back to back with every worker sample ` +
    `(alternating which goes first). The ceiling is \`redis-benchmark ${PIPELINED_SET_ARGS.join(' ')}\` on the same replica, ` +
    'once per round. Settings run in a rotating order from round to round. CPU per entry comes from INFO commandstats ' +
    '(script calls on each server) and process.cpuUsage().',
  rounds: 5,
  async run(rounds) {
    const pair = await startPair();
    try {
      const rig = await DrainRig.fill(pair.master, pair.replica, ENTRIES);
      const ceiling: number[] = [];
      const base = CONFIGS.map(() => [] as DrainSample[]);
      const runs = CONFIGS.map(() => [] as DrainSample[]);
      for (let r = 0; r < rounds; r++) {
        ceiling.push(await pipelinedSetCeiling(pair.replica.port));
        for (let s = 0; s < CONFIGS.length; s++) {
          const i = (s + r) % CONFIGS.length;
          const [b, c] = await backToBack(
            (r + s) % 2 === 0,
            () => rig.pipelined(PIPELINE),
            () => rig.drain(CONFIGS[i]),
          );
          base[i].push(b);
          runs[i].push(c);
        }
      }
      const rate = (samples: DrainSample[]) => samples.map((s) => s.perSecond);
      const defaults = CONFIGS.findIndex(isDefault);
      const ratios = CONFIGS.map((c, i) =>
        ratio(`${name(c)} ÷ plain pipelines`, rate(runs[i]), rate(base[i]), isDefault(c) ? { op: '>=', value: 1 } : undefined),
      );
      const ranked = CONFIGS.map((_, i) => i).sort((a, b) => ratios[b].median - ratios[a].median);
      const [best, runnerUp] = ranked;
      const worst = ranked[ranked.length - 1];
      const clear = Math.min(...ratios[best].samples) > ratios[runnerUp].median;
      const rows: Row[] = [
        measured(`plain pipelines of ${PIPELINE} SETs to the replica`, 'writes/s', rate(base.flat())),
        measured('redis-benchmark pipelined SET ceiling', 'writes/s', ceiling),
        ...CONFIGS.map((c, i) => measured(`SyncWorker ${name(c)}`, 'entries/s', rate(runs[i]))),
        ...ratios,
        ratio(`${name(WORKER_DEFAULTS)} ÷ redis-benchmark ceiling`, rate(runs[defaults]), ceiling, { op: '>=', value: 0.3 }),
      ];
      const cpu = cpuOf(runs[defaults]);
      const plainCpu = cpuOf(base.flat());
      return {
        rows,
        notes: [
          `Highest median: ${name(CONFIGS[best])}, ${ratios[best].median.toFixed(2)}× the plain pipelines; ` +
            (clear
              ? `even its worst round beats the runner-up's median (${name(CONFIGS[runnerUp])}, ${ratios[runnerUp].median.toFixed(2)}×). `
              : `runner-up ${name(CONFIGS[runnerUp])}, ${ratios[runnerUp].median.toFixed(2)}×, with overlapping rounds, so that ranking is within this host's noise. `) +
            `Lowest: ${name(CONFIGS[worst])}, ${ratios[worst].median.toFixed(2)}×.`,
          `CPU per entry with the defaults (median): scripts on the master ${cpu.master} µs, apply script on the replica ${cpu.replica} µs, ` +
            `worker ${cpu.node} µs; wall time per entry ${(1e6 / median(rate(runs[defaults]))).toFixed(2)} µs. ` +
            `Plain pipelines: SET on the replica ${plainCpu.replica} µs, Node ${plainCpu.node} µs; wall ${(1e6 / median(rate(base.flat()))).toFixed(2)} µs.`,
        ],
        details: {
          entries: ENTRIES,
          cpuUsPerEntry: { plainPipelines: plainCpu, ...Object.fromEntries(CONFIGS.map((c, i) => [name(c), cpuOf(runs[i])])) },
        },
      };
    } finally {
      await pair.destroy();
    }
  },
};
