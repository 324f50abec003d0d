/**
 * The result of one scenario as stored in `bench/results/<scenario>.json`,
 * and the machine and versions it was measured on. bench/report.ts turns
 * these files into docs/benchmarks.md.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Row } from './stats.js';

export const RESULTS_DIR = fileURLToPath(new URL('../results/', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** One `bench/<name>.bench.ts` file's export. */
export interface Scenario {
  /** the file name without `.bench.ts`, also the name on the command line */
  name: string;
  title: string;
  /** how it is measured, in a few sentences for the docs */
  method: string;
  /** how many times each figure is measured unless `--rounds` says otherwise */
  rounds: number;
  run(rounds: number): Promise<Outcome>;
}

/** What a scenario's run() returns. */
export interface Outcome {
  rows: Row[];
  /** label of the row the summary quotes; by default the first row with a target */
  headline?: string;
  /** observations worth a sentence in the docs (computed, never hand-written figures) */
  notes?: string[];
  /** anything else measured, for whoever digs into the JSON */
  details?: Record<string, unknown>;
}

export interface Environment {
  machine: { cpus: number; cpuModel: string; memoryGiB: number; os: string; loadAverage: number[] };
  versions: { node: string; redis: string; ioredis: string; qsync: string };
}

export interface ScenarioResult extends Outcome, Environment {
  scenario: string;
  title: string;
  method: string;
  /** the command that reproduces this file */
  command: string;
  date: string;
  /** the 1, 5 and 15 minute load averages when the scenario ended (machine.loadAverage: when it started) */
  loadAverageAtEnd: number[];
  rounds: number;
  durationSeconds: number;
  verdict: 'pass' | 'fail' | 'informational';
}

function redisVersion(): string {
  const bin = process.env.QSYNC_REDIS_SERVER || 'redis-server';
  const out = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout ?? '';
  return /v=(\S+)/.exec(out)?.[1] ?? 'unknown';
}

function ioredisVersion(): string {
  return (createRequire(import.meta.url)('ioredis/package.json') as { version: string }).version;
}

/** The commit measured, marked when the product's sources differ from it. */
function qsyncVersion(): string {
  const git = (...args: string[]) => spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' }).stdout?.trim() ?? '';
  const commit = git('rev-parse', '--short', 'HEAD') || 'unknown';
  const dirty = git('status', '--porcelain', '--', 'producer', 'consumer', 'shared', 'index.ts') !== '';
  return dirty ? `${commit} with uncommitted changes` : commit;
}

/** The 1, 5 and 15 minute load averages: above the number of cores, processes were waiting for CPU. */
export function loadAverage(): number[] {
  return os.loadavg().map((l) => Math.round(l * 100) / 100);
}

/** The machine as it is now (the load average tells how busy the shared host was). */
export function environment(): Environment {
  const cpus = os.cpus();
  return {
    machine: {
      cpus: cpus.length,
      cpuModel: cpus[0]?.model.trim() ?? 'unknown',
      memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
      os: `${os.type()} ${os.release()} ${os.arch()}`,
      loadAverage: loadAverage(),
    },
    versions: { node: process.version.slice(1), redis: redisVersion(), ioredis: ioredisVersion(), qsync: qsyncVersion() },
  };
}

/** A scenario passes when every row with a target meets it. */
export function verdictOf(outcome: Outcome): ScenarioResult['verdict'] {
  const judged = outcome.rows.filter((r) => r.pass !== undefined);
  if (judged.length === 0) return 'informational';
  return judged.every((r) => r.pass) ? 'pass' : 'fail';
}

/** Writes bench/results/<scenario>.json; returns its path. */
export function writeResult(result: ScenarioResult): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${result.scenario}.json`);
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  return path.relative(process.cwd(), file);
}
