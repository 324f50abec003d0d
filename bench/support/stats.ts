/**
 * The few statistics the benchmarks report: medians of repeated samples,
 * percentiles of latency distributions, and rows for the result tables.
 */

/** The middle value (mean of the two middle ones for an even count). */
export function median(values: number[]): number {
  if (values.length === 0) throw new RangeError('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Nearest-rank percentile (p in 0..100) of values sorted ascending. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) throw new RangeError('percentile of no values');
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** A bound a figure must meet, e.g. `{ op: '>=', value: 0.9 }`. */
export interface Target {
  op: '>=' | '<=';
  value: number;
}

/** One line of a scenario's table: a figure measured several times, its median, and its target if it has one. */
export interface Row {
  label: string;
  unit: string;
  samples: number[];
  median: number;
  target?: Target;
  pass?: boolean;
}

function meets(value: number, target: Target): boolean {
  return target.op === '>=' ? value >= target.value : value <= target.value;
}

/** A row of raw samples; with a target, the median decides pass or fail. */
export function measured(label: string, unit: string, samples: number[], target?: Target): Row {
  const m = median(samples);
  return target ? { label, unit, samples, median: m, target, pass: meets(m, target) } : { label, unit, samples, median: m };
}

/**
 * A ratio row: candidate ÷ baseline round by round (the two were measured
 * back to back, so drift of the shared machine cancels within a round), and
 * the median of those per-round ratios.
 */
export function ratio(label: string, candidate: number[], baseline: number[], target?: Target): Row {
  if (candidate.length !== baseline.length)
    throw new RangeError(`${label}: ${candidate.length} candidate samples for ${baseline.length} baseline samples`);
  return measured(
    label,
    'x',
    candidate.map((c, i) => c / baseline[i]),
    target,
  );
}

/**
 * Measures a baseline and a candidate back to back, in the order given, so
 * that alternating the order from one round to the next cancels drift.
 * Resolves to [baseline, candidate].
 */
export async function backToBack<T>(baselineFirst: boolean, baseline: () => Promise<T>, candidate: () => Promise<T>): Promise<[T, T]> {
  if (baselineFirst) {
    const b = await baseline();
    return [b, await candidate()];
  }
  const c = await candidate();
  return [await baseline(), c];
}
