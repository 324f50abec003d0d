/**
 * What multi() (producer/multi.ts) and pipeline() (producer/pipeline.ts)
 * share: a chainable object that hands every command called on it to its
 * group, and the check that turns a call into a command or says why it
 * cannot be sent. Either way an unsupported write, or a write to a key in
 * qsync's own namespace, makes exec() fail before anything is sent.
 */
import type { Redis, ChainableCommander } from 'ioredis';
import { exists } from '@ioredis/commands';
import { UnsupportedCommandError } from '../shared/errors.js';
import type { WriteGuard } from './write-guard.js';
import type { WriteLog } from './write-log.js';
import { definedScript, parseMethod, takeCallback, toLoggedCommand, type Callback, type LoggedCommand } from './calls.js';
import type { ScriptSender } from './user-scripts.js';
import type { BlockingPops } from './blocking.js';

export type Results = [Error | null, unknown][];
export type AnyFn = (...args: unknown[]) => unknown;
type OnCommand = (prop: string, args: unknown[], cb: Callback | undefined) => void;

/**
 * A chainable object: every Redis command (or defined script) called on it
 * goes to onCommand with its trailing callback taken off; any other property
 * is read from target.
 */
export function chain(client: Redis, target: object, onCommand: OnCommand, exec: (args: unknown[]) => Promise<Results | null>): ChainableCommander {
  const proxy: ChainableCommander = new Proxy(target, {
    get(t, prop) {
      if (prop === 'exec') return (...args: unknown[]) => exec(args);
      if (typeof prop !== 'string') return Reflect.get(t, prop, t);
      if (prop === 'call' || prop === 'callBuffer') {
        return (name: unknown, ...args: unknown[]) => {
          onCommand(String(name).toLowerCase() + (prop === 'call' ? '' : 'Buffer'), args, takeCallback(args));
          return proxy;
        };
      }
      if (!exists(parseMethod(prop).name) && !definedScript(client, prop)) {
        const value = Reflect.get(t, prop, t);
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          const r = (value as AnyFn).apply(t, args);
          return r === t ? proxy : r;
        };
      }
      return (...args: unknown[]) => {
        onCommand(prop, args, takeCallback(args));
        return proxy;
      };
    },
  }) as ChainableCommander;
  return proxy;
}

/** exec()'s promise, and its callback when one was given. */
export function finish(promise: Promise<Results | null>, args: unknown[]): Promise<Results | null> {
  const cb = typeof args[0] === 'function' ? (args[0] as Callback) : undefined;
  if (cb)
    promise.then(
      (r) => cb(null, r),
      (e: Error) => cb(e),
    );
  return promise;
}

/** What a multi() or a pipeline() works with. */
export interface GroupContext {
  log: WriteLog;
  guard: WriteGuard;
  client: Redis;
  /** the db the connection is in now */
  db: () => number;
  scripts: ScriptSender;
  blocking: BlockingPops;
}

/**
 * Checks each command called on a group: the command to send into db `at`,
 * or why it cannot be sent (refused, or Redis's own error for it). The first
 * refusal is kept: exec() then fails whole.
 */
export class GroupCheck {
  refused: UnsupportedCommandError | undefined;

  constructor(
    private readonly ctx: GroupContext,
    private readonly atomic: boolean,
  ) {}

  command(prop: string, args: unknown[], at: number): LoggedCommand | Error {
    const { guard } = this.ctx;
    const atomic = this.atomic;
    try {
      const { name, buffer } = parseMethod(prop);
      if (name === 'multi') {
        throw new UnsupportedCommandError(name, "inside multi() or pipeline() cannot be logged; use the producer's multi()");
      }
      if (atomic && name === 'select') {
        throw new UnsupportedCommandError(name, 'inside multi() cannot be logged (an entry has one db); call select() before multi()');
      }
      const cmd = toLoggedCommand(name, args, buffer ? null : 'utf8');
      guard.refuseOwnKeys(cmd, at);
      return cmd;
    } catch (err) {
      if (err instanceof UnsupportedCommandError) this.refused ??= err;
      return err as Error;
    }
  }
}

/** Calls the commands given up front as `[name, ...args]`, like ioredis's `multi([['set', 'k', 'v']])`. */
export function queueUpFront(group: ChainableCommander, batch: unknown[][]): ChainableCommander {
  for (const [name, ...args] of batch) (group as unknown as Record<string, AnyFn>)[String(name)](...args);
  return group;
}
