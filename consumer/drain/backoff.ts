/**
 * Reconnect delays. Most outages of a cross-DC link are blips: for the first
 * `quickMs` of an outage a connection is retried about every `minMs` (a
 * refused or unanswered SYN costs nothing), so that the replica catches up
 * right after the link heals. A longer outage backs off exponentially with
 * full jitter up to `maxMs`: attempt n waits a random time in
 * [min, min(max, min * 2^n)], so that many workers spread out instead of
 * arriving together.
 */
export interface BackoffOptions {
  /** @default 25 */
  minMs?: number;
  /** @default 30000 */
  maxMs?: number;
  /** how long retries stay quick. @default 5000 */
  quickMs?: number;
}

/** The delay before attempt `attempt` (1 for the first retry of an outage). */
export function backoffDelay(attempt: number, { minMs = 25, maxMs = 30_000, quickMs = 5000 }: BackoffOptions = {}): number {
  const quick = Math.floor(quickMs / minMs);
  if (attempt <= quick) return Math.round(Math.min(maxMs, minMs * (0.5 + Math.random())));
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt - quick, 30));
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
