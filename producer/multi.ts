/**
 * multi() on a producer: the commands are collected and sent at exec() as one
 * script call, so the group is atomic on the master and logged as one entry,
 * which the replica applies atomically too. Reads may be part of it, and Lua
 * scripts (eval, evalsha, defined commands): a group with scripts runs in
 * their wrapper (producer/user-scripts.ts), still one call and one entry. A
 * queue full under the `reject` policy refuses the whole group: exec()
 * rejects with a QueueFullError.
 */
import { ReplyError, type ChainableCommander } from 'ioredis';
import { UnsupportedCommandError } from '../shared/errors.js';
import { refuseLater, rejectLater } from './refusals.js';
import { definedScript, logArgs, shapeReply, type Callback, type LoggedCommand } from './calls.js';
import { chain, finish, GroupCheck, queueUpFront, type GroupContext, type Results } from './group.js';
import {
  isScriptMethod,
  MAX_GROUP_SCRIPTS,
  scriptCall,
  scriptItem,
  wrapScripts,
  UnknownScriptError,
  UNKNOWN_SCRIPT,
  type ScriptCall,
} from './user-scripts.js';

type Part = { command: LoggedCommand } | { script: ScriptCall };

export function createMulti(ctx: GroupContext, upFront: unknown[][] = []): ChainableCommander {
  const { log, guard, client, db, scripts } = ctx;
  const check = new GroupCheck(ctx, true);
  const parts: Part[] = [];
  const queued: Callback[] = [];
  // Commands Redis would refuse to queue (wrong arity): like MULTI, exec() then runs nothing.
  const queueErrors: Error[] = [];

  const onCommand = (prop: string, args: unknown[], cb: Callback | undefined) => {
    let part: Part | Error;
    try {
      // A script defined read-only runs in the group's wrapper too: Redis has no EVALSHA inside a script.
      const script = isScriptMethod(client, prop) || definedScript(client, prop) !== undefined;
      const command = script ? undefined : check.command(prop, args, db());
      part = command instanceof Error ? command : command ? { command } : { script: scriptCall(client, prop, args) };
    } catch (err) {
      // An unseen script refuses the group whole, as any write qsync cannot log.
      part = err instanceof UnknownScriptError ? new UnsupportedCommandError('evalsha', UNKNOWN_SCRIPT) : (err as Error);
    }
    if (!(part instanceof Error)) parts.push(part);
    else if (part instanceof UnsupportedCommandError) check.refused ??= part;
    else queueErrors.push(part);
    if (cb) queued.push(cb);
  };

  /** A group with scripts: one call of their wrapper, its replies in place. */
  const runWithScripts = async (): Promise<unknown[]> => {
    const sources: string[] = [];
    const items: (string | Buffer)[] = [];
    for (const part of parts) {
      if ('command' in part) {
        items.push('c', ...logArgs(part.command));
        continue;
      }
      let index = sources.indexOf(part.script.source);
      if (index < 0) index = sources.push(part.script.source) - 1;
      items.push(...scriptItem(index + 1, part.script.flat));
    }
    if (sources.length > MAX_GROUP_SCRIPTS) {
      throw new UnsupportedCommandError(
        'multi',
        `with more than ${MAX_GROUP_SCRIPTS} different scripts cannot be logged as one entry; split the transaction`,
      );
    }
    const replies = (await scripts.run(client, wrapScripts(sources, false), scripts.args(db(), false, items), true)) as unknown[];
    // A full queue fails the group's first write, and every one after it: the whole group is refused.
    const full = replies.find((r): r is Error => r instanceof ReplyError && log.refusal(r as Error) !== r);
    if (full) throw log.refusal(full);
    return replies;
  };

  const run = async (): Promise<Results> => {
    if (check.refused) return refuseLater(client, check.refused);
    if (queueErrors.length > 0) {
      return rejectLater(
        Object.assign(new ReplyError('EXECABORT Transaction discarded because of previous errors.') as Error, { previousErrors: queueErrors }),
      );
    }
    if (parts.length === 0) return [];
    const commands = parts.map((p) => ('command' in p ? p.command : undefined));
    const sent = commands.every((c) => c !== undefined)
      ? (log.send(client, { db: db(), commands: commands as LoggedCommand[], as: 'group', buffer: true }) as Promise<unknown[]>)
      : runWithScripts();
    // As in a MULTI, each command's own callback hears that it was queued.
    for (const cb of queued) cb(null, 'QUEUED');
    const replies = await sent;
    return replies.map((r, i) => {
      if (r instanceof Error) return [r, null];
      const part = parts[i];
      const shaped = 'command' in part ? part.command : { name: 'evalsha', args: [], write: true, replyEncoding: part.script.buffer ? null : 'utf8' };
      return [null, shapeReply(shaped as LoggedCommand, r)];
    });
  };

  const exec = (args: unknown[]) => finish(check.refused ? run() : guard.run(true, run), args);
  return queueUpFront(chain(client, {}, onCommand, exec), upFront);
}
