/**
 * Sizes and durations as every flag takes them: a whole number with an
 * optional unit. A size is in bytes, or k, m, g (1000s) or kb, mb, gb
 * (1024s) as in redis.conf; a duration is in ms, or ms, s, m, h, d. A plain
 * number keeps its flag's own unit (bytes for a size, ms for a duration), so
 * `--lease-ms 10000` and `--lease-ms 10s` say the same.
 */
import { ConfigError } from './errors.js';

const SIZES: Record<string, number> = { '': 1, b: 1, k: 1000, kb: 1024, m: 1000 ** 2, mb: 1024 ** 2, g: 1000 ** 3, gb: 1024 ** 3 };
const DURATIONS: Record<string, number> = { '': 1, ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

interface Range {
  min?: number;
  max?: number;
}

function parse(
  value: string | number,
  flag: string,
  units: Record<string, number>,
  what: string,
  { min = 0, max = Number.MAX_SAFE_INTEGER }: Range,
): number {
  const m = /^(\d+)\s*([a-z]*)$/i.exec(String(value).trim());
  const unit = m ? units[m[2].toLowerCase()] : undefined;
  const n = m && unit ? Number(m[1]) * unit : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    const range =
      max !== Number.MAX_SAFE_INTEGER ? `, from ${format(min, units)} to ${format(max, units)}` : min > 0 ? `, at least ${format(min, units)}` : '';
    throw new ConfigError(`qsync: ${flag} must be ${what}${range}, got '${value}'`);
  }
  return n;
}

/** The units messages use, largest first. */
const SHOWN = new Map<Record<string, number>, string[]>([
  [SIZES, ['gb', 'mb', 'kb', 'b']],
  [DURATIONS, ['d', 'h', 'm', 's', 'ms']],
]);

/** n in the largest unit that divides it, for messages: 1048576 -> 1mb, 30000 -> 30s. */
function format(n: number, units: Record<string, number>): string {
  const name = SHOWN.get(units)!.find((u) => n % units[u] === 0 && n >= units[u]) ?? SHOWN.get(units)!.at(-1)!;
  return `${n / units[name]}${name}`;
}

/** A size flag in bytes: `1048576`, `1mb`, `64m`. */
export function sizeOption(value: string | number | undefined, flag: string, fallback: number, range: Range = {}): number {
  if (value === undefined || value === '') return fallback;
  return parse(value, flag, SIZES, 'a whole number of bytes, optionally with a unit (kb, mb, gb, or k, m, g for 1000s)', range);
}

/** A duration flag in ms: `10000`, `10s`, `15m`, `6h`, `1d`. */
export function durationOption(value: string | number | undefined, flag: string, fallback: number, range: Range = {}): number {
  if (value === undefined || value === '') return fallback;
  return parse(value, flag, DURATIONS, 'a whole number of ms, optionally with a unit (ms, s, m, h, d)', range);
}

/** A duration as the flags take it, in its largest whole unit: 30000 -> 30s. */
export function durationText(ms: number): string {
  return format(ms, DURATIONS);
}
