/**
 * Blocking pops through the producer: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH,
 * BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP, and XREADGROUP ... BLOCK <ms> (which
 * delivers entries to a consumer group). Each try runs in the log-write script,
 * where a blocking command never blocks (it pops, logging what it popped, or
 * answers nil at once); when there was nothing, the producer waits for a
 * write to one of the keys (shared/wake-ups.ts) and tries again, until it
 * pops or its timeout passes (seconds, fractions too; XREADGROUP's in ms;
 * 0 waits for ever).
 *
 * The first try is sent in order with the client's other commands, so a
 * BLPOP issued after an RPUSH on the same client sees the element. The
 * waiting does not hold up the client: commands issued meanwhile are sent at
 * once (Redis would hold the connection). Inside multi() a blocking command
 * does not wait, as inside a MULTI.
 */
import type { Redis } from 'ioredis';
import { blockOption, commandSpec, keyIndexes } from '../shared/commands.js';
import type { LoggedCommand } from './calls.js';
import { KeyWakeups } from '../shared/wake-ups.js';

/**
 * The longest a wait goes without trying again when no wake-up came: what a
 * lost wake-up costs at most.
 */
export const RETRY_MS = 200;

/** The keys a blocking command pops (or reads) from: all of its keys, but the source only for BLMOVE and BRPOPLPUSH. */
function popKeys(cmd: LoggedCommand): (string | Buffer)[] {
  const spec = commandSpec(cmd.name);
  if (!spec) return [];
  const keys = keyIndexes(spec.keys, cmd.args).map((i) => cmd.args[i]);
  return spec.log === 'bmove' ? keys.slice(0, 1) : keys;
}

/** How long a blocking command may wait, in ms (Infinity for 0); undefined for a command that never waits. */
export function waitMs(cmd: LoggedCommand): number | undefined {
  const where = commandSpec(cmd.name)?.timeout;
  if (!where) return undefined;
  if (where === 'BLOCK') {
    // XREADGROUP ... BLOCK <ms>: without BLOCK it never waits.
    const ms = Number(blockOption(cmd.args));
    if (!(ms >= 0)) return undefined;
    return ms === 0 ? Number.POSITIVE_INFINITY : ms;
  }
  const seconds = Number(String(cmd.args[where === 'first' ? 0 : cmd.args.length - 1]));
  if (!(seconds >= 0)) return undefined;
  return seconds === 0 ? Number.POSITIVE_INFINITY : Math.ceil(seconds * 1000);
}

export class BlockingPops {
  private readonly wakeups?: KeyWakeups;

  /**
   * `client` hears of writes to the keys waited on; without one (a Redis
   * Cluster, whose writes each node tells only its own connections of) a
   * wait tries again every RETRY_MS.
   */
  constructor(client: Redis | undefined) {
    if (client) this.wakeups = new KeyWakeups(client);
  }

  /**
   * Runs a write through `send` (one try in the log-write script). A
   * blocking command that popped nothing tries again at each wake-up, and
   * every RETRY_MS without one, until it pops or its timeout passes: then it
   * resolves with nil, as Redis answers. Rejects when the client is closed
   * meanwhile, as ioredis rejects a blocking command then.
   */
  run(cmd: LoggedCommand, send: () => Promise<unknown>): Promise<unknown> {
    return commandSpec(cmd.name)?.timeout ? this.pop(cmd, send) : send();
  }

  private async pop(cmd: LoggedCommand, send: () => Promise<unknown>): Promise<unknown> {
    const first = await send();
    const ms = first === null ? waitMs(cmd) : undefined;
    if (ms === undefined) return first;
    const deadline = Date.now() + ms;
    const wait = this.wakeups?.watch(popKeys(cmd));
    try {
      // From here on, a write to a key wakes the wait, so none is missed between a try and the next.
      await wait?.ready;
      for (;;) {
        const reply = await send();
        if (reply !== null) return reply;
        const left = deadline - Date.now();
        if (left <= 0) return null;
        const pause = Math.min(left, RETRY_MS);
        await (wait ? wait.next(pause) : new Promise((resolve) => setTimeout(resolve, pause)));
        this.wakeups?.cover();
      }
    } finally {
      wait?.close();
    }
  }
}
