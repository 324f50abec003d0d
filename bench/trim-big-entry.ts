/**
 * `npx tsx bench/trim-big-entry.ts [MiB]`: how long the master is held by
 * the consumer's confirmation (trim) of one big entry at the head of the log.
 *
 * One SET of a value of the given size (20 MiB by default) is logged through
 * the producer; the confirmation the consumer sends for it is then run on the
 * master, and its time is taken from the master's own SLOWLOG (the script's
 * run, without the round trip). The log is refilled between rounds.
 */
import { createProducer } from '../producer/index.js';
import { Confirmer } from '../consumer/drain/confirm.js';
import { QueueKeys } from '../shared/keys.js';
import { createLogger } from '../shared/logger.js';
import { defineScripts } from '../shared/scripts.js';
import { startRedis } from '../test/support/redis-server.js';

const MIB = Number(process.argv[2] ?? 20);
const ROUNDS = 5;

const master = await startRedis({ args: ['--slowlog-log-slower-than', '0', '--slowlog-max-len', '1000'] });
try {
  const client = master.client();
  defineScripts(client);
  const keys = new QueueKeys('qsync', 'default');
  const db = createProducer(master.client());
  const value = Buffer.alloc(MIB * 1024 * 1024, 'x');
  const confirmer = new Confirmer(client, client, keys, 'bench', createLogger('silent'));
  const times: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    await db.set('big', value);
    const entries = await client.lrangeBuffer(keys.log, 0, -1);
    const seq = Number(await client.hget(keys.meta, 'seq'));
    await client.set(keys.lease, 'bench', 'PX', 60_000);
    await client.slowlog('RESET');
    await confirmer.confirm(entries, '', [0, seq, entries.length]);
    const log = (await client.slowlog('GET', 100)) as [number, number, number, string[]][];
    const trim = log.find((e) => String(e[3][0]).toLowerCase() === 'evalsha' || String(e[3][0]).toLowerCase() === 'eval');
    if (!trim) throw new Error('no script call in the slowlog');
    times.push(trim[2] / 1000);
    if ((await client.llen(keys.log)) !== 0) throw new Error('the entry was not trimmed');
  }
  times.sort((a, b) => a - b);
  console.log(`trim of one ${MIB} MiB head entry, ${ROUNDS} rounds: median ${times[Math.floor(ROUNDS / 2)].toFixed(2)} ms on the master (min ${times[0].toFixed(2)}, max ${times[ROUNDS - 1].toFixed(2)})`);
} finally {
  await master.destroy();
}
