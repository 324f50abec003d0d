/**
 * Redis's own full synchronisation as a yardstick: REPLICAOF onto a server,
 * timed until the copy is loaded.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { RedisServer } from '../../test/support/redis-server.js';

/**
 * Seconds from REPLICAOF until `replica` holds `master`'s dataset (link up,
 * no sync in progress). Then detaches it, keeping the copy; fails unless it
 * holds `expectedKeys` keys.
 */
export async function fullSync(master: RedisServer, replica: Redis, expectedKeys: number): Promise<number> {
  const t0 = performance.now();
  await replica.replicaof(master.host, master.port);
  for (;;) {
    const info = await replica.info('replication');
    if (/master_link_status:up/.test(info) && /master_sync_in_progress:0/.test(info)) break;
    await sleep(20);
  }
  const seconds = (performance.now() - t0) / 1000;
  await replica.replicaof('NO', 'ONE');
  const size = await replica.dbsize();
  if (size !== expectedKeys) throw new Error(`full sync loaded ${size} keys, expected ${expectedKeys}`);
  return seconds;
}
