/**
 * Control jobs as `qsync jobs` shows them: the newest jobs of each state and
 * the schedules, as JSON or text for people; and schedules' intervals.
 */
import type { Queue } from 'bullmq';
import { jobType, jobView, type JobProgress, type JobView } from './runner.js';

export interface ScheduleView {
  id: string;
  type: string;
  everyMs: number | null;
  nextAt: number | null;
  runs: number;
  data: unknown;
}

const STATES = ['active', 'waiting', 'prioritized', 'delayed', 'completed', 'failed'] as const;

/** The newest jobs of each state (at most `limit` each, newest first) and the schedules. */
export async function listJobs(queue: Queue, limit = 20): Promise<{ jobs: JobView[]; schedules: ScheduleView[] }> {
  const jobs: JobView[] = [];
  for (const state of STATES) {
    for (const job of await queue.getJobs(state, 0, limit - 1, false)) if (job) jobs.push(jobView(job, state));
  }
  jobs.sort((a, b) => b.createdAt - a.createdAt);
  const schedules = (await queue.getJobSchedulers()).map((s) => ({
    id: s.key,
    type: s.name,
    everyMs: s.every ?? null,
    nextAt: s.next ?? null,
    runs: s.iterationCount ?? 0,
    data: s.template?.data ?? null,
  }));
  return { jobs, schedules };
}

/** Progress in words: a percentage for `{ done, total }`. */
export function showProgress(p: unknown): string {
  if (typeof p === 'number') return `${p}%`;
  const { done, total } = (p ?? {}) as Partial<JobProgress>;
  if (typeof done === 'number' && typeof total === 'number') return total > 0 ? `${Math.min(100, Math.floor((100 * done) / total))}%` : '-';
  return '-';
}

const UNITS: [string, number][] = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1000],
];

/** An interval as `--every` takes it. */
function interval(ms: number): string {
  const [name, size] = UNITS.find(([, size]) => ms % size === 0) ?? ['ms', 1];
  return `${ms / size}${name}`;
}

/** A job's outcome in words. */
export function describeOutcome(j: Pick<JobView, 'type' | 'state' | 'result' | 'failedReason'>): string {
  if (j.state === 'failed') return `failed: ${j.failedReason ?? 'unknown error'}`;
  if (j.state !== 'completed') return j.failedReason ? `last attempt failed: ${j.failedReason}` : '';
  const describe = jobType(j.type)?.describe;
  return describe ? describe(j.result) : (JSON.stringify(j.result)?.slice(0, 80) ?? '');
}

/** The text `qsync jobs` prints. */
export function formatJobs(where: string, { jobs, schedules }: { jobs: JobView[]; schedules: ScheduleView[] }): string {
  const lines = [`control jobs in ${where}`];
  if (jobs.length === 0) lines.push('  none');
  for (const j of jobs) {
    lines.push(
      `  ${j.id.padEnd(12)} ${j.type.padEnd(8)} ${j.state.padEnd(10)} ${showProgress(j.progress).padStart(4)}  attempt ${j.attemptsStarted}/${j.attempts}  ${new Date(j.createdAt).toISOString()}  ${describeOutcome(j)}`,
    );
  }
  lines.push('schedules');
  if (schedules.length === 0) lines.push('  none');
  for (const s of schedules) {
    lines.push(
      `  ${s.id.padEnd(12)} ${s.type.padEnd(8)} every ${s.everyMs === null ? '?' : interval(s.everyMs)}, next ${s.nextAt ? new Date(s.nextAt).toISOString() : '-'}, ${s.runs} runs`,
    );
  }
  return lines.join('\n');
}
