/**
 * Loads the Lua scripts in `lua/` and defines them as ioredis commands
 * (EVALSHA with EVAL fallback after NOSCRIPT, usable in pipelines).
 *
 * A script's file name ends in its key count (`trim-4.lua`); a name without
 * one takes the key count as its first argument. `--- @include "includes/x"`
 * pulls in a shared helper.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Redis, Result } from 'ioredis';

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
    return expand(readFileSync(`${LUA_DIR}${name}.lua`, 'utf8'), seen);
  });
}

function commandName(file: string): string {
  const base = file.replace(/(-\d+)?\.lua$/, '');
  return 'qsync' + base.replace(/(^|-)(\w)/g, (_m, _dash, c: string) => c.toUpperCase());
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
export function defineScripts(client: Redis): void {
  for (const s of scripts()) {
    if (typeof (client as unknown as Record<string, unknown>)[s.command] === 'function') continue;
    client.defineCommand(s.command, { lua: s.lua, numberOfKeys: s.numberOfKeys });
  }
}

type Arg = string | Buffer | number;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    qsyncLogWrite(numKeys: number, ...args: Arg[]): Result<unknown, Context>;
    qsyncLogWriteBuffer(numKeys: number, ...args: Arg[]): Result<unknown, Context>;
    qsyncApplyBatch(...args: Arg[]): Result<(number | string)[], Context>;
    qsyncReadBatchBuffer(...args: Arg[]): Result<Buffer[], Context>;
    qsyncTrim(...args: Arg[]): Result<number, Context>;
    qsyncLease(...args: Arg[]): Result<[number, number, string?], Context>;
    qsyncRelease(...args: Arg[]): Result<number, Context>;
  }
}
