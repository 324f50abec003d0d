/**
 * `npm run bench [-- <scenario>...] [--rounds N]`
 *
 * Runs the named scenarios (all by default) one after the other, writes
 * bench/results/<scenario>.json for each, then regenerates docs/benchmarks.md
 * from every result file.
 */
import { performance } from 'node:perf_hooks';
import { scenario as producerOverhead } from './producer-overhead.bench.js';
import { scenario as drain } from './drain.bench.js';
import { scenario as drainLatency } from './drain-latency.bench.js';
import { scenario as lag } from './lag.bench.js';
import { scenario as memory } from './memory.bench.js';
import { scenario as resync } from './resync.bench.js';
import { scenario as catchUp } from './catch-up.bench.js';
import { scenario as rejoin } from './rejoin.bench.js';
import { scenario as replicas } from './replicas.bench.js';
import { scenario as cluster } from './cluster.bench.js';
import { writeReport } from './report.js';
import { environment, loadAverage, verdictOf, writeResult, type Outcome, type Scenario } from './support/result.js';

const SCENARIOS: Scenario[] = [producerOverhead, drain, drainLatency, lag, memory, resync, catchUp, rejoin, replicas, cluster];

function usage(message: string): never {
  console.error(`${message}\nusage: npm run bench [-- <scenario>...] [--rounds N]\nscenarios: ${SCENARIOS.map((s) => s.name).join(', ')}`);
  process.exit(2);
}

function parseArgs(argv: string[]): { chosen: Scenario[]; rounds?: number } {
  const chosen: Scenario[] = [];
  let rounds: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--rounds') {
      rounds = Number(argv[++i]);
      if (!Number.isInteger(rounds) || rounds < 1) usage(`--rounds must be a whole number from 1, got '${argv[i]}'`);
      continue;
    }
    const found = SCENARIOS.find((s) => s.name === argv[i]);
    if (!found) usage(`unknown scenario '${argv[i]}'`);
    chosen.push(found);
  }
  return { chosen: chosen.length ? chosen : SCENARIOS, rounds };
}

const { chosen, rounds } = parseArgs(process.argv.slice(2));
const started = performance.now();
const crashed: string[] = [];
for (const s of chosen) {
  const n = rounds ?? s.rounds;
  console.log(`${s.name}: ${n} round${n === 1 ? '' : 's'}…`);
  const env = environment();
  const t0 = performance.now();
  let outcome: Outcome;
  try {
    outcome = await s.run(n);
  } catch (err) {
    // One broken scenario keeps its last result file; the others still run and the page is still rebuilt.
    console.error(`  ${s.name} failed: ${(err as Error).stack ?? String(err)}`);
    crashed.push(s.name);
    continue;
  }
  const result = {
    scenario: s.name,
    title: s.title,
    method: s.method,
    command: `npm run bench -- ${s.name}${rounds ? ` --rounds ${rounds}` : ''}`,
    date: new Date().toISOString(),
    loadAverageAtEnd: loadAverage(),
    rounds: n,
    durationSeconds: Math.round((performance.now() - t0) / 100) / 10,
    ...env,
    ...outcome,
    verdict: verdictOf(outcome),
  };
  const file = writeResult(result);
  for (const row of outcome.rows) {
    const verdict = row.pass === undefined ? '' : row.pass ? '  pass' : '  FAIL';
    console.log(`  ${row.label}: ${row.median.toPrecision(4)} ${row.unit}${verdict}`);
  }
  for (const note of outcome.notes ?? []) console.log(`  ${note}`);
  console.log(`  ${result.verdict} (${result.durationSeconds} s), wrote ${file}`);
}
console.log(`wrote ${writeReport()} (${Math.round((performance.now() - started) / 1000)} s in all)`);
if (crashed.length) {
  console.error(`failed: ${crashed.join(', ')} (their results are from an earlier run, if any)`);
  process.exitCode = 1;
}
