/**
 * pipeline() on a producer: a real ioredis pipeline in which every write is
 * its own logged script call (atomic one by one, like a pipeline) and every
 * other command goes as it is. A queue full under the `reject` policy refuses
 * each write it reaches: that write's result holds the QueueFullError, and
 * the rest of the pipeline runs.
 *
 * A blocking command (BLPOP and the like) holds the commands queued after it,
 * as it holds a connection in Redis: the pipeline is sent in parts, the
 * blocking command waiting between them (producer/blocking.ts).
 */
import type { ChainableCommander, Pipeline } from 'ioredis';
import { UnsupportedCommandError } from '../shared/errors.js';
import { refuseLater, reportRefusal } from './refusals.js';
import { definedScript, parseMethod, type Callback, type LoggedCommand } from './calls.js';
import { exactReply } from './exact-integers.js';
import { waitMs } from './blocking.js';
import {
  isScriptMethod,
  readOnlyScript,
  scriptCall,
  scriptItem,
  wrapScripts,
  UnknownScriptError,
  UNKNOWN_SCRIPT,
  type WrappedScript,
} from './user-scripts.js';
import { chain, finish, GroupCheck, queueUpFront, type AnyFn, type GroupContext, type Results } from './group.js';

/** A part of the pipeline: commands sent together, or one blocking command that may wait. */
type Part =
  | { pipe: Pipeline; logged: Map<number, LoggedCommand>; wrappers: Set<WrappedScript> }
  | { blocking: LoggedCommand; db: number; buffer: boolean; cb: Callback | undefined };

export function createPipeline(ctx: GroupContext, upFront: unknown[][] = []): ChainableCommander {
  const { log, guard, client, db, scripts, blocking } = ctx;
  const check = new GroupCheck(ctx, false);
  const first = client.pipeline() as Pipeline;
  const parts: Part[] = [{ pipe: first, logged: new Map(), wrappers: new Set() }];
  // A SELECT queued in the pipeline moves the writes queued after it.
  let selected: number | undefined;

  /** The part commands are queued on now, a new one after a blocking command. */
  const current = () => {
    const last = parts[parts.length - 1];
    if ('pipe' in last) return last;
    const part = { pipe: client.pipeline() as Pipeline, logged: new Map<number, LoggedCommand>(), wrappers: new Set<WrappedScript>() };
    parts.push(part);
    return part;
  };

  /** Queues a command on the pipeline as it is. */
  const raw = (prop: string, args: unknown[], cb: Callback | undefined) => {
    const tail = cb ? [cb] : [];
    const methods = current().pipe as unknown as Record<string, AnyFn>;
    if (typeof methods[prop] === 'function') return methods[prop](...args, ...tail);
    // a command ioredis has no method for, given to call()
    const { name, buffer } = parseMethod(prop);
    return methods[buffer ? 'callBuffer' : 'call'](name, ...args, ...tail);
  };

  /** A script that may write goes wrapped, its writes logged as one entry (producer/user-scripts.ts). */
  const onScript = (prop: string, args: unknown[], cb: Callback | undefined) => {
    try {
      const { source, flat, buffer } = scriptCall(client, prop, args);
      if (readOnlyScript(source)) {
        raw(prop, args, cb);
        return;
      }
      const wrapped = wrapScripts([source], true);
      const sent = scripts.args(selected ?? db(), true, scriptItem(1, flat));
      const part = current();
      part.wrappers.add(wrapped);
      scripts.queue(part.pipe, wrapped, sent, buffer, cb);
    } catch (err) {
      if (err instanceof UnsupportedCommandError) check.refused ??= err;
      // An unseen script refuses the group whole, as any write qsync cannot log.
      else if (err instanceof UnknownScriptError) check.refused ??= new UnsupportedCommandError('evalsha', UNKNOWN_SCRIPT);
      // Redis answers a bad key count with its own error, running nothing.
      else raw(prop, args, cb);
    }
  };

  const onCommand = (prop: string, args: unknown[], cb: Callback | undefined) => {
    if (isScriptMethod(client, prop)) {
      onScript(prop, args, cb);
      return;
    }
    const { name, buffer } = parseMethod(prop);
    if (definedScript(client, prop) || (!log.isLogged(name) && name !== 'multi')) {
      if (name === 'select') selected = Number(args[0]);
      raw(prop, args, cb);
      return;
    }
    const cmd = check.command(prop, args, selected ?? db());
    if (cmd instanceof Error) {
      // Redis answers a wrong number of arguments with its own error, running nothing.
      if (!(cmd instanceof UnsupportedCommandError)) raw(prop, args, cb);
      return;
    }
    if (waitMs(cmd) !== undefined) {
      parts.push({ blocking: cmd, db: selected ?? db(), buffer, cb });
      return;
    }
    const part = current();
    part.logged.set(part.pipe.length, cmd);
    log.send(part.pipe, { db: selected ?? db(), commands: [cmd], as: 'one', buffer, callback: cb });
  };

  // A result is kept as ioredis shapes it; only a full queue's refusal becomes a QueueFullError,
  // and a counter's digits past 2^53 the client's integer reply (producer/exact-integers.ts).
  const shaped = (res: Results[number], cmd: LoggedCommand | undefined): Results[number] =>
    res[0] ? ([reportRefusal(client, log.refusal(res[0])), ...res.slice(1)] as Results[number]) : [null, exactReply(cmd, res[1], client.options)];

  /** Sends the parts in order; a blocking part waits before the next is sent. */
  const send = async (): Promise<Results | null> => {
    const results: Results = [];
    for (const part of parts) {
      if ('pipe' in part) {
        if (part.pipe.length === 0) continue;
        await scripts.load(client, [...part.wrappers]);
        const sent = await part.pipe.exec();
        if (!sent) return null;
        results.push(...sent.map((res, i) => shaped(res as Results[number], part.logged.get(i))));
        continue;
      }
      const { blocking: cmd, buffer, cb } = part;
      const result: Results[number] = await blocking
        .run(cmd, () => log.send(client, { db: part.db, commands: [cmd], as: 'one', buffer }) as Promise<unknown>)
        .then(
          (reply): Results[number] => [null, reply],
          (err: Error): Results[number] => [log.refusal(err), null],
        );
      // The producer's write path already told a full queue's refusal to the client's listeners.
      cb?.(result[0], result[1] ?? undefined);
      results.push(result);
    }
    return results;
  };

  const exec = (args: unknown[]) => finish(check.refused ? refuseLater(client, check.refused) : guard.run(true, send), args);
  return queueUpFront(chain(client, first, onCommand, exec), upFront);
}
