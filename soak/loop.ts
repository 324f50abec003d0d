/**
 * The soak loop: runs the fault scenarios one after another with random sizes
 * and timing until the time is up, and sums up what they found in tables.
 */
import { performance } from 'node:perf_hooks';
import { prng } from '../test/support/workload.js';
import type { Outcome } from './rig.js';
import { SCENARIOS, runScenario } from './scenarios.js';

export interface SoakOptions {
  seconds: number;
  seed: number;
  /** called after each scenario run */
  onOutcome?: (o: Outcome) => void;
}

/** Runs scenarios in turn, from a random one, until `seconds` have passed (the last run is finished, not cut short). */
export async function soak({ seconds, seed, onOutcome }: SoakOptions): Promise<Outcome[]> {
  const random = prng(seed);
  const outcomes: Outcome[] = [];
  const deadline = performance.now() + seconds * 1000;
  for (let i = Math.floor(random() * SCENARIOS.length); performance.now() < deadline; i++) {
    const scenario = SCENARIOS[i % SCENARIOS.length];
    const outcome = await runScenario(scenario, { seed: Math.floor(random() * 2 ** 31), size: scenario.randomSize(random) });
    onOutcome?.(outcome);
    outcomes.push(outcome);
  }
  return outcomes;
}

/** True if any run lost, doubled or differed, or broke an expectation. */
export function failed(outcomes: Outcome[]): boolean {
  return outcomes.some((o) => o.lost || o.doubled || o.differing.length || o.violations.length || o.applied !== o.written);
}

function markdown(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** Two markdown tables: faults injected by kind, and per scenario what was written, applied, lost, doubled and differing. */
export function tables(outcomes: Outcome[]): string {
  const faults = new Map<string, number>();
  for (const o of outcomes) for (const [kind, n] of Object.entries(o.faults)) faults.set(kind, (faults.get(kind) ?? 0) + n);
  const figures = ['written', 'applied', 'lost', 'doubled'] as const;
  const byScenario = new Map<string, { runs: number; differing: number; failedChecks: number } & Record<(typeof figures)[number], number>>();
  for (const o of outcomes) {
    const row = byScenario.get(o.scenario) ?? { runs: 0, written: 0, applied: 0, lost: 0, doubled: 0, differing: 0, failedChecks: 0 };
    row.runs++;
    for (const f of figures) row[f] += o[f];
    row.differing += o.differing.length;
    row.failedChecks += o.violations.length;
    byScenario.set(o.scenario, row);
  }
  const rows = [...byScenario].map(([name, r]) => [name, r.runs, r.written, r.applied, r.lost, r.doubled, r.differing, r.failedChecks]);
  const total = (col: number) => rows.reduce((s, r) => s + Number(r[col]), 0);
  rows.push(['**total**', ...[1, 2, 3, 4, 5, 6, 7].map(total)]);
  return [
    markdown(
      ['fault injected', 'times'],
      [...faults].sort((a, b) => b[1] - a[1]),
    ),
    '',
    markdown(['scenario', 'runs', 'entries written', 'applied', 'lost', 'applied twice', 'keys differing', 'failed checks'], rows),
  ].join('\n');
}
