/**
 * What a verification found, in the forms people and tools read: the result
 * object, a text summary, the `--report` file, and the last result kept on
 * the master (`<prefix>:<queue>:verify`) for `qsync status` and metrics.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import type { Redis } from 'ioredis';
import type { QueueKeys } from '../../shared/keys.js';
import { ConfigError } from '../../shared/errors.js';
import { DIFF_KINDS, type DiffKind, type KeyDiff, type KeySide } from './compare.js';

export type VerifyMode = 'full' | 'sample' | 'recent';
export const VERIFY_MODES: readonly VerifyMode[] = ['full', 'sample', 'recent'];

/** A difference kind, or a key that still differed when the consumer had not applied the entries touching it in time. */
export type ReportKind = DiffKind | 'in-flight';

/** One key that differs, as reported. */
export interface Difference {
  db: number;
  /** the key as text when printable, else its bytes in hex */
  key: string;
  encoding: 'text' | 'hex';
  kind: ReportKind;
  /** for 'in-flight': how the key differed */
  found?: DiffKind;
  master: KeySide;
  replica: KeySide;
}

export interface VerifyResult {
  mode: VerifyMode;
  /** ms since the epoch */
  startedAt: number;
  finishedAt: number;
  /** dbs that held keys on either side */
  dbs: number[];
  keysChecked: number;
  /** keys that differ (in flight not counted) */
  differences: number;
  /** keys that differed while entries touching them waited in the queue past the timeout */
  inFlight: number;
  /**
   * why the replica needs a resync, when it did during the run: entries still
   * queued will then never be applied, and keys they touch count as differences
   */
  resyncNeeded?: string;
  byKind: Record<ReportKind, number>;
  /** the first differences found, at most EXAMPLES */
  examples: Difference[];
}

/** How many differences a result carries (all of them go to the report file). */
export const EXAMPLES = 100;

export function emptyCounts(): Record<ReportKind, number> {
  return Object.fromEntries([...DIFF_KINDS, 'in-flight'].map((k) => [k, 0])) as Record<ReportKind, number>;
}

/** A new result of a verification in `mode` starting now. */
export function emptyResult(mode: VerifyMode): VerifyResult {
  const now = Date.now();
  return { mode, startedAt: now, finishedAt: now, dbs: [], keysChecked: 0, differences: 0, inFlight: 0, byKind: emptyCounts(), examples: [] };
}

function printable(key: Buffer): boolean {
  return /^[\x20-\x7e]*$/.test(key.toString('latin1'));
}

/** Counts a decided difference in the result (the first EXAMPLES as examples) and returns it as reports show it. */
export function recordDifference(result: VerifyResult, db: number, { key, kind, master, replica }: KeyDiff, inFlight: boolean): Difference {
  const text = printable(key);
  const d: Difference = {
    db,
    key: text ? key.toString('latin1') : key.toString('hex'),
    encoding: text ? 'text' : 'hex',
    kind: inFlight ? 'in-flight' : kind,
    ...(inFlight ? { found: kind } : {}),
    master,
    replica,
  };
  result.byKind[d.kind]++;
  if (inFlight) result.inFlight++;
  else result.differences++;
  if (result.examples.length < EXAMPLES) result.examples.push(d);
  return d;
}

/** A key for people: as text when printable, else 0x and hex. */
export function showKey(d: Pick<Difference, 'key' | 'encoding'>): string {
  return d.encoding === 'text' ? d.key : `0x${d.key}`;
}

function showSide(s: KeySide): string {
  if (s.type === 'none') return 'none';
  const size = s.size === undefined || s.size === null ? '' : ` ${s.size}`;
  return `${s.type}${size}${s.expireAt === null ? '' : ` expires ${new Date(s.expireAt).toISOString()}`}`;
}

/** The summary `qsync verify` prints. */
export function formatResult(r: VerifyResult, shown = 20): string {
  const lines = [
    `verify ${r.mode}: ${r.keysChecked} keys checked in ${r.dbs.length ? `db ${r.dbs.join(', ')}` : 'no db (both empty)'} (${((r.finishedAt - r.startedAt) / 1000).toFixed(1)} s)`,
    ...(Object.entries(r.byKind) as [ReportKind, number][]).map(([k, n]) => `  ${k.padEnd(20)}${n}`),
  ];
  const keys = (n: number) => (n === 1 ? '1 key' : `${n} keys`);
  if (r.differences > 0) lines.push(`${keys(r.differences)} ${r.differences === 1 ? 'differs' : 'differ'}`);
  if (r.inFlight > 0)
    lines.push(`${keys(r.inFlight)} still differed when the wait for the consumer ran out, with entries touching them still queued (in flight)`);
  if (r.resyncNeeded)
    lines.push(
      `the replica needs a resync (${r.resyncNeeded}): the entries still queued will never be applied, so the keys they touch count as differences (qsync resync)`,
    );
  if (r.differences + r.inFlight === 0) lines.push('equal');
  for (const d of r.examples.slice(0, shown)) {
    lines.push(
      `  db${d.db} ${showKey(d)}  ${d.kind}${d.found ? ` (${d.found})` : ''}  master: ${showSide(d.master)}  replica: ${showSide(d.replica)}`,
    );
  }
  const hidden = r.differences + r.inFlight - Math.min(shown, r.examples.length);
  if (hidden > 0) lines.push(`  ... and ${hidden} more (--report FILE lists them)`);
  return lines.join('\n');
}

/**
 * The `--report` file: JSON `{"differences": [...], "summary": {...}}`,
 * written as differences are found, so that memory does not grow with them.
 */
export class ReportFile {
  private readonly fd: number;
  private count = 0;

  constructor(readonly path: string) {
    try {
      this.fd = openSync(path, 'w');
    } catch (err) {
      throw new ConfigError(`qsync: cannot write --report '${path}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    writeSync(this.fd, '{"differences": [\n');
  }

  add(d: Difference): void {
    writeSync(this.fd, `${this.count++ ? ',\n' : ''}  ${JSON.stringify(d)}`);
  }

  finish(summary: Omit<VerifyResult, 'examples'> & { truncated?: boolean }): void {
    writeSync(this.fd, `\n],\n"summary": ${JSON.stringify(summary, null, 2)}\n}\n`);
    closeSync(this.fd);
  }
}

/** The last verification of a queue, as `qsync status` shows it. */
export interface LastVerify {
  /** when it finished, ms since the epoch */
  at: number;
  mode: VerifyMode;
  keysChecked: number;
  differences: number;
  inFlight: number;
  byKind: Record<ReportKind, number>;
  durationMs: number;
  /** 'cli', or the control job that ran it */
  source: string;
}

/** Keeps a result as the queue's last verification. */
export async function storeLastVerify(master: Redis, keys: QueueKeys, r: VerifyResult, source: string): Promise<void> {
  await master.hset(keys.verify, {
    at: r.finishedAt,
    mode: r.mode,
    keysChecked: r.keysChecked,
    differences: r.differences,
    inFlight: r.inFlight,
    byKind: JSON.stringify(r.byKind),
    durationMs: r.finishedAt - r.startedAt,
    source,
  });
}

/** The queue's last verification, or null when none ran. */
export async function readLastVerify(master: Redis, keys: QueueKeys): Promise<LastVerify | null> {
  const h = await master.hgetall(keys.verify);
  if (!h.at) return null;
  let byKind = emptyCounts();
  try {
    byKind = { ...byKind, ...(JSON.parse(h.byKind ?? '{}') as Record<ReportKind, number>) };
  } catch {
    // a hand-edited hash still shows its counts
  }
  return {
    at: Number(h.at),
    mode: h.mode as VerifyMode,
    keysChecked: Number(h.keysChecked ?? 0),
    differences: Number(h.differences ?? 0),
    inFlight: Number(h.inFlight ?? 0),
    byKind,
    durationMs: Number(h.durationMs ?? 0),
    source: h.source ?? 'cli',
  };
}

/** What a verification found, in a few words. */
export function describeVerify(r: Pick<VerifyResult, 'mode' | 'keysChecked' | 'differences' | 'inFlight'>): string {
  const found = r.differences === 0 ? 'equal' : `${r.differences} differences`;
  return `${r.mode}, ${r.keysChecked} keys, ${found}${r.inFlight ? `, ${r.inFlight} in flight` : ''}`;
}
