/**
 * Dead letters: entries the replica refused, and bytes in the log that are
 * not qsync entries, moved out of the log by a consumer run with
 * `--on-error park` (shared/lua/park-5.lua). They wait in the list
 * `<prefix>:<queue>:dlq` on the master, each as one line of JSON saying why
 * and the raw bytes from the log, joined by a newline, until `qsync dlq
 * retry` applies them or `qsync dlq drop` removes them.
 */
import type { Redis } from 'ioredis';
import { decodeEntry, type Entry } from '../../shared/entry.js';
import type { QueueKeys } from '../../shared/keys.js';

/** Why an entry was parked: the first line of a dead letter. */
export interface DeadLetterHeader {
  /** the entry's sequence number; null for bytes that are not a qsync entry */
  seq: number | null;
  /** epoch of the master's log the entry belongs to */
  epoch: string;
  /** the refused command, 1-based; 0 when the entry's db could not be selected */
  index: number;
  /** how many of the entry's commands the replica has applied; a retry runs only the rest */
  done: number;
  /** the replica's error */
  error: string;
  /** when the replica refused it, ms since 1970 (replica clock) */
  parkedAt: number;
}

export interface DeadLetter extends DeadLetterHeader {
  /** the letter exactly as stored, to find it again in the list */
  stored: Buffer;
  /** the bytes that were in the log */
  raw: Buffer;
  /** the entry, when the bytes are one */
  entry?: Entry;
}

/** The first line of a dead letter. JSON escapes newlines, so the first one ends it. */
export function encodeHeader(header: DeadLetterHeader): string {
  const { seq, epoch, index, done, error, parkedAt } = header;
  return JSON.stringify({ seq, epoch, index, done, error, parkedAt });
}

/** A dead letter as stored: header, newline, raw bytes. */
export function encodeDeadLetter(header: DeadLetterHeader, raw: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${encodeHeader(header)}\n`), raw]);
}

/** Reads a stored dead letter; anything else in the list shows as a letter of unknown content. */
export function parseDeadLetter(stored: Buffer): DeadLetter {
  const nl = stored.indexOf(0x0a);
  let header: DeadLetterHeader;
  try {
    header = JSON.parse(stored.subarray(0, nl).toString('utf8')) as DeadLetterHeader;
    if (nl < 0 || typeof header.epoch !== 'string' || typeof header.done !== 'number') throw new Error('not a dead letter');
  } catch {
    return { seq: null, epoch: '', index: 0, done: 0, error: 'not a qsync dead letter', parkedAt: 0, stored, raw: stored };
  }
  const raw = stored.subarray(nl + 1);
  let entry: Entry | undefined;
  try {
    entry = header.seq === null ? undefined : decodeEntry(raw);
  } catch {
    entry = undefined;
  }
  return { ...header, stored, raw, entry };
}

/** Every dead letter of a queue, oldest first. */
export async function readDeadLetters(master: Redis, keys: QueueKeys): Promise<DeadLetter[]> {
  return ((await master.lrangeBuffer(keys.dlq, 0, -1)) as Buffer[]).map(parseDeadLetter);
}
