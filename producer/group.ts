/**
 * multi() and pipeline() on a producer.
 *
 * multi(): the commands are collected and sent at exec() as one script call,
 * so the group is atomic on the master and logged as one entry, which the
 * replica applies atomically too. Reads may be part of it.
 * pipeline(): a real ioredis pipeline in which every write is its own logged
 * script call (atomic one by one, like a pipeline).
 *
 * Either way an unsupported write makes exec() fail before anything is sent.
 */
import type { Redis, ChainableCommander } from 'ioredis';
import { UnsupportedCommandError } from '../shared/errors.js';
import { parseMethod, toLoggedCommand, type LoggedCommand, type WriteLog } from './write-log.js';

type Results = [Error | null, unknown][];
type AnyFn = (...args: unknown[]) => unknown;

function chain(
  target: object,
  onCommand: (name: string, buffer: boolean, args: unknown[]) => boolean,
  exec: (args: unknown[]) => Promise<Results | null>,
): ChainableCommander {
  const proxy: ChainableCommander = new Proxy(target, {
    get(t, prop) {
      if (prop === 'exec') return (...args: unknown[]) => exec(args);
      if (typeof prop !== 'string') return Reflect.get(t, prop, t);
      const value = Reflect.get(t, prop, t);
      return (...args: unknown[]) => {
        const { name, buffer } = parseMethod(prop);
        if (onCommand(name, buffer, args)) return proxy;
        const r = (value as AnyFn).apply(t, args);
        return r === t ? proxy : r;
      };
    },
  }) as ChainableCommander;
  return proxy;
}

function finish(promise: Promise<Results | null>, args: unknown[]): Promise<Results | null> {
  const cb = typeof args[0] === 'function' ? (args[0] as (e: Error | null, r?: Results | null) => void) : undefined;
  if (cb) promise.then((r) => cb(null, r), (e: Error) => cb(e));
  return promise;
}

export function createGroup(log: WriteLog, db: () => number, client: Redis, atomic: boolean): ChainableCommander {
  let refused: UnsupportedCommandError | undefined;
  const guard = (name: string, buffer: boolean, args: unknown[]): LoggedCommand | undefined => {
    try {
      return toLoggedCommand(name, args, buffer ? null : 'utf8');
    } catch (err) {
      refused ??= err as UnsupportedCommandError;
      return undefined;
    }
  };

  if (atomic) {
    const commands: LoggedCommand[] = [];
    return chain(
      {},
      (name, buffer, args) => {
        const cmd = guard(name, buffer, args);
        if (cmd) commands.push(cmd);
        return true;
      },
      (args) => {
        const run = async (): Promise<Results> => {
          if (refused) throw refused;
          if (commands.length === 0) return [];
          const replies = (await log.send(client, db(), commands, false, true)) as unknown[];
          return replies.map((r, i) =>
            r instanceof Error ? [r, null] : [null, commands[i].command.transformReply(r as Buffer)],
          );
        };
        return finish(run(), args);
      },
    );
  }

  const pipe = client.pipeline();
  return chain(
    pipe,
    (name, buffer, args) => {
      if (!log.isLogged(name)) return false;
      const cmd = guard(name, buffer, args);
      if (cmd) log.send(pipe, db(), [cmd], true, buffer);
      return true;
    },
    (args) => finish(refused ? Promise.reject(refused) : pipe.exec(), args),
  );
}
