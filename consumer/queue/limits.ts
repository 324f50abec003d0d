/**
 * The cap on what a queue holds on the master (`qsync limit`): at most
 * `maxEntries` entries and/or `maxBytes` bytes of entries, and the policy for
 * writes once the log is at or over it: `reject` them (QueueFullError,
 * nothing written) or `mark-dirty` (run them unqueued and record their keys
 * in the dirty set, up to `maxDirty`). It lives in the queue's meta hash,
 * which the log-write script reads on every call (shared/lua/log-write.lua),
 * so every producer obeys a change at once. On a Redis Cluster each hash
 * slot's queue has its own (consumer/cluster/limits.ts).
 */
import type { Redis } from 'ioredis';
import { ConfigError } from '../../shared/errors.js';
import { choiceOption, intOption } from '../../shared/config.js';
import { sizeOption } from '../../shared/units.js';
import type { QueueKeys } from '../../shared/keys.js';
import { defineScripts } from '../../shared/scripts.js';

export type Policy = 'reject' | 'mark-dirty' | 'detach-slowest';
export const POLICIES: readonly Policy[] = ['reject', 'mark-dirty', 'detach-slowest'];

/** Most keys recorded under `mark-dirty` when not set: the same default as shared/lua/includes/dirty.lua. */
export const DEFAULT_MAX_DIRTY = 100_000;

/**
 * `ok` while every write is queued; `repair-needed` once writes went unqueued
 * (their keys are in the dirty set); `resync-needed` once more keys than
 * maxDirty did. Only `qsync limit --clear-repair` brings it back to `ok`.
 */
export type QueueState = 'ok' | 'repair-needed' | 'resync-needed';

export interface Limits {
  /** most entries queued; null: no cap */
  maxEntries: number | null;
  /** most bytes of entries queued; null: no cap */
  maxBytes: number | null;
  policy: Policy;
  maxDirty: number;
}

/** A queue's cap and how full it is. */
export interface QueueUsage {
  limits: Limits;
  /** bytes of the entries queued, as packed (Redis's own overhead per entry comes on top) */
  queuedBytes: number;
  /** the log is at or over a cap: writes are refused (`reject`) or go unqueued (`mark-dirty`) */
  full: boolean;
  queueState: QueueState;
  /** when the queue state began (ms since the epoch); null for `ok` */
  queueStateSinceMs: number | null;
  /** keys recorded in the dirty set */
  dirtyKeys: number;
}

/** What `qsync limit` changes; an undefined field is left as it is, 0 removes a cap. */
export interface LimitChange {
  maxEntries?: number;
  maxBytes?: number;
  policy?: Policy;
  maxDirty?: number;
  /** remove every cap and the policy */
  clear?: boolean;
  /** back to `ok`: forget the dirty keys, queue writes again */
  clearRepair?: boolean;
}

/** The meta hash fields a QueueUsage is read from, in the order usageFrom takes them. */
export const USAGE_FIELDS = ['bytes', 'state', 'stateSince', 'maxEntries', 'maxBytes', 'policy', 'maxDirty'] as const;

const num = (v: string | null): number | null => (v === null || v === '' ? null : Number(v));

/** A QueueUsage from the log's length, the USAGE_FIELDS of the meta hash and the dirty set's size. */
export function usageFrom(depth: number, fields: (string | null)[], dirtyKeys: number): QueueUsage {
  const [bytes, state, since, maxEntries, maxBytes, policy, maxDirty] = fields;
  const limits: Limits = {
    maxEntries: num(maxEntries),
    maxBytes: num(maxBytes),
    policy: POLICIES.find((p) => p === policy) ?? 'reject',
    maxDirty: num(maxDirty) ?? DEFAULT_MAX_DIRTY,
  };
  const queuedBytes = num(bytes) ?? 0;
  return {
    limits,
    queuedBytes,
    full: (limits.maxEntries !== null && depth >= limits.maxEntries) || (limits.maxBytes !== null && queuedBytes >= limits.maxBytes),
    queueState: state === 'repair-needed' || state === 'resync-needed' ? state : 'ok',
    queueStateSinceMs: state ? num(since) : null,
    dirtyKeys,
  };
}

/** Flags of `qsync limit`, as given. */
export interface LimitFlags {
  maxEntries?: string;
  maxBytes?: string;
  policy?: string;
  maxDirty?: string;
  clear?: boolean;
  clearRepair?: boolean;
}

/** Checks the flags of `qsync limit` (ConfigError naming the bad one) and returns the change they ask for. */
export function limitChange(f: LimitFlags): LimitChange {
  const sets = [f.maxEntries, f.maxBytes, f.policy, f.maxDirty].some((v) => v !== undefined);
  if (f.clear && sets) throw new ConfigError('qsync: --clear removes every cap; give it without --max-entries, --max-bytes, --policy or --max-dirty');
  return {
    maxEntries: f.maxEntries === undefined ? undefined : intOption(f.maxEntries, '--max-entries', 0, 0),
    maxBytes: f.maxBytes === undefined ? undefined : sizeOption(f.maxBytes, '--max-bytes', 0),
    policy: f.policy === undefined ? undefined : choiceOption(f.policy, '--policy', POLICIES, 'reject'),
    maxDirty: f.maxDirty === undefined ? undefined : intOption(f.maxDirty, '--max-dirty', DEFAULT_MAX_DIRTY, 1),
    clear: f.clear === true,
    clearRepair: f.clearRepair === true,
  };
}

/** A queue's usage and depth, read in one step. */
export async function readUsage(master: Redis, keys: QueueKeys): Promise<QueueUsage & { depth: number }> {
  const [[, depth], [, fields], [, dirty]] = (await master
    .multi()
    .llen(keys.log)
    .hmget(keys.meta, ...USAGE_FIELDS)
    .scard(keys.dirty)
    .exec()) as [[null, number], [null, (string | null)[]], [null, number]];
  return { ...usageFrom(depth, fields, dirty), depth };
}

/** The arguments of shared/lua/set-limits.lua (after its keys) for a change. */
export function setLimitsArgs(change: LimitChange): string[] {
  const value = (v: number | string | undefined) => (v === undefined ? '' : String(v));
  return [
    change.clear ? '1' : '0',
    value(change.maxEntries),
    value(change.maxBytes),
    value(change.policy),
    value(change.maxDirty),
    change.clearRepair ? '1' : '0',
  ];
}

/** Whether a change changes anything (flags given), or only asks to see the limits. */
export function changesLimits(change: LimitChange): boolean {
  return Object.values(change).some((v) => v !== undefined && v !== false);
}

/** Applies a change in one step (shared/lua/set-limits.lua) and returns the queue's usage after it. */
export async function setLimits(master: Redis, keys: QueueKeys, change: LimitChange): Promise<QueueUsage & { depth: number }> {
  defineScripts(master);
  await master.qsyncSetLimits(2, keys.meta, keys.dirty, ...setLimitsArgs(change));
  return readUsage(master, keys);
}

/** What each policy does to writes to a full queue, in words. */
export const POLICY_TEXT: Record<Policy, string> = {
  reject: 'writes to a full queue fail with QueueFullError',
  'mark-dirty': 'writes to a full queue run unqueued and their keys are recorded',
  'detach-slowest': 'the replica furthest behind is detached (it needs a resync), and writes go on',
};

/** Bytes for people, in 1024s: 512 B, 3.4 KiB, 64 MiB. */
export function sizeText(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 || Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

/** The cap in one line: "1000 entries, 64 MiB; when full: reject". */
export function capText(l: Limits): string {
  const caps = [l.maxEntries !== null ? `${l.maxEntries} entries` : '', l.maxBytes !== null ? sizeText(l.maxBytes) : ''].filter(Boolean);
  return caps.length ? `${caps.join(', ')}; when full: ${l.policy}` : `none (when full: ${l.policy})`;
}

/** The queue state in one line, with what to do about it. */
export function stateText(u: QueueUsage, dirtyKey: string): string {
  if (u.queueState === 'ok') return 'ok';
  const since = u.queueStateSinceMs ? ` since ${new Date(u.queueStateSinceMs).toISOString()}` : '';
  const then =
    u.queueState === 'repair-needed'
      ? 'qsync repair copies them to the replica'
      : 'too many to repair: qsync limit --clear-repair, then qsync resync';
  return `${u.queueState}${since}, ${u.dirtyKeys} dirty keys in ${dirtyKey} (${then})`;
}

/** What `qsync limit` prints. */
export function formatLimits(keys: QueueKeys, u: QueueUsage & { depth: number }): string {
  const { limits: l } = u;
  return [
    `queue ${keys.queue}  (${keys.meta})`,
    `  max entries     ${l.maxEntries ?? 'none'}`,
    `  max bytes       ${l.maxBytes === null ? 'none' : `${sizeText(l.maxBytes)} (${l.maxBytes})`}`,
    `  policy          ${l.policy}: ${POLICY_TEXT[l.policy]}`,
    `  max dirty       ${l.maxDirty} keys`,
    `  queued          ${u.depth} entries, ${sizeText(u.queuedBytes)}${u.full ? '  (full)' : ''}`,
    `  state           ${stateText(u, keys.dirty)}`,
  ].join('\n');
}
