/**
 * pipeline() on a producer: a real ioredis pipeline in which every write is
 * its own logged script call (atomic one by one, like a pipeline) and every
 * other command goes as it is. A queue full under the `reject` policy refuses
 * each write it reaches: that write's result holds the QueueFullError, and
 * the rest of the pipeline runs.
 */
import type { ChainableCommander } from 'ioredis';
import { UnsupportedCommandError } from '../shared/errors.js';
import { refuseLater, reportRefusal } from './refusals.js';
import { definedScript, parseMethod, type Callback, type LoggedCommand } from './calls.js';
import { exactReply } from './exact-integers.js';
import { isScriptMethod, readOnlyScript, scriptCall, scriptItem, wrapScripts, type WrappedScript } from './user-scripts.js';
import { chain, finish, GroupCheck, queueUpFront, type AnyFn, type GroupContext, type Results } from './group.js';

export function createPipeline(ctx: GroupContext, upFront: unknown[][] = []): ChainableCommander {
  const { log, guard, client, db, scripts } = ctx;
  const check = new GroupCheck(ctx, false);
  const pipe = client.pipeline();
  const methods = pipe as unknown as Record<string, AnyFn>;
  // A SELECT queued in the pipeline moves the writes queued after it.
  let selected: number | undefined;
  // The logged writes by their place in the pipeline, for their replies.
  const logged = new Map<number, LoggedCommand>();
  // The wrapped scripts queued, loaded on the server before the pipeline is sent.
  const wrappers = new Set<WrappedScript>();

  /** Queues a command on the pipeline as it is. */
  const raw = (prop: string, args: unknown[], cb: Callback | undefined) => {
    const tail = cb ? [cb] : [];
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
      wrappers.add(wrapped);
      scripts.queue(pipe, wrapped, sent, buffer, cb);
    } catch (err) {
      if (err instanceof UnsupportedCommandError) check.refused ??= err;
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
    if (!(cmd instanceof Error)) {
      logged.set((pipe as unknown as { length: number }).length, cmd);
      log.send(pipe, { db: selected ?? db(), commands: [cmd], as: 'one', buffer, callback: cb });
    }
    // Redis answers a wrong number of arguments with its own error, running nothing.
    else if (!(cmd instanceof UnsupportedCommandError)) raw(prop, args, cb);
  };

  // A result is kept as ioredis shapes it; only a full queue's refusal becomes a QueueFullError,
  // and a counter's digits past 2^53 the client's integer reply (producer/exact-integers.ts).
  const asRefusal = (res: Results[number], i: number): Results[number] =>
    res[0]
      ? ([reportRefusal(client, log.refusal(res[0])), ...res.slice(1)] as Results[number])
      : [null, exactReply(logged.get(i), res[1], client.options)];
  const exec = (args: unknown[]) =>
    finish(
      check.refused
        ? refuseLater(client, check.refused)
        : guard.run(true, () =>
            scripts
              .load(client, [...wrappers])
              .then(() => pipe.exec())
              .then((results) => (results ? results.map(asRefusal) : null)),
          ),
      args,
    );
  return queueUpFront(chain(client, pipe, onCommand, exec), upFront);
}
