/**
 * The writes every scenario sends: `SET bench:<i> <value>`, with distinct
 * keys so that each write creates a key on the replica too, and a way to keep
 * a fixed number of them in flight.
 */
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';

/** Bytes of each value unless a scenario says otherwise (a small session-like string). */
export const VALUE_BYTES = 32;

export function key(i: number): string {
  return `bench:${i}`;
}

export function value(i: number, bytes = VALUE_BYTES): string {
  return `v${i}:`.padEnd(bytes, 'x');
}

/**
 * Calls `op(0)` … `op(total - 1)` with `concurrency` calls in flight, like
 * that many request handlers sharing one connection. Resolves to ops/s.
 */
export async function runConcurrent(total: number, concurrency: number, op: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const lane = async () => {
    while (next < total) await op(next++);
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, lane));
  return (total * 1000) / (performance.now() - start);
}

/** `total` SETs of the workload through `client` (a plain client or a producer). Resolves to ops/s. */
export function writeSets(client: Redis, total: number, concurrency: number, valueBytes = VALUE_BYTES): Promise<number> {
  return runConcurrent(total, concurrency, (i) => client.set(key(i), value(i, valueBytes)));
}

/** Resolves once a fresh connection is ready, so that connecting is never timed. */
export async function connected(client: Redis): Promise<Redis> {
  if (client.status !== 'ready') await new Promise((resolve, reject) => client.once('ready', resolve).once('error', reject));
  return client;
}

/** `promise`, or a rejection naming `what` if it takes longer than `ms`; never holds the process open. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
