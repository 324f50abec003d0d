/**
 * Capped exponential backoff with full jitter: attempt n waits a random time
 * in [min, min(max, min * 2^n)], so that many workers reconnecting after the
 * same outage spread out instead of arriving together.
 */
export interface BackoffOptions {
  /** @default 100 */
  minMs?: number;
  /** @default 30000 */
  maxMs?: number;
}

export function backoffDelay(attempt: number, { minMs = 100, maxMs = 30_000 }: BackoffOptions = {}): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.round(minMs + Math.random() * (ceiling - minMs));
}

/** Resolves after ms, or at once when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
