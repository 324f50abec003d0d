/**
 * Waiting for a condition instead of sleeping a fixed time: tests on a busy
 * machine poll until something holds, with a generous deadline.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Calls `fn` until it returns a truthy value (which is returned) or the
 * deadline passes. A throw counts as "not yet"; the last one is reported if
 * time runs out, so a failure says what was still wrong.
 */
export async function eventually<T>(fn: () => T | Promise<T>, timeoutMs = 10_000, what = 'condition', intervalMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value as NonNullable<T>;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const why = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`${what} not reached within ${timeoutMs} ms (last: ${why})`);
    }
    await sleep(intervalMs);
  }
}
