/**
 * Wake-ups on writes to keys, for waits that Redis cannot block on: the
 * producer's blocking pops (producer/blocking.ts), a replica following a log
 * that other replicas still hold (consumer/drain/worker.ts) and
 * waitReplicated (producer/wait-replicated.ts). Redis's client-side caching
 * in broadcasting mode (`CLIENT TRACKING ON BCAST PREFIX <key>...`) tells a
 * connection subscribed to `__redis__:invalidate` each time any client
 * writes a key a wait is on, with qsync or not. Two connections of the
 * client's own do it, made at the first wait and shared by all: one holds the
 * tracking, redirected to the other, the subscriber.
 *
 * A wake-up is a hint, never a promise: a wait also looks again on its own
 * after a short while, so a wake-up lost (a connection lost, a user whose
 * ACL refuses tracking) costs latency, never a write.
 */
import { ReplyError, type Redis } from 'ioredis';
import { OWN_CONNECTION } from './config.js';

/** The channel Redis sends invalidations to, in RESP2. */
const INVALIDATE = '__redis__:invalidate';

/** What ioredis rejects a command with once the connection is closed for good. */
export const CONNECTION_CLOSED = 'Connection is closed.';

/** A key's bytes as a string (one character a byte), to compare keys given as strings or Buffers. */
const keyId = (key: string | Buffer): string => (typeof key === 'string' ? Buffer.from(key) : key).toString('latin1');

/**
 * The fewest prefixes that cover the keys: Redis refuses two prefixes of one
 * client where one starts the other ('q' covers 'q:1').
 */
function coveringPrefixes(keys: Iterable<string>): string[] {
  const out: string[] = [];
  for (const key of [...new Set(keys)].sort()) {
    if (out.length === 0 || !key.startsWith(out[out.length - 1])) out.push(key);
  }
  return out;
}

/** One wait on some keys. */
export class Wait {
  private woken = false;
  private closedBy?: Error;
  private pending?: { done: () => void; fail: (err: Error) => void; timer: NodeJS.Timeout };

  constructor(
    readonly keys: ReadonlySet<string>,
    /** resolves once writes to the keys wake this wait, or once they cannot */
    readonly ready: Promise<void>,
    private readonly onClose: (wait: Wait) => void,
  ) {}

  /** Resolves at the first wake-up since the last call (at once if one came meanwhile), or after ms. */
  next(ms: number): Promise<void> {
    if (this.closedBy) return Promise.reject(this.closedBy);
    if (this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(this.pending?.timer);
        this.pending = undefined;
        resolve();
      };
      this.pending = { done, fail: reject, timer: setTimeout(done, ms) };
    });
  }

  /** A key of the wait was written. */
  wake(): void {
    if (this.pending) this.pending.done();
    else this.woken = true;
  }

  /** Ends the wait: a pending or later next() rejects with err. */
  fail(err: Error): void {
    this.closedBy = err;
    const pending = this.pending;
    this.pending = undefined;
    if (pending) {
      clearTimeout(pending.timer);
      pending.fail(err);
    }
  }

  /** The wait is over: it no longer keeps keys tracked. */
  close(): void {
    this.fail(new Error('the wait is over'));
    this.onClose(this);
  }
}

/** The two connections and the prefixes tracked, while they work. */
interface Link {
  subscriber: Redis;
  tracker: Redis;
  /** the subscriber's client id, where the tracker's invalidations go */
  id: number;
  prefixes: string[];
}

export class KeyWakeups {
  private readonly waits = new Set<Wait>();
  private link?: Link;
  /** The server or the user's ACL refused tracking: waits retry on their own only. */
  private refused = false;

  /** False once the server or the user's ACL refused tracking: no wake-up will come, waits only time out. */
  get tracking(): boolean {
    return !this.refused;
  }
  /** Changes to the tracking, one at a time. */
  private changing: Promise<void> = Promise.resolve();

  constructor(private readonly client: Redis) {
    // The client closed for good (quit(), disconnect()): so is every wait, and
    // the connections made for them, so that the process can exit.
    client.on('end', () => {
      for (const wait of this.waits) wait.fail(new Error(CONNECTION_CLOSED));
      this.waits.clear();
      this.drop(this.link);
    });
  }

  /** A wait on keys: woken when any client writes one of them. */
  watch(keys: (string | Buffer)[]): Wait {
    const wait = new Wait(new Set(keys.map(keyId)), this.cover(), (w) => this.waits.delete(w));
    this.waits.add(wait);
    return wait;
  }

  /**
   * Brings the tracking to cover the keys of every wait (resolves once it
   * does, or once it cannot); a lost link is made again here.
   */
  cover(): Promise<void> {
    this.changing = this.changing.then(() => this.track()).catch(() => undefined);
    return this.changing;
  }

  private async track(): Promise<void> {
    if (this.refused || this.waits.size === 0) return;
    let link = this.link;
    const fresh = !link;
    link ??= await this.connect();
    if (!link) return;
    const keys = [...this.waits].flatMap((w) => [...w.keys]);
    if (keys.every((key) => link.prefixes.some((p) => key.startsWith(p)))) return;
    const prefixes = coveringPrefixes(keys);
    // In one transaction, so that no write falls between the old prefixes and the new ones.
    const args = prefixes.flatMap((p) => ['PREFIX', Buffer.from(p, 'latin1')]);
    const results = await link.tracker
      .multi()
      .call('CLIENT', 'TRACKING', 'OFF')
      .call('CLIENT', 'TRACKING', 'ON', 'REDIRECT', link.id, 'BCAST', ...args)
      .exec();
    const failed = results?.find(([err]) => err)?.[0];
    if (failed) {
      if (failed instanceof ReplyError) this.refused = true;
      this.drop(link);
      return;
    }
    link.prefixes = prefixes;
    // Writes made while there was no tracking woke nobody: every wait tries again.
    if (fresh) for (const wait of this.waits) wait.wake();
  }

  /** Makes the two connections; undefined when they could not be made (the waits then retry on their own). */
  private async connect(): Promise<Link | undefined> {
    // Never reconnecting on their own: a lost connection is made again at the next wait's retry.
    // RESP2: to a RESP3 subscriber Redis sends invalidations as pushes, which ioredis 6 drops.
    const options = { ...OWN_CONNECTION, retryStrategy: () => null, autoResubscribe: false, enableOfflineQueue: true };
    const subscriber = this.client.duplicate(options);
    const tracker = this.client.duplicate(options);
    const link: Link = { subscriber, tracker, id: 0, prefixes: [] };
    for (const connection of [subscriber, tracker]) {
      connection.on('error', () => undefined);
      connection.on('close', () => this.drop(link));
    }
    subscriber.on('messageBuffer', (_channel: Buffer, keys: unknown) => this.invalidated(keys));
    try {
      link.id = Number(await subscriber.client('ID'));
      await subscriber.subscribe(INVALIDATE);
    } catch (err) {
      this.drop(link);
      if (err instanceof ReplyError) this.refused = true;
      return undefined;
    }
    // The client may have closed for good meanwhile: nothing of ours must outlive it.
    if (this.client.status === 'end') {
      this.drop(link);
      return undefined;
    }
    this.link = link;
    return link;
  }

  /** Invalidated keys (an array of them; null when a whole db was flushed). */
  private invalidated(keys: unknown): void {
    if (!Array.isArray(keys)) {
      for (const wait of this.waits) wait.wake();
      return;
    }
    const written = keys.map((k: Buffer | string) => keyId(k));
    for (const wait of this.waits) {
      if (written.some((k) => wait.keys.has(k))) wait.wake();
    }
  }

  private drop(link: Link | undefined): void {
    if (!link) return;
    if (this.link === link) this.link = undefined;
    link.subscriber.disconnect();
    link.tracker.disconnect();
  }
}
