/**
 * Which of a source master's slots have entries, without reading 16,384
 * keys per poll: keyspace notifications on the slots' logs wake the shard's
 * worker (a hint: pub/sub drops messages when the link breaks), and a sweep
 * once a second (one pipelined LLEN per owned slot) covers any lost one.
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../../shared/logger.js';
import { slotOfOwnKey, slotPrefix } from '../../shared/cluster.js';

/** The keyspace events the wake-ups need: K (keyspace channel) and l (list commands), or A (all) for l. */
function withListEvents(flags: string): string | undefined {
  const hasK = flags.includes('K');
  const hasL = flags.includes('l') || flags.includes('A');
  if (hasK && hasL) return undefined;
  return `${flags}${hasK ? '' : 'K'}${hasL ? '' : 'l'}`;
}

/** A pattern that matches `text` literally (glob characters escaped). */
function literal(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

/** Appends to a log are what wake a worker; its own trims and attaches do not. */
const APPENDS = new Set(['rpush', 'lpush']);

/**
 * Turns on keyspace notifications for list commands on a node when they are
 * off (CONFIG SET, logged), and subscribes to its slots' logs of the queue:
 * `onWrite(slot)` for each append heard. Returns false when the node refuses
 * CONFIG (then only the sweep finds entries).
 */
export async function subscribeLogs(
  admin: Redis,
  subscriber: Redis,
  prefix: string,
  queue: string,
  log: Logger,
  onWrite: (slot: number) => void,
): Promise<boolean> {
  let enabled = true;
  try {
    const [, flags] = (await admin.config('GET', 'notify-keyspace-events')) as [string, string];
    const wanted = withListEvents(flags ?? '');
    if (wanted !== undefined) {
      await admin.config('SET', 'notify-keyspace-events', wanted);
      log.info(
        { node: `${admin.options.host}:${admin.options.port}`, from: flags, to: wanted },
        "turned on keyspace notifications of list commands (notify-keyspace-events) so that writes to the slots' logs wake the consumer",
      );
    }
  } catch (err) {
    enabled = false;
    log.warn(
      { node: `${admin.options.host}:${admin.options.port}`, err: (err as Error).message },
      'cannot turn on keyspace notifications (CONFIG refused): appends wake the consumer only if notify-keyspace-events already has K and l (or A); the sweep of the logs finds entries once a second regardless',
    );
  }
  // Every queue's slot keys, not only this queue's logs: an ACL allows a
  // PSUBSCRIBE only of a pattern it names word for word, and one pattern per
  // prefix lets `qsync acl consumer-master` serve every queue. With the list
  // events only (l), what comes is the slots' lists: their logs, and dead letters.
  const pattern = `__keyspace@0__:${literal(prefix)}:{*}:*`;
  const channelStart = '__keyspace@0__:'.length;
  const suffix = `:${queue}:log`;
  await subscriber.psubscribe(pattern);
  subscriber.on('pmessage', (_pattern: string, channel: string, event: string) => {
    if (!APPENDS.has(event) || !channel.endsWith(suffix)) return;
    const key = channel.slice(channelStart);
    const slot = slotOfOwnKey(prefix, key);
    if (slot !== null && key.length === slotPrefix(prefix, slot).length + suffix.length) onWrite(slot);
  });
  return enabled;
}
