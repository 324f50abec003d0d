/**
 * multi() on a producer: the commands are collected and sent at exec() as one
 * script call, so the group is atomic on the master and logged as one entry,
 * which the replica applies atomically too. Reads may be part of it. A queue
 * full under the `reject` policy refuses the whole group: exec() rejects with
 * a QueueFullError.
 */
import { ReplyError, type ChainableCommander } from 'ioredis';
import { UnsupportedCommandError } from '../shared/errors.js';
import { refuseLater, rejectLater } from './refusals.js';
import { shapeReply, type Callback, type LoggedCommand } from './calls.js';
import { chain, finish, GroupCheck, queueUpFront, type GroupContext, type Results } from './group.js';

export function createMulti(ctx: GroupContext, upFront: unknown[][] = []): ChainableCommander {
  const { log, guard, client, db } = ctx;
  const check = new GroupCheck(ctx, true);
  const commands: LoggedCommand[] = [];
  const queued: Callback[] = [];
  // Commands Redis would refuse to queue (wrong arity): like MULTI, exec() then runs nothing.
  const queueErrors: Error[] = [];

  const onCommand = (prop: string, args: unknown[], cb: Callback | undefined) => {
    const cmd = check.command(prop, args, db());
    if (!(cmd instanceof Error)) commands.push(cmd);
    else if (!(cmd instanceof UnsupportedCommandError)) queueErrors.push(cmd);
    if (cb) queued.push(cb);
  };

  const run = async (): Promise<Results> => {
    if (check.refused) return refuseLater(client, check.refused);
    if (queueErrors.length > 0) {
      return rejectLater(
        Object.assign(new ReplyError('EXECABORT Transaction discarded because of previous errors.') as Error, { previousErrors: queueErrors }),
      );
    }
    if (commands.length === 0) return [];
    const sent = log.send(client, { db: db(), commands, as: 'group', buffer: true }) as Promise<unknown[]>;
    // As in a MULTI, each command's own callback hears that it was queued.
    for (const cb of queued) cb(null, 'QUEUED');
    const replies = await sent;
    return replies.map((r, i) => (r instanceof Error ? [r, null] : [null, shapeReply(commands[i], r)]));
  };

  const exec = (args: unknown[]) => finish(check.refused ? run() : guard.run(true, run), args);
  return queueUpFront(chain(client, {}, onCommand, exec), upFront);
}
