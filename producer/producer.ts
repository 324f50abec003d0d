/**
 * createProducer: an ioredis client whose writes are logged for replication.
 *
 * The returned object is the client itself behind a Proxy: reads, connection
 * methods and events go straight through; every supported write runs through
 * the log-write script; any other write, and any write to a key in qsync's
 * own namespace, is refused before anything is sent (producer/write-guard.ts).
 */
import type { Redis, Cluster, ChainableCommander, Command } from 'ioredis';
import { exists } from '@ioredis/commands';
import { commandSpec, isReadCall, isUnsupportedWrite } from '../shared/commands.js';
import type { UnsupportedCommandError } from '../shared/errors.js';
import { checkName, queueDbOption } from '../shared/config.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE } from '../shared/keys.js';
import { WriteLog, type ProducerOptions as LogOptions } from './write-log.js';
import { toLoggedCommand, parseMethod, takeCallback, flattenArgs, refusal, type Callback } from './calls.js';
import { ScriptSender, rememberScript, readOnlyScript, scriptItem, wrapScripts, scriptCall, isScriptMethod } from './user-scripts.js';
import { createMulti } from './multi.js';
import { createPipeline } from './pipeline.js';
import { refuseLater } from './refusals.js';
import { WriteBatcher } from './batcher.js';
import { WriteGuard } from './write-guard.js';
import { BlockingPops } from './blocking.js';
import { ReplicationWaiter, type InOrder, type WaitReplicated } from './wait-replicated.js';
import { clusterParts, isCluster } from './cluster.js';

export interface ProducerOptions extends LogOptions {
  /**
   * Write even when the master's maxmemory-policy lets Redis evict keys
   * (allkeys-*, volatile-*). By default the first write on a connection
   * checks the policy and every write is refused with a ConfigError until it
   * is `noeviction`: an evicted log entry, or a data key evicted on the
   * master with no entry written, leaves the replica silently different.
   * @default false
   */
  allowEviction?: boolean;
}

type AnyFn = (...args: unknown[]) => unknown;

function settle(promise: Promise<unknown>, cb: Callback | undefined): Promise<unknown> {
  if (cb)
    promise.then(
      (r) => cb(null, r),
      (e: Error) => cb(e),
    );
  return promise;
}

/** The producer's parts on a standalone master (or one reached through Sentinel). */
function standaloneParts(
  client: Redis,
  { prefix, queue, queueDb, allowEviction }: { prefix: string; queue: string; queueDb: number; allowEviction: boolean },
) {
  const log = new WriteLog(client, { prefix, queue, queueDb });
  return {
    log,
    guard: new WriteGuard(client, log.keys, queueDb, allowEviction),
    blocking: new BlockingPops(client),
    scripts: new ScriptSender(log.keys, log.queueDb),
    waiter: (inOrder: InOrder) => new ReplicationWaiter(client, log.keys, log.queueDb, inOrder),
  };
}

/**
 * Wraps an ioredis client so that every write is logged to the qsync queue on
 * the same server, atomically with the write.
 *
 * @example
 * const db = createProducer(new Redis(process.env.MASTER_URL));
 * await db.set('user:1:name', 'Zhangsan', 'EX', 3600);
 * await db.multi().incr('visits').lpush('recent', 'u1').exec();
 *
 * A Redis Cluster (`new Cluster([...])`) logs each write in the queue of its
 * keys' hash slot (producer/cluster.ts).
 */
export function createProducer<T extends Redis | Cluster>(given: T, options: ProducerOptions = {}): T & WaitReplicated {
  const client = given as unknown as Redis;
  // The same checks as the CLI's flags: a queue the producer writes to must be one a consumer can drain.
  const prefix = checkName(options.prefix ?? DEFAULT_PREFIX, 'the prefix option');
  const queue = checkName(options.queue ?? DEFAULT_QUEUE, 'the queue option');
  const queueDb = queueDbOption(options.queueDb, 'the queueDb option');
  const settings = { prefix, queue, queueDb, allowEviction: options.allowEviction === true };
  const { log, guard, blocking, scripts, waiter: newWaiter } = isCluster(given) ? clusterParts(given, settings) : standaloneParts(client, settings);
  // The db the connection is in, as ioredis itself tracks it: it emits 'select'
  // for every SELECT sent (by select(), call(), a pipeline, a reconnect), so the
  // log names the db the write really ran in.
  let db = (client as unknown as { condition?: { select?: number } }).condition?.select ?? client.options.db ?? 0;
  client.on('select', (index: number) => {
    db = index;
  });
  const methods = new Map<string | symbol, unknown>();
  const batcher = new WriteBatcher(log, client);

  const write =
    (name: string, buffer: boolean) =>
    (...args: unknown[]): Promise<unknown> => {
      const cb = takeCallback(args);
      let promise: Promise<unknown>;
      try {
        const cmd = toLoggedCommand(name, args, null);
        const spec = commandSpec(cmd.name);
        if (spec && isReadCall(spec, cmd.args)) {
          // SORT without STORE, BITFIELD with GET alone: a read, sent as it is.
          const send = buffer ? client.callBuffer : client.call;
          return settle(inOrder(() => (send as AnyFn).call(client, cmd.name, ...cmd.args)) as Promise<unknown>, cb);
        }
        const at = db;
        guard.refuseOwnKeys(cmd, at);
        // A blocking pop that found nothing tries again until its timeout (producer/blocking.ts).
        promise = blocking.run(cmd, () => guard.run(true, () => batcher.add(cmd, at, buffer)));
      } catch (err) {
        promise = refuseLater(client, err as Error);
      }
      return settle(promise, cb);
    };

  /**
   * A script call (EVAL, EVALSHA, a defined command). A script that cannot
   * write runs as it is; any other runs wrapped, its writes logged as one
   * entry (producer/user-scripts.ts).
   */
  const script =
    (prop: string) =>
    (...args: unknown[]): Promise<unknown> => {
      const cb = takeCallback(args);
      let promise: Promise<unknown>;
      try {
        const { source, flat, buffer } = scriptCall(client, prop, args);
        if (readOnlyScript(source)) {
          promise = inOrder(() => (client as unknown as Record<string, AnyFn>)[prop].apply(client, args)) as Promise<unknown>;
        } else {
          const wrapped = wrapScripts([source], true);
          const sent = scripts.args(db, true, scriptItem(1, flat));
          promise = guard.run(true, () => {
            batcher.flush();
            return scripts.run(client, wrapped, sent, buffer).catch((err: Error) => Promise.reject(log.refusal(err)));
          });
        }
      } catch (err) {
        promise = refuseLater(client, err as Error);
      }
      return settle(promise, cb);
    };

  /** SCRIPT LOAD teaches the producer the source, so that EVALSHA of it can be logged. */
  const scriptCommand =
    (buffer: boolean) =>
    (...args: unknown[]): unknown => {
      const flat = flattenArgs(
        'script',
        args.filter((a) => typeof a !== 'function'),
      );
      if (String(flat[0] ?? '').toLowerCase() === 'load' && flat.length === 2) rememberScript(flat[1]);
      return inOrder(() => (client as unknown as Record<string, AnyFn>)[buffer ? 'scriptBuffer' : 'script'].apply(client, args));
    };

  const refuse =
    (err: UnsupportedCommandError) =>
    (...args: unknown[]): Promise<unknown> =>
      settle(refuseLater(client, err), takeCallback(args));

  const groupContext = { log, guard, client, db: () => db, scripts, blocking };
  let waiter: Pick<ReplicationWaiter, 'wait'> | undefined;
  const group =
    (create: typeof createMulti) =>
    (...args: unknown[]) => {
      batcher.flush();
      return create(groupContext, Array.isArray(args[0]) ? (args[0] as unknown[][]) : []);
    };

  const overrides: Record<string, (...args: unknown[]) => unknown> = {
    multi: group(createMulti),
    pipeline: group(createPipeline),
    call: (name: unknown, ...args: unknown[]) => route(String(name), false)(...args),
    callBuffer: (name: unknown, ...args: unknown[]) => route(String(name), true)(...args),
    // A Command sent by hand is a write like any other.
    sendCommand(command: unknown, ...rest: unknown[]) {
      batcher.flush();
      const c = command as Command;
      if (!log.isLogged(c.name.toLowerCase())) return inOrder(() => (client.sendCommand as AnyFn).call(client, c, ...rest));
      const buffer = !(c as unknown as { replyEncoding?: string | null }).replyEncoding;
      (route(c.name, buffer)(...c.args) as Promise<unknown>).then(c.resolve, c.reject);
      return c.promise;
    },
    // waitReplicated(numReplicas, timeoutMs): producer/wait-replicated.ts, one watcher per producer.
    waitReplicated: (numReplicas: unknown, timeoutMs: unknown) => {
      waiter ??= newWaiter(inOrder);
      return waiter.wait(Number(numReplicas), Number(timeoutMs));
    },
    // A second connection must log its writes too.
    duplicate: (...args: unknown[]) => createProducer((client.duplicate as AnyFn).apply(client, args) as T, options),
  };

  function route(name: string, buffer: boolean): (...args: unknown[]) => unknown {
    const lower = name.toLowerCase();
    if (commandSpec(lower)) return write(lower, buffer);
    if (lower === 'eval' || lower === 'evalsha') return script(buffer ? `${lower}Buffer` : lower);
    if (lower === 'script') return (...args: unknown[]) => scriptCommand(buffer)(...args);
    if (isUnsupportedWrite(lower)) return refuse(refusal(lower));
    const call = buffer ? client.callBuffer : client.call;
    return (...args: unknown[]) => inOrder(() => (call as AnyFn).call(client, name, ...args));
  }

  function method(prop: string): unknown {
    if (Object.hasOwn(overrides, prop)) return overrides[prop];
    if (isScriptMethod(client, prop)) return script(prop);
    const { name, buffer } = parseMethod(prop);
    if (commandSpec(name)) return write(name, buffer);
    if (name === 'script') return scriptCommand(buffer);
    if (isUnsupportedWrite(name)) return refuse(refusal(name));
    const value = Reflect.get(client, prop, client);
    if (typeof value !== 'function') return value;
    if (!exists(name)) {
      return (...args: unknown[]) => {
        batcher.flush();
        return (value as AnyFn).apply(client, args);
      };
    }
    return (...args: unknown[]) => inOrder(() => (value as AnyFn).apply(client, args));
  }

  /** Any other command goes after the writes issued before it: those waiting to be sent, and those waiting for the server check. */
  function inOrder(send: () => unknown): unknown {
    return guard.run(false, () => {
      batcher.flush();
      return send() as Promise<unknown>;
    });
  }

  return new Proxy(given as T & WaitReplicated, {
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
