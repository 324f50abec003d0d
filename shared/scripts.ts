/**
 * Loads the Lua scripts in `lua/` and defines them as ioredis commands
 * (EVALSHA with EVAL fallback after NOSCRIPT, usable in pipelines).
 *
 * A script's file name ends in its key count (`trim-4.lua`); a name without
 * one takes the key count as its first argument. `--- @include "includes/x"`
 * pulls in a shared helper; `--- @include "reply-codes"` the names of the
 * reply codes (shared/reply-codes.ts).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Cluster, Redis, Result } from 'ioredis';
import { replyCodesLua } from './reply-codes.js';

const LUA_DIR = fileURLToPath(new URL('./lua/', import.meta.url));

export interface Script {
  /** the ioredis command name, e.g. `qsyncTrim` */
  command: string;
  numberOfKeys?: number;
  lua: string;
}

function expand(source: string, seen: Set<string>): string {
  return source.replace(/^--- @include "([\w/-]+)"$/gm, (_line, name: string) => {
    if (seen.has(name)) return '';
    seen.add(name);
    if (name === 'reply-codes') return replyCodesLua();
    return expand(readFileSync(`${LUA_DIR}${name}.lua`, 'utf8'), seen);
  });
}

/**
 * A Lua file under `lua/` (its name without `.lua`) with its includes
 * expanded: for scripts built at run time, such as the wrapper of users'
 * scripts (lua/wrap/).
 */
export function expandLua(name: string): string {
  return expand(readFileSync(`${LUA_DIR}${name}.lua`, 'utf8'), new Set());
}

function commandName(file: string): string {
  const base = file.replace(/(-\d+)?\.lua$/, '');
  return `qsync${base.replace(/(^|-)(\w)/g, (_m, _dash, c: string) => c.toUpperCase())}`;
}

let cache: Script[] | undefined;

/** Every script, expanded. Read once per process. */
export function scripts(): Script[] {
  cache ??= readdirSync(LUA_DIR)
    .filter((f) => f.endsWith('.lua'))
    .map((file) => {
      const keys = /-(\d+)\.lua$/.exec(file);
      return {
        command: commandName(file),
        numberOfKeys: keys ? Number(keys[1]) : undefined,
        lua: expand(readFileSync(LUA_DIR + file, 'utf8'), new Set()),
      };
    });
  return cache;
}

/** Defines every qsync script on a client (idempotent). */
export function defineScripts(client: Redis | Cluster): void {
  for (const s of scripts()) {
    if (typeof (client as unknown as Record<string, unknown>)[s.command] === 'function') continue;
    client.defineCommand(s.command, { lua: s.lua, numberOfKeys: s.numberOfKeys });
  }
}

type Arg = string | Buffer | number;

/**
 * Every script as a typed ioredis command (name from the file name: `trim-4.lua` is `qsyncTrim`), in one place.
 * A reply that leads with a code uses shared/reply-codes.ts; each script's header says what follows the code.
 */
declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** log-write.lua: the write's reply, or the array of a group's replies */
    qsyncLogWrite(numKeys: number, ...args: Arg[]): Result<unknown, Context>;
    qsyncLogWriteBuffer(numKeys: number, ...args: Arg[]): Result<unknown, Context>;
    /** log-simple.lua: as log-write.lua, for writes logged as they were sent */
    qsyncLogSimple(numKeys: number, ...args: Arg[]): Result<unknown, Context>;
    qsyncLogSimpleBuffer(numKeys: number, ...args: Arg[]): Result<unknown, Context>;
    /** apply-batch-1.lua */
    qsyncApplyBatch(...args: Arg[]): Result<(number | string)[], Context>;
    /** read-batch-2.lua: epoch, seq, entries left[, entries before], then the entries (or their lengths and the entries end to end: consumer/drain/batch.ts) */
    qsyncReadBatchBuffer(...args: Arg[]): Result<Buffer[], Context>;
    /** trim-4.lua */
    qsyncTrim(...args: Arg[]): Result<number, Context>;
    /** park-5.lua */
    qsyncPark(...args: Arg[]): Result<number, Context>;
    /** attach-2.lua: {OK, seq, epoch, ts} or {DETACHED, why} */
    qsyncAttach(
      meta: string,
      log: string,
      name: string,
      where: 'head' | 'tail',
      watermark: number | string,
    ): Result<[number, string, string, string?], Context>;
    /** detach-2.lua: 1 detached, 0 not attached */
    qsyncDetach(meta: string, log: string, name: string, why: string): Result<number, Context>;
    /** lease-2.lua: {1, 0} taken or renewed; {0, pttl, holder} held by another */
    qsyncLease(...args: Arg[]): Result<[number, number, string?], Context>;
    /** release-1.lua: 1 released, 0 not held by this token */
    qsyncRelease(...args: Arg[]): Result<number, Context>;
    /** retry-dead-1.lua */
    qsyncRetryDead(...args: Arg[]): Result<(number | string)[], Context>;
    /** replace-dead-1.lua: 1 replaced, 0 not found */
    qsyncReplaceDead(...args: Arg[]): Result<number, Context>;
    /** repair-start-4.lua */
    qsyncRepairStart(meta: string, dirty: string, repairing: string, log: string): Result<unknown[], Context>;
    /** resync-copy-1.lua: seq, epoch, then key, type, dump, absolute expiry for each key */
    qsyncResyncCopyBuffer(...args: Arg[]): Result<unknown[], Context>;
    /** resync-read-1.lua: seq, epoch, n, n packed arrays of copies, then the big keys */
    qsyncResyncReadBuffer(...args: Arg[]): Result<Array<Buffer | number>, Context>;
    /** resync-restore.lua (key count first): keys or members written */
    qsyncResyncRestore(numKeys: number, ...keysAndArgs: Arg[]): Result<number, Context>;
    /** resync-replay.lua (key count first) */
    qsyncResyncReplay(numKeys: number, ...keysAndArgs: Arg[]): Result<[number, number, string?], Context>;
    /** restore-held-1.lua: code, then keys restored and keys still pending (or the replica's epoch) */
    qsyncRestoreHeld(...args: Arg[]): Result<[number, number | string, number?], Context>;
    /** shard-leases-2.lua: the leases' expiry (server ms), live consumers, the share, then the node ids held */
    qsyncShardLeases(...args: Arg[]): Result<[number, number, number, ...string[]], Context>;
    /** shard-leases-release-2.lua: leases released */
    qsyncShardLeasesRelease(...args: Arg[]): Result<number, Context>;
    /** sweep-logs-0.lua: the positions of the arguments (slot logs) that are not empty */
    qsyncSweepLogs(...logs: Arg[]): Result<number[], Context>;
    /** set-limits.lua: 1 */
    qsyncSetLimits(numKeys: 1 | 2, ...keysAndArgs: string[]): Result<number, Context>;
  }
}
