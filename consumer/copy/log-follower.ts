/**
 * What a resync needs from the master's log: the entries after a sequence
 * number, read in order in chunks, and the keys each logged command touches.
 */
import type { Redis } from 'ioredis';
import { commandKeys, keyId } from '../../shared/entry-keys.js';
import { decodeEntry, type Entry } from '../../shared/entry.js';
import { ExitCode, QsyncError } from '../../shared/errors.js';
import type { QueueKeys } from '../../shared/keys.js';

/** The resync cannot go on; the replica stays marked as resyncing and a re-run starts over. */
export class ResyncError extends QsyncError {
  override readonly exitCode = ExitCode.resyncNeeded;
}

/** Makes the error a resync or a repair fails with from what went wrong; its message reads `qsync: <what>: <detail>`. */
export type Fail = (detail: string) => QsyncError;

/** The error of a resync, from what went wrong. */
export const resyncFailure: Fail = (detail) => new ResyncError(`qsync: resync: ${detail}`);

const CHUNK = 256;
/** Most bytes of entries read at once (a single larger entry still comes alone). */
const CHUNK_BYTES = 16 * 1024 * 1024;

/**
 * Reads the master's log forward from a sequence number, never holding more
 * than a chunk, from where the replica is attached (includes/replicas.lua).
 */
export class LogFollower {
  /** entries read past the first one the replica has not confirmed */
  private index = 0;

  constructor(
    private readonly master: Redis,
    private readonly keys: QueueKeys,
    /** seq of the last entry read */
    public last: number,
    private readonly fail: Fail = resyncFailure,
  ) {}

  /**
   * Calls `fn` for each entry with a seq in (last, upTo], in order. The log
   * must hold them: the run holds the replica's lease and the replica is
   * attached, so the log keeps them.
   */
  async readTo(upTo: number, fn: (e: Entry) => void | Promise<void>): Promise<void> {
    while (this.last < upTo) {
      const [, , left, , ...raws] = await this.master.qsyncReadBatchBuffer(
        this.keys.log,
        this.keys.meta,
        this.index,
        CHUNK,
        CHUNK_BYTES,
        1,
        this.keys.name,
      );
      if (Number(left) < 0) throw this.fail(`replica '${this.keys.name}' was detached from the master's log meanwhile`);
      if (raws.length === 0)
        throw this.fail(`the master's log ends at entry ${this.last} but its sequence is at ${upTo}; was the log trimmed or dropped?`);
      for (const raw of raws) {
        this.index++;
        let e: Entry;
        try {
          e = decodeEntry(raw);
        } catch {
          continue; // not an entry: it carries no write (the consumer reports it later)
        }
        if (e.seq <= this.last) continue;
        if (e.seq !== this.last + 1) throw this.fail(`entries ${this.last + 1} to ${e.seq - 1} are missing from the master's log`);
        this.last = e.seq;
        await fn(e);
        if (this.last >= upTo) break;
      }
    }
  }
}

/** The ids of the keys a logged command touches; a command qsync does not replicate fails the run. */
export function touchedKeys(db: number, cmd: Buffer[], fail: Fail = resyncFailure): string[] {
  const name = cmd[0].toString('latin1').toLowerCase();
  // The copies made after a flush would be flushed again by its replay.
  if (name === 'flushdb' || name === 'flushall') throw fail(`the log holds a ${name.toUpperCase()} made during the run; run it again`);
  const keys = commandKeys(db, cmd);
  if (!keys) throw fail(`the log holds a command qsync does not replicate: ${cmd[0].toString('latin1').toUpperCase()}`);
  return keys.map((k) => keyId(k.db, k.key));
}

/**
 * The keys written during a resync, each with its marker: the seq its copy on
 * the replica reflects (0 while none is known). Only written keys are kept,
 * so memory follows the writes during the resync, not the dataset.
 */
export class Markers {
  private readonly map = new Map<string, number>();
  /** the highest marker: the replay must go past it */
  max = 0;

  /** Remembers the keys an entry touches. */
  touch(e: Entry): void {
    for (const cmd of e.commands) for (const id of touchedKeys(e.db, cmd)) if (!this.map.has(id)) this.map.set(id, 0);
  }

  set(id: string, seq: number): void {
    this.map.set(id, seq);
    this.max = Math.max(this.max, seq);
  }

  /** Keys were copied at their seq: true markers, kept only for keys touched so far (a key copied before any write reflects S0). */
  copied(db: number, copies: Array<{ key: Buffer; seq: number }>): void {
    if (this.map.size === 0) return;
    for (const { key, seq } of copies) {
      const id = keyId(db, key);
      if (this.map.has(id)) this.set(id, seq);
    }
  }

  /** Keys touched with no copy since. */
  stale(): string[] {
    return [...this.map].filter(([, m]) => m === 0).map(([id]) => id);
  }

  /** How many of the keys have their copy at or after seq. */
  ahead(ids: string[], seq: number): number {
    return ids.filter((id) => (this.map.get(id) ?? 0) >= seq).length;
  }
}
