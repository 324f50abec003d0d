/**
 * `qsync verify` when either side is a Redis Cluster: the source and the
 * target may have any shapes (3 shards and 2, a cluster and a standalone
 * server). Every master of each side is walked with SCAN: the source's keys
 * are compared with the target, and the target's keys the source does not
 * have are reported too. Keys are compared as a standalone verification
 * compares them (verify/compare.ts), in groups whose keys share one node on
 * each side, so that each group is one pipeline per side.
 *
 * Lag is told from divergence per hash slot, since a cluster's queue is one
 * per slot: a chunk's window is each slot's watermark on the target read
 * before its reads and the slot's sequence on the source read after them,
 * and the differences of one slot are settled against that slot's log
 * (verify/settle.ts). qsync's own keys (per-slot and cluster-wide) are
 * never compared. A cluster has db 0 only: db 0 is compared.
 */
import type { Redis } from 'ioredis';
import { slotKeys, slotOf } from '../../shared/cluster.js';
import { keyId } from '../../shared/entry-keys.js';
import { ClusterModeError, ConfigError } from '../../shared/errors.js';
import { DEFAULT_NAME, DEFAULT_PREFIX, DEFAULT_QUEUE, ownKeyPrefixes } from '../../shared/keys.js';
import { compareKeys } from '../verify/compare.js';
import { readLogView } from '../verify/log-view.js';
import { emptyResult, recordDifference, type VerifyResult } from '../verify/result.js';
import { Settler, type Pending } from '../verify/settle.js';
import { resyncNeeded } from '../verify/stuck.js';
import { verifySettings, type VerifyOptions, type VerifyProgress, type VerifySettings } from '../verify/verify.js';
import { slotWatermarks, type ClusterSide } from './shard-map.js';

export interface ClusterVerifyOptions
  extends Partial<VerifySettings>,
    Pick<VerifyOptions, 'prefix' | 'queue' | 'name' | 'signal' | 'onProgress' | 'onDifference' | 'onWaiting'> {
  /** the source: every master of a cluster, or a standalone master */
  source: ClusterSide | Redis;
  /** the target: every master of a cluster, or a standalone replica */
  target: ClusterSide | Redis;
}

/** One side as verify walks it: the servers that hold its keys, and the one that holds a slot. */
interface Side {
  nodes: Redis[];
  nodeOf(slot: number): Redis;
}

function sideOf(given: ClusterSide | Redis, what: string): Side {
  if (!('shards' in given)) return { nodes: [given], nodeOf: () => given };
  return {
    nodes: given.shards.map((s) => s.client),
    nodeOf: (slot) => {
      const shard = given.ownerOf(slot);
      if (!shard)
        throw new ConfigError(`qsync: no master of the ${what} cluster serves hash slot ${slot} (CLUSTER SLOTS); fix the cluster, then verify`);
      return shard.client;
    },
  };
}

const SCAN_COUNT = 1000;
/** Differences held before they are settled. */
const PENDING_MAX = 10_000;

/** Compares a source and a target of which at least one is a cluster; resolves with what differs. */
export async function verifyCluster(o: ClusterVerifyOptions): Promise<VerifyResult> {
  const s = verifySettings(o);
  if (s.mode === 'recent')
    throw new ClusterModeError(
      'qsync: --mode recent does not serve a Redis Cluster yet (its log is one per hash slot): use --mode full or sample; nothing changed',
    );
  return new ClusterVerification(o, s).run();
}

class ClusterVerification {
  private readonly source: Side;
  private readonly target: Side;
  private readonly prefix: string;
  private readonly queue: string;
  private readonly name: string;
  private readonly own: string[];
  private readonly result: VerifyResult;
  private readonly progress: VerifyProgress = { scanned: 0, total: 0, checked: 0, differences: 0 };
  private readonly pending: Pending[] = [];
  private lastProgress = 0;

  constructor(
    private readonly o: ClusterVerifyOptions,
    private readonly s: VerifySettings,
  ) {
    this.source = sideOf(o.source, 'source');
    this.target = sideOf(o.target, 'target');
    this.prefix = o.prefix ?? DEFAULT_PREFIX;
    this.queue = o.queue ?? DEFAULT_QUEUE;
    this.name = o.name ?? DEFAULT_NAME;
    this.own = ownKeyPrefixes(this.prefix);
    this.result = emptyResult(s.mode);
    this.result.dbs = [0];
  }

  async run(): Promise<VerifyResult> {
    const sizes = await Promise.all([...this.source.nodes, ...this.target.nodes].map((n) => n.dbsize()));
    this.progress.total = sizes.reduce((a, b) => a + b, 0);
    for (const node of this.source.nodes) await this.scan(node, async (keys) => void (await this.compare(keys)));
    for (const node of this.target.nodes) await this.scan(node, (keys) => this.targetOnly(keys));
    this.progress.total = this.progress.scanned;
    this.report(true);
    await this.settle(this.pending.splice(0));
    this.result.keysChecked = this.progress.checked;
    this.result.finishedAt = Date.now();
    this.report(true);
    return this.result;
  }

  private report(force = false): void {
    if (!this.o.onProgress || (!force && Date.now() - this.lastProgress < 250)) return;
    this.lastProgress = Date.now();
    this.o.onProgress({ ...this.progress });
  }

  /** Walks one node's keys in chunks: those this verification checks. */
  private async scan(node: Redis, each: (keys: Buffer[]) => Promise<void>): Promise<void> {
    let cursor = '0';
    do {
      this.o.signal?.throwIfAborted();
      const [next, found] = await node.scanBuffer(cursor, 'COUNT', SCAN_COUNT);
      cursor = next.toString();
      this.progress.scanned += found.length;
      const keys = found.filter((k) => {
        const text = k.toString('latin1');
        return !this.own.some((p) => text.startsWith(p)) && (this.s.mode !== 'sample' || Math.random() < this.s.sample);
      });
      if (keys.length) await each(keys);
      this.report();
    } while (cursor !== '0');
  }

  /** Keys grouped by the pair of nodes (source, target) that hold them. */
  private groups(keys: Buffer[]): Map<string, { source: Redis; target: Redis; keys: Buffer[] }> {
    const groups = new Map<string, { source: Redis; target: Redis; keys: Buffer[] }>();
    for (const key of keys) {
      const slot = slotOf(key);
      const source = this.source.nodeOf(slot);
      const target = this.target.nodeOf(slot);
      const id = `${this.source.nodes.indexOf(source)} ${this.target.nodes.indexOf(target)}`;
      const group = groups.get(id) ?? { source, target, keys: [] };
      group.keys.push(key);
      groups.set(id, group);
    }
    return groups;
  }

  /** Target keys the source does not have; the rest were compared from the source's side. */
  private async targetOnly(keys: Buffer[]): Promise<void> {
    for (const { source, keys: group } of this.groups(keys).values()) {
      const pipeline = source.pipeline();
      for (const k of group) pipeline.exists(k);
      const found = ((await pipeline.exec()) ?? []).map(([err, n]) => (err ? 1 : (n as number)));
      const missing = group.filter((_k, i) => found[i] === 0);
      if (missing.length) await this.compare(missing);
    }
  }

  /**
   * Compares keys and returns the differences, each with its slot's window.
   * Keys compared the first time count as checked, and their differences
   * wait to be settled.
   */
  private async compare(keys: Buffer[], first = true): Promise<Pending[]> {
    if (first) this.progress.checked += keys.length;
    const found: Pending[] = [];
    for (const { source, target, keys: group } of this.groups(keys).values()) {
      const slots = [...new Set(group.map((k) => slotOf(k)))];
      const from = await slotWatermarks(target, this.prefix, this.queue, this.name, slots);
      const diffs = await compareKeys(source, target, group, this.s.ttlToleranceMs);
      if (diffs.length === 0) continue;
      const pipeline = source.pipeline();
      const diffSlots = diffs.map((d) => slotOf(d.key));
      for (const slot of diffSlots) pipeline.hget(slotKeys(this.prefix, this.queue, slot).meta, 'seq');
      const seqs = ((await pipeline.exec()) ?? []).map(([, v]) => Number(v ?? 0));
      found.push(...diffs.map((diff, i) => ({ db: 0, diff, id: keyId(0, diff.key), from: from.get(diffSlots[i]) ?? 0, to: seqs[i] })));
    }
    if (first && found.length) {
      this.pending.push(...found);
      if (this.pending.length >= PENDING_MAX) await this.settle(this.pending.splice(0));
    }
    return found;
  }

  /** Decides the differences slot by slot, each against its slot's log and watermark. */
  private async settle(items: Pending[]): Promise<void> {
    const bySlot = new Map<number, Pending[]>();
    for (const p of items) {
      const slot = slotOf(p.diff.key);
      bySlot.set(slot, [...(bySlot.get(slot) ?? []), p]);
    }
    // The consumer has drainTimeoutMs to catch up for the whole batch, not for each slot.
    const deadline = Date.now() + this.s.drainTimeoutMs;
    for (const [slot, pending] of bySlot) {
      const keys = slotKeys(this.prefix, this.queue, slot, this.name);
      const source = this.source.nodeOf(slot);
      const target = this.target.nodeOf(slot);
      const settler = new Settler(
        {
          watermark: async () => Number((await target.hget(keys.applied, 'seq')) ?? 0),
          logView: (windows) => readLogView(source, keys, windows),
          compare: (_db, again) => this.compare(again, false),
          stuck: async () => {
            const reason = await resyncNeeded(source, target, keys);
            if (reason) this.result.resyncNeeded = `slot ${slot}: ${reason}`;
            return reason;
          },
        },
        {
          drainTimeoutMs: Math.max(0, deadline - Date.now()),
          ttlToleranceMs: this.s.ttlToleranceMs,
          signal: this.o.signal,
          onWaiting: this.o.onWaiting,
          decide: (p, inFlight) => {
            const d = recordDifference(this.result, p.db, p.diff, inFlight);
            this.progress.differences++;
            this.o.onDifference?.(d);
          },
        },
      );
      await settler.settle(pending);
    }
  }
}
