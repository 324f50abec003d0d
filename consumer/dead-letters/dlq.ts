/**
 * `qsync dlq list | retry | drop`: the dead letters of a queue (entries a
 * consumer run with `--on-error park` set aside, see drain/dead-letter-record.ts).
 *
 * A retry applies the entry on the replica now, out of its original order,
 * skipping the commands the replica had already applied. The replica
 * records its progress in the same step as it applies (retry-dead-1.lua), and
 * the letter leaves the master only after the replica applied all of it, so
 * a retry interrupted at any point and run again applies nothing twice.
 * An entry of an old master's tail, parked by `qsync rejoin`, is applied on
 * the master itself instead, through its log, so that every replica gets it
 * (failover/tail.ts).
 */
import type { Redis } from 'ioredis';
import { describeCommand } from '../../shared/entry.js';
import { NotFoundError } from '../../shared/errors.js';
import { ReplyCode } from '../../shared/reply-codes.js';
import type { QueueKeys } from '../../shared/keys.js';
import { encodeDeadLetter, readDeadLetters, type DeadLetter } from '../drain/dead-letter-record.js';
import { age } from '../queue/status.js';
import { applyTailEntry, isTailOf } from '../failover/tail.js';

/** Which dead letters a command acts on. */
export type Selection = { seq: number } | { all: true } | { garbage: true };

/** A dead letter as `qsync dlq list --json` shows it. */
export interface DeadLetterView {
  /** null for bytes that are not a qsync entry */
  seq: number | null;
  db: number | null;
  /** how long ago the master logged the entry (master clock) */
  ageMs: number | null;
  /** when the replica refused it (ISO 8601, replica clock) */
  parkedAt: string;
  error: string;
  /** the refused command, 1-based (0: the entry's db could not be selected) */
  refused: number;
  /** how many commands, from the first, the replica has already applied */
  done: number;
  commands: string[];
  /** size of the bytes from the log */
  bytes: number;
}

async function masterNow(master: Redis): Promise<number> {
  const [s, us] = await master.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

function view(letter: DeadLetter, now: number): DeadLetterView {
  const e = letter.entry;
  return {
    seq: letter.seq,
    db: e?.db ?? null,
    ageMs: e ? Math.max(0, now - e.ts) : null,
    parkedAt: new Date(letter.parkedAt).toISOString(),
    error: letter.error,
    refused: letter.index,
    done: letter.done,
    commands: e?.commands.map((c) => describeCommand(c)) ?? [],
    bytes: letter.raw.length,
  };
}

/** The dead letters of a queue, oldest first. */
export async function listDeadLetters(master: Redis, keys: QueueKeys): Promise<DeadLetterView[]> {
  const [letters, now] = await Promise.all([readDeadLetters(master, keys), masterNow(master)]);
  return letters.map((l) => view(l, now));
}

/** Dead letters for people: each with its commands marked applied, refused or not yet run. */
export function formatDeadLetters(views: DeadLetterView[], dlqKey: string): string {
  if (views.length === 0) return `no dead letters in ${dlqKey}`;
  return views
    .map((v) => {
      if (v.seq === null) return `not a qsync entry (${v.bytes} bytes)  parked ${v.parkedAt}\n  error    ${v.error}`;
      const marks = v.commands.map((c, i) => `  ${i < v.done ? 'applied' : i + 1 === v.refused ? 'refused' : 'waiting'}  ${c}`);
      if (v.refused === 0) marks.unshift(`  refused  SELECT ${v.db}`);
      return [`seq ${v.seq}  db ${v.db}  written ${age(v.ageMs)} ago  parked ${v.parkedAt}`, `  error    ${v.error}`, ...marks].join('\n');
    })
    .join('\n\n');
}

async function select(master: Redis, keys: QueueKeys, which: Selection): Promise<DeadLetter[]> {
  const letters = await readDeadLetters(master, keys);
  if ('all' in which) return letters;
  if ('garbage' in which) return letters.filter((l) => l.seq === null);
  const found = letters.filter((l) => l.seq === which.seq);
  if (found.length === 0) throw new NotFoundError(`qsync: no dead letter with seq ${which.seq} in ${keys.dlq}`);
  return found;
}

/** What became of one dead letter in a retry. */
export interface RetryResult {
  seq: number | null;
  applied: boolean;
  /** one line for people */
  message: string;
}

async function retryOne(master: Redis, replica: Redis, keys: QueueKeys, queueDb: number, letter: DeadLetter): Promise<RetryResult> {
  const { seq } = letter;
  if (seq === null || !letter.entry) {
    return {
      seq,
      applied: false,
      message: `kept a dead letter that is not a qsync entry (${letter.raw.length} bytes): nothing to apply; qsync dlq drop --garbage removes it`,
    };
  }
  // An entry of the old master's tail (qsync rejoin): applied on the master itself, through its log, for every replica.
  if (await isTailOf(master, keys, letter.epoch)) {
    const refused = await applyTailEntry(master, keys, queueDb, letter.entry);
    if (refused !== null) return { seq, applied: false, message: `kept seq ${seq} of the old master's tail: the master refused it: ${refused}` };
    await master.lrem(keys.dlq, 1, letter.stored);
    return { seq, applied: true, message: `applied seq ${seq} of the old master's tail on the master, through its log` };
  }
  const reply = await replica.qsyncRetryDead(keys.applied, queueDb, letter.epoch, letter.done, letter.raw);
  if (reply[0] === ReplyCode.otherLog) {
    return {
      seq,
      applied: false,
      message: `kept seq ${seq}: the replica follows another log (epoch ${reply[1] || 'none'}), the entry belongs to epoch ${letter.epoch}`,
    };
  }
  if (reply[0] === ReplyCode.refused) {
    const [index, error, done] = [Number(reply[1]), String(reply[2]), Number(reply[3])];
    const updated = encodeDeadLetter({ ...letter, index, done, error }, letter.raw);
    await master.qsyncReplaceDead(keys.dlq, letter.stored, updated);
    const command = index === 0 ? `SELECT ${letter.entry.db}` : describeCommand(letter.entry.commands[index - 1]);
    return {
      seq,
      applied: false,
      message: `kept seq ${seq}: the replica refused command ${index} (${command}): ${error}; ${done} of ${letter.entry.commands.length} commands are applied`,
    };
  }
  // Applied: only now may the letter go, then the replica's record of the retry.
  await master.lrem(keys.dlq, 1, letter.stored);
  await replica.hdel(keys.applied, `retry:${letter.epoch}:${seq}`);
  const skipped = letter.entry.commands.length - Number(reply[1]);
  return { seq, applied: true, message: `applied seq ${seq}${skipped ? ` (${skipped} of its commands had been applied before)` : ''}` };
}

/**
 * Applies dead letters on the replica, in order, and removes each that
 * applied. With several, stops at the first the replica refuses, so that
 * the rest keep their order relative to it; letters that are not entries
 * are skipped.
 */
export async function retryDeadLetters(master: Redis, replica: Redis, keys: QueueKeys, queueDb: number, which: Selection): Promise<RetryResult[]> {
  const results: RetryResult[] = [];
  const letters = await select(master, keys, which);
  for (const [i, letter] of letters.entries()) {
    const result = await retryOne(master, replica, keys, queueDb, letter);
    results.push(result);
    const later = letters.length - i - 1;
    if (!result.applied && result.seq !== null && later > 0) {
      result.message += `; the ${later} dead letters after it were not tried, to keep their order`;
      break;
    }
  }
  return results;
}

/** Removes dead letters; returns how many. */
export async function dropDeadLetters(master: Redis, keys: QueueKeys, which: Selection): Promise<number> {
  let dropped = 0;
  for (const letter of await select(master, keys, which)) dropped += await master.lrem(keys.dlq, 1, letter.stored);
  return dropped;
}
