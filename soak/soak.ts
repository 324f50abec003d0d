/**
 * `npm run soak -- [--minutes N] [--seed N]`
 *
 * Runs the fault scenarios in a loop with random sizes and timing for N
 * minutes (default 5), against real redis-server processes on this machine,
 * then prints the faults injected and what was written, applied, lost,
 * applied twice and left differing. Exits 1 if anything was lost, doubled or
 * differs, or a scenario's expectation failed.
 */
import { parseArgs } from 'node:util';
import { failed, soak, tables } from './loop.js';

function usage(message: string): never {
  console.error(`${message}\nusage: npm run soak -- [--minutes N] [--seed N]`);
  process.exit(2);
}

let values: { minutes?: string; seed?: string };
try {
  ({ values } = parseArgs({ options: { minutes: { type: 'string' }, seed: { type: 'string' } } }));
} catch (err) {
  usage((err as Error).message);
}
const minutes = Number(values.minutes ?? 5);
if (!(minutes > 0)) usage(`--minutes must be a positive number, got '${values.minutes}'`);
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
if (!Number.isInteger(seed)) usage(`--seed must be a whole number, got '${values.seed}'`);

console.error(`soak: ${minutes} min, seed ${seed}`);
const started = Date.now();
const outcomes = await soak({
  seconds: minutes * 60,
  seed,
  onOutcome: (o) => {
    const faults = Object.entries(o.faults)
      .map(([k, n]) => `${n}× ${k}`)
      .join(', ');
    const at = ((Date.now() - started) / 1000).toFixed(0);
    console.error(
      `[${at} s] ${o.scenario} (seed ${o.seed}): ${faults}; ${o.written} written, ${o.applied} applied, ${o.lost} lost, ${o.doubled} doubled, ${o.differing.length} differing`,
    );
    for (const v of o.violations) console.error(`  FAILED: ${v}`);
  },
});
console.log(tables(outcomes));
const bad = failed(outcomes);
console.log(
  `\n${outcomes.length} runs in ${((Date.now() - started) / 60_000).toFixed(1)} min, seed ${seed}: ${bad ? 'FAILED' : 'nothing lost, nothing applied twice, replicas equal'}`,
);
process.exit(bad ? 1 : 0);
