/**
 * createProducer: an ioredis client whose writes are logged for replication.
 *
 * The returned object is the client itself behind a Proxy: reads, connection
 * methods and events go straight through; every supported write runs through
 * the log-write script; any other write is refused before anything is sent.
 */
import type { Redis, ChainableCommander } from 'ioredis';
import { commandSpec, isUnsupportedWrite } from '../shared/commands.js';
import { UnsupportedCommandError } from '../shared/errors.js';
import { WriteLog, toLoggedCommand, parseMethod, type ProducerOptions } from './write-log.js';
import { createGroup } from './group.js';

export type { ProducerOptions };

type Callback = (err: Error | null, result?: unknown) => void;

/** Takes a trailing node-style callback off the arguments, as ioredis methods accept one. */
function takeCallback(args: unknown[]): Callback | undefined {
  return args.length > 0 && typeof args[args.length - 1] === 'function' ? (args.pop() as Callback) : undefined;
}

function settle(promise: Promise<unknown>, cb: Callback | undefined): Promise<unknown> {
  if (cb) promise.then((r) => cb(null, r), (e: Error) => cb(e));
  return promise;
}

/**
 * Wraps an ioredis client so that every write is logged to the qsync queue on
 * the same server, atomically with the write.
 *
 * @example
 * const db = createProducer(new Redis(process.env.MASTER_URL));
 * await db.set('user:1:name', 'Zhangsan', 'EX', 3600);
 * await db.multi().incr('visits').lpush('recent', 'u1').exec();
 */
export function createProducer<T extends Redis>(client: T, options: ProducerOptions = {}): T {
  const log = new WriteLog(client, options);
  let db = client.options.db ?? 0;
  const methods = new Map<string | symbol, unknown>();

  const write = (name: string, buffer: boolean) =>
    function (...args: unknown[]): Promise<unknown> {
      const cb = takeCallback(args);
      let promise: Promise<unknown>;
      try {
        const cmd = toLoggedCommand(name, args, null);
        promise = log.send(client, db, [cmd], true, buffer) as Promise<unknown>;
      } catch (err) {
        promise = Promise.reject(err);
      }
      return settle(promise, cb);
    };

  const refuse = (name: string) =>
    function (...args: unknown[]): Promise<unknown> {
      return settle(Promise.reject(new UnsupportedCommandError(name)), takeCallback(args));
    };

  const overrides: Record<string, (...args: unknown[]) => unknown> = {
    multi: () => createGroup(log, () => db, client, true),
    pipeline: () => createGroup(log, () => db, client, false),
    select(index: unknown, ...rest: unknown[]) {
      db = Number(index);
      return client.select(index as number, ...(rest as []));
    },
    call: (name: unknown, ...args: unknown[]) => route(String(name), false)(...args),
    callBuffer: (name: unknown, ...args: unknown[]) => route(String(name), true)(...args),
  };

  function route(name: string, buffer: boolean): (...args: unknown[]) => unknown {
    const lower = name.toLowerCase();
    if (commandSpec(lower)) return write(lower, buffer);
    if (isUnsupportedWrite(lower)) return refuse(lower);
    const call = buffer ? client.callBuffer : client.call;
    return (...args: unknown[]) => (call as (...a: unknown[]) => unknown).call(client, name, ...args);
  }

  function method(prop: string): unknown {
    if (Object.prototype.hasOwnProperty.call(overrides, prop)) return overrides[prop];
    const { name, buffer } = parseMethod(prop);
    if (commandSpec(name)) return write(name, buffer);
    if (isUnsupportedWrite(name)) return refuse(name);
    const value = Reflect.get(client, prop, client);
    return typeof value === 'function' ? value.bind(client) : value;
  }

  return new Proxy(client, {
    get(target, prop) {
      if (typeof prop !== 'string') return Reflect.get(target, prop, target);
      const cached = methods.get(prop);
      if (cached) return cached;
      const value = method(prop);
      if (typeof value === 'function') methods.set(prop, value);
      return value;
    },
  });
}

export type { ChainableCommander };
