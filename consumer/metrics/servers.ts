/**
 * Metrics about the two servers a consumer syncs, from its last measurement
 * (queue/server-monitor.ts): the clock offset between them and whether
 * either may evict keys.
 */
import { Gauge, type Registry } from 'prom-client';
import { canEvict } from '../../shared/probe.js';
import type { ServerReport } from '../queue/servers.js';

export function serverMetrics(registry: Registry, queue: string, servers: { latest?: ServerReport }): void {
  const offset: Gauge<'queue'> = new Gauge({
    name: 'qsync_clock_offset_seconds',
    help: "the replica's clock minus the master's, measured with TIME on both",
    labelNames: ['queue'],
    registers: [registry],
    collect() {
      const ms = servers.latest?.clockOffsetMs;
      if (ms !== undefined && ms !== null) offset.set({ queue }, ms / 1000);
    },
  });
  const eviction: Gauge<'queue' | 'side' | 'policy'> = new Gauge({
    name: 'qsync_eviction_possible',
    help: "1 when the server's maxmemory-policy lets Redis remove keys on its own (anything but noeviction)",
    labelNames: ['queue', 'side', 'policy'],
    registers: [registry],
    collect() {
      const policy = servers.latest?.maxmemoryPolicy;
      if (!policy) return;
      eviction.reset();
      for (const side of ['master', 'replica'] as const) {
        const p = policy[side];
        if (p !== null) eviction.set({ queue, side, policy: p }, canEvict(p) ? 1 : 0);
      }
    },
  });
}
