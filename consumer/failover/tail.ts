/**
 * An entry of an old master's tail (written there after its replica was
 * promoted) applied on the promoted master later: through the promoted
 * master's own log, as one atomic entry, as a producer would write it, so
 * that its replicas (the old master among them, once rejoined) get it too.
 * `qsync rejoin --tail apply` does it at once; `qsync dlq retry` does it for
 * a tail entry parked as a dead letter.
 */
import type { Redis } from 'ioredis';
import { ReplyError } from 'ioredis';
import { describeCommand, type Entry } from '../../shared/entry.js';
import { commandSpec } from '../../shared/commands.js';
import { FencedError, QueueFullError } from '../../shared/errors.js';
import type { QueueKeys } from '../../shared/keys.js';
import { WriteLog } from '../../producer/write-log.js';

/** Why the promoted master did not take a tail entry; null when it did. */
export async function applyTailEntry(master: Redis, keys: QueueKeys, queueDb: number, entry: Entry): Promise<string | null> {
  const commands = entry.commands.map(([name, ...args]) => ({ name: name.toString('latin1').toLowerCase(), args, write: true, replyEncoding: null }));
  const unknown = commands.findIndex((c) => !commandSpec(c.name));
  if (unknown >= 0) return `command ${unknown + 1} (${describeCommand(entry.commands[unknown])}) is not a write the master can log`;
  const log = new WriteLog(master, { queue: keys.queue, prefix: keys.prefix, queueDb });
  try {
    const replies = (await log.send(master, { db: entry.db, commands, as: 'group', buffer: false })) as unknown[];
    const failed = replies.findIndex((r) => r instanceof Error);
    // Redis keeps the writes of a group before a failing one, as it does in a script.
    if (failed >= 0) return `command ${failed + 1} (${describeCommand(entry.commands[failed])}) failed: ${(replies[failed] as Error).message}`;
    return null;
  } catch (err) {
    if (err instanceof ReplyError || err instanceof FencedError || err instanceof QueueFullError) return (err as Error).message;
    throw err;
  }
}

/** Whether a dead letter of epoch `epoch` on this master is an entry of the old master's tail: the master was promoted from that log. */
export async function isTailOf(master: Redis, keys: QueueKeys, epoch: string): Promise<boolean> {
  const [from] = await master.hmget(keys.meta, 'promotedFromEpoch');
  return from !== null && from === epoch;
}
