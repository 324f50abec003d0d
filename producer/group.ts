/**
 * multi() and pipeline() on a producer.
 *
 * multi(): the commands are collected and sent at exec() as one script call,
 * so the group is atomic on the master and logged as one entry, which the
 * replica applies atomically too. Reads may be part of it.
 * pipeline(): a real ioredis pipeline in which every write is its own logged
 * script call (atomic one by one, like a pipeline).
 *
 * Either way an unsupported write, or a write to a key in qsync's own
 * namespace, makes exec() fail before anything is sent.
 * A queue full under the `reject` policy refuses a whole multi() (exec()
 * rejects with a QueueFullError) and, in a pipeline(), each write it
 * reaches (its result holds the QueueFullError).
 */
import { ReplyError, type Redis, type ChainableCommander } from 'ioredis';
import { exists } from '@ioredis/commands';
import { UnsupportedCommandError } from '../shared/errors.js';
import { refuseLater, rejectLater, reportRefusal } from './refusals.js';
import { exactReply } from './exact-integers.js';
import type { WriteGuard } from './write-guard.js';
import {
  definedScript,
  parseMethod,
  takeCallback,
  toLoggedCommand,
  SCRIPT_REFUSED,
  type Callback,
  type LoggedCommand,
  type WriteLog,
  shapeReply,
} from './write-log.js';

type Results = [Error | null, unknown][];
type AnyFn = (...args: unknown[]) => unknown;
type OnCommand = (prop: string, args: unknown[], cb: Callback | undefined) => void;

/**
 * A chainable object: every Redis command (or defined script) called on it
 * goes to onCommand with its trailing callback taken off; any other property
 * is read from target.
 */
function chain(client: Redis, target: object, onCommand: OnCommand, exec: (args: unknown[]) => Promise<Results | null>): ChainableCommander {
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

function finish(promise: Promise<Results | null>, args: unknown[]): Promise<Results | null> {
  const cb = typeof args[0] === 'function' ? (args[0] as Callback) : undefined;
  if (cb) promise.then((r) => cb(null, r), (e: Error) => cb(e));
  return promise;
}

/**
 * A multi() (atomic) or pipeline() on the producer's client. `batch` holds
 * commands given up front as `[name, ...args]`, like ioredis's
 * `multi([['set', 'k', 'v']])`.
 */
export function createGroup(log: WriteLog, guard: WriteGuard, db: () => number, client: Redis, atomic: boolean, batch: unknown[][] = []): ChainableCommander {
  let refused: UnsupportedCommandError | undefined;
  /** The command to send into db `at`, or why it cannot be: refused, or Redis's own error for it. */
  const check = (prop: string, args: unknown[], at: number): LoggedCommand | Error => {
    try {
      const script = definedScript(client, prop);
      if (script && (atomic || !script.readOnly)) {
        throw new UnsupportedCommandError(script.name, atomic ? 'is a Lua script and cannot run inside multi()' : SCRIPT_REFUSED);
      }
      const { name, buffer } = parseMethod(prop);
      if (name === 'multi') {
        throw new UnsupportedCommandError(name, 'inside multi() or pipeline() cannot be logged; use the producer\'s multi()');
      }
      if (atomic && name === 'select') {
        throw new UnsupportedCommandError(name, 'inside multi() cannot be logged (an entry has one db); call select() before multi()');
      }
      const cmd = toLoggedCommand(name, args, buffer ? null : 'utf8');
      guard.refuseOwnKeys(cmd, at);
      return cmd;
    } catch (err) {
      if (err instanceof UnsupportedCommandError) refused ??= err;
      return err as Error;
    }
  };

  let group: ChainableCommander;
  if (atomic) {
    const commands: LoggedCommand[] = [];
    const queued: Callback[] = [];
    // Commands Redis would refuse to queue (wrong arity): like MULTI, exec() then runs nothing.
    const queueErrors: Error[] = [];
    group = chain(
      client,
      {},
      (prop, args, cb) => {
        const cmd = check(prop, args, db());
        if (!(cmd instanceof Error)) commands.push(cmd);
        else if (!(cmd instanceof UnsupportedCommandError)) queueErrors.push(cmd);
        if (cb) queued.push(cb);
      },
      (args) => {
        const run = async (): Promise<Results> => {
          if (refused) return refuseLater(client, refused);
          if (queueErrors.length > 0) {
            return rejectLater(Object.assign(new ReplyError('EXECABORT Transaction discarded because of previous errors.') as Error, { previousErrors: queueErrors }));
          }
          if (commands.length === 0) return [];
          const sent = log.send(client, db(), commands, false, true) as Promise<unknown[]>;
          // As in a MULTI, each command's own callback hears that it was queued.
          for (const cb of queued) cb(null, 'QUEUED');
          const replies = await sent;
          return replies.map((r, i) =>
            r instanceof Error ? [r, null] : [null, shapeReply(commands[i], r)],
          );
        };
        return finish(refused ? run() : guard.run(true, run), args);
      },
    );
  } else {
    const pipe = client.pipeline();
    const methods = pipe as unknown as Record<string, AnyFn>;
    const raw = (prop: string, args: unknown[], cb: Callback | undefined) => {
      const tail = cb ? [cb] : [];
      if (typeof methods[prop] === 'function') return methods[prop](...args, ...tail);
      // a command ioredis has no method for, given to call()
      const { name, buffer } = parseMethod(prop);
      return methods[buffer ? 'callBuffer' : 'call'](name, ...args, ...tail);
    };
    // A result is kept as ioredis shapes it; only a full queue's refusal becomes a QueueFullError.
    // The logged writes by their place in the pipeline, for their replies (producer/exact-integers.ts).
    const logged = new Map<number, LoggedCommand>();
    const asRefusal = (res: Results[number], i: number): Results[number] =>
      res[0] ? ([reportRefusal(client, log.refusal(res[0])), ...res.slice(1)] as Results[number]) : [null, exactReply(logged.get(i), res[1], client.options)];
    // A SELECT queued in the pipeline moves the writes queued after it.
    let selected: number | undefined;
    group = chain(
      client,
      pipe,
      (prop, args, cb) => {
        const { name, buffer } = parseMethod(prop);
        const script = definedScript(client, prop);
        if (script ? script.readOnly : !log.isLogged(name) && name !== 'multi') {
          if (name === 'select') selected = Number(args[0]);
          raw(prop, args, cb);
          return;
        }
        const cmd = check(prop, args, selected ?? db());
        if (!(cmd instanceof Error)) {
          logged.set((pipe as unknown as { length: number }).length, cmd);
          log.send(pipe, selected ?? db(), [cmd], true, buffer, cb);
        }
        // Redis answers a wrong number of arguments with its own error, running nothing.
        else if (!(cmd instanceof UnsupportedCommandError)) raw(prop, args, cb);
      },
      (args) => finish(refused ? refuseLater(client, refused) : guard.run(true, () => pipe.exec().then((results) => results && results.map(asRefusal))), args),
    );
  }
  for (const [name, ...args] of batch) (group as unknown as Record<string, AnyFn>)[String(name)](...args);
  return group;
}
