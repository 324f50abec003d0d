/**
 * What the worker does when the replica refuses an entry, or the log holds
 * bytes that are not an entry: halt and say which (`--on-error halt`, the
 * default), or park it as a dead letter and keep draining (`--on-error
 * park`). The apply script decides, atomically with the watermark, that an
 * entry is parked; the confirmation on the master then files the dead
 * letters in the same step as it trims the batch. Why this applies each
 * entry or parks it, never both and never neither, is set out in
 * shared/lua/apply-batch-1.lua.
 */
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from '../../shared/logger.js';
import type { QueueKeys } from '../../shared/keys.js';
import { decodeEntry, describeCommand, type Entry } from '../../shared/entry.js';
import { ReplyCode } from '../../shared/reply-codes.js';
import { onSide, SideError } from './connections.js';
import { encodeHeader } from './dead-letter-record.js';
import { LeaseLost } from './lease.js';
import type { Batch } from './batch.js';
import { Detached, detachedReason } from './detached.js';

export type OnError = 'halt' | 'park';
export const ON_ERROR: readonly OnError[] = ['halt', 'park'];

/** The apply script's reply (shared/lua/apply-batch-1.lua). */
export type ApplyReply = (number | string | DeadItem[])[];

/** An entry of a batch to file as a dead letter, as the apply script reports it. */
type DeadItem = [position: number, seq: number, index: number, done: number, at: number, error: string];

/** Bytes of an entry's start that name it to the master: its header, version, sequence number, time, db and first command. */
const ID_BYTES = 64;

/**
 * An entry as the confirmation names it to the master: its length, ':' and
 * its first bytes (shared/lua/includes/head.lua checks it). The master thus
 * knows the entry it is asked to remove at a cost that does not grow with its
 * size, and a log whose head changed (another consumer trimmed it, the master
 * lost its data) is never trimmed.
 */
function entryId(entry: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${entry.length}:`), entry.subarray(0, ID_BYTES)]);
}

function decoded(raw: Buffer | undefined): Entry | undefined {
  try {
    return raw && decodeEntry(raw);
  } catch {
    return undefined;
  }
}

/** The refused command in words; index 0 is the SELECT of the entry's db. */
function refusedCommand(entry: Entry | undefined, index: number): string | undefined {
  if (!entry) return undefined;
  const cmd = entry.commands[index - 1];
  return index === 0 ? `SELECT ${entry.db}` : cmd && describeCommand(cmd);
}

/** The detail of the halted state: the refused entry and command, or where the garbage is in the log. */
export function haltDetail(reply: ApplyReply, entries: Buffer[], logKey: string): Record<string, unknown> {
  if (reply[0] === ReplyCode.notAnEntry) {
    // Batches are confirmed in order, so the refused one starts at the head of the log.
    return { reason: 'an entry in the log is not a qsync entry', log: logKey, index: Number(reply[1]) - 1 };
  }
  const [, , seq, index, error] = reply;
  const entry = entries.map(decoded).find((e) => e?.seq === Number(seq));
  return { reason: 'the replica refused an entry', seq: Number(seq), command: refusedCommand(entry, Number(index)), error };
}

/** Errors by which a server refuses every write, whatever the entry, and why in words. */
const REFUSES_WRITES: [RegExp, string][] = [
  [/^READONLY\b/, 'is read-only (a replica of another server, or replica-read-only)'],
  [/^OOM\b/, 'is out of memory (maxmemory reached under noeviction)'],
  [/^NOPERM\b|can't run this command|no permissions/i, 'does not give this user the permissions the consumer needs (ACL; qsync acl prints them)'],
  [/^MISCONF\b/, 'refuses writes since it cannot persist (stop-writes-on-bgsave-error)'],
];

/**
 * The detail of the halted state when a server refuses every write (read
 * only, out of memory, no permission): retrying at once cannot help, and
 * nothing is applied until someone fixes the server. Undefined for any other
 * error.
 */
export function refusalDetail(err: Error): Record<string, unknown> | undefined {
  if (!(err instanceof SideError)) return undefined;
  const message = err.cause.message;
  const found = REFUSES_WRITES.find(([pattern]) => pattern.test(message));
  if (!found) return undefined;
  return { reason: `the ${err.side} refuses every write: it ${found[1]}`, side: err.side, error: message };
}

/**
 * Confirms applied batches on the master: moves the replica's position in
 * the log past each (what every replica has leaves the log) and, when the
 * replica parked entries of it, files their dead letters
 * in the same step, then deletes the replica's pending records of them.
 */
export class Confirmer {
  /** pending records on the replica whose dead letters are filed; deleted at the next chance if a deletion failed */
  private filed: string[] = [];

  constructor(
    private readonly master: Redis,
    private readonly replica: Redis | Cluster,
    private readonly keys: QueueKeys,
    private readonly token: string,
    private readonly log: Logger,
  ) {}

  /**
   * Confirms a batch the replica applied (reply: the apply script's success).
   * Throws when this worker lost the lease or the head of the log changed.
   */
  async confirm(batch: Batch, reply: ApplyReply): Promise<void> {
    const watermark = Number(reply[1]);
    const dead = (reply[3] as DeadItem[] | undefined) ?? [];
    const { log, lease, status, dlq, meta } = this.keys;
    const { epoch, count } = batch;
    const entries = dead.length ? batch.entries : [];
    const last = entryId(batch.last!);
    // Their bytes leave the queue's count of queued bytes (shared/lua/includes/head.lua).
    const bytes = batch.bytes;
    const letters = dead.flatMap(([position, seq, index, done, parkedAt, error]) => [
      position,
      entryId(entries[position - 1]),
      encodeHeader({ seq: seq === 0 ? null : seq, epoch, index, done, error, parkedAt }),
    ]);
    const code = await onSide(
      'master',
      dead.length
        ? this.master.qsyncPark(
            log,
            lease,
            status,
            dlq,
            meta,
            this.token,
            count,
            last,
            watermark,
            String(Date.now()),
            bytes,
            this.keys.name,
            ...letters,
          )
        : this.master.qsyncTrim(log, lease, status, meta, this.token, count, last, watermark, String(Date.now()), bytes, this.keys.name),
    );
    if (code === ReplyCode.detached) throw new Detached(await onSide('master', detachedReason(this.master, this.keys)));
    if (code === ReplyCode.leaseLost) throw new LeaseLost('the lease ran out before this consumer trimmed its batch');
    if (code === ReplyCode.headChanged) throw new SideError('master', new Error('the head of the log changed under this worker'));
    for (const [position, seq, index, done, , error] of dead) {
      const entry = decoded(entries[position - 1]);
      const what = seq === 0 ? { bytes: entries[position - 1].length } : { seq, command: refusedCommand(entry, index), done };
      this.log.warn({ ...what, error, dlq }, seq === 0 ? 'parked bytes that are not a qsync entry' : 'parked an entry the replica refused');
      if (seq !== 0) this.filed.push(`parked:${seq}`);
    }
    if (dead.length) await this.forgetFiled();
  }

  /**
   * Deletes the replica's pending records of filed dead letters. Best
   * effort: a record left behind is never read again (its entry is out of
   * the log), so a failure only waits for the next chance.
   */
  private async forgetFiled(): Promise<void> {
    const fields = this.filed.splice(0);
    if (fields.length === 0) return;
    try {
      await this.replica.hdel(this.keys.applied, ...fields);
    } catch (err) {
      this.filed.push(...fields);
      this.log.debug({ err: (err as Error).message }, 'could not delete pending park records yet');
    }
  }
}
