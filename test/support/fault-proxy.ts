/**
 * A TCP proxy that tests put between a client and a Redis server to inject
 * network faults: latency, bandwidth caps, resets ("cut") and silent drops
 * ("blackhole").
 *
 * With no fault active, bytes are forwarded exactly like `stream.pipe()` (write
 * straight through, pause the source on backpressure), so the proxy is not the
 * bottleneck in throughput tests.
 */
import net, { type AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';

/** Handle returned by {@link startProxy}. All fault settings apply to every connection, current and future. */
export interface FaultProxy {
  /** Port the proxy listens on (127.0.0.1). */
  readonly port: number;
  /** `redis://127.0.0.1:PORT`. */
  readonly url: string;
  /** One-way delay added in each direction (RTT grows by 2*ms). Byte order is preserved. Also applies to bytes already queued. */
  latency(ms: number): void;
  /** Resets (RST) all current connections and resets every new one right after accepting it, until {@link FaultProxy.heal}. */
  cut(): void;
  /**
   * Keeps connections open but silently drops every byte in both directions;
   * new connections are accepted but see nothing. Because TCP never delivers a
   * stream with a hole in it, {@link FaultProxy.heal} resets the connections
   * that lost bytes; connections that lost nothing carry on.
   */
  blackhole(): void;
  /** Caps each direction of each connection to `bytesPerSecond`; `null` removes the cap. */
  bandwidth(bytesPerSecond: number | null): void;
  /** Back to plain forwarding: no cut, no blackhole, latency 0, no bandwidth cap. */
  heal(): void;
  /** Stops listening and destroys all connections. */
  close(): Promise<void>;
  /** `connections`: currently open client connections; `bytesUp`/`bytesDown`: total bytes forwarded to the target / back to clients. */
  stats(): { connections: number; bytesUp: number; bytesDown: number };
}

/** Starts a proxy on a free 127.0.0.1 port forwarding to `targetHost:targetPort`. */
export async function startProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<FaultProxy> {
  const proxy = new TcpFaultProxy(targetPort, targetHost);
  await proxy.listen();
  return proxy;
}

/** Shared, mutable fault settings read by every {@link Direction}. */
interface Faults {
  latencyMs: number;
  bytesPerSecond: number | null;
  blackholed: boolean;
  cut: boolean;
}

/** Above this many queued bytes the source is paused, so a bandwidth cap pushes back on the sender instead of buffering without bound. */
const QUEUE_HIGH_WATER = 4 * 1024 * 1024;

class TcpFaultProxy implements FaultProxy {
  readonly #server: net.Server;
  readonly #links = new Set<Link>();
  readonly #faults: Faults = { latencyMs: 0, bytesPerSecond: null, blackholed: false, cut: false };
  readonly #totals = { bytesUp: 0, bytesDown: 0 };
  #closed: Promise<void> | null = null;

  constructor(
    private readonly targetPort: number,
    private readonly targetHost: string,
  ) {
    // allowHalfOpen: a FIN from one side must wait until queued (delayed) bytes are delivered.
    this.#server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.#accept(socket));
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(0, '127.0.0.1', () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  latency(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`latency must be >= 0, got ${ms}`);
    this.#faults.latencyMs = ms;
    this.#pumpAll();
  }

  bandwidth(bytesPerSecond: number | null): void {
    if (bytesPerSecond !== null && !(bytesPerSecond > 0)) {
      throw new RangeError(`bandwidth must be > 0 or null, got ${bytesPerSecond}`);
    }
    this.#faults.bytesPerSecond = bytesPerSecond;
    this.#pumpAll();
  }

  cut(): void {
    this.#faults.cut = true;
    for (const link of this.#links) link.reset();
  }

  blackhole(): void {
    this.#faults.blackholed = true;
    for (const link of this.#links) link.dropQueued();
  }

  heal(): void {
    Object.assign(this.#faults, { latencyMs: 0, bytesPerSecond: null, blackholed: false, cut: false });
    for (const link of this.#links) {
      if (link.lostBytes()) link.reset();
    }
    this.#pumpAll();
  }

  stats(): { connections: number; bytesUp: number; bytesDown: number } {
    return { connections: this.#links.size, ...this.#totals };
  }

  close(): Promise<void> {
    this.#closed ??= new Promise((resolve) => {
      this.#server.close(() => resolve());
      for (const link of this.#links) link.reset();
    });
    return this.#closed;
  }

  #pumpAll(): void {
    for (const link of this.#links) link.pump();
  }

  #accept(client: net.Socket): void {
    if (this.#faults.cut || this.#closed) {
      client.on('error', () => undefined);
      resetSocket(client);
      return;
    }
    const upstream = net.connect({ port: this.targetPort, host: this.targetHost, allowHalfOpen: true, noDelay: true });
    const link = new Link(client, upstream, this.#faults, this.#totals, () => this.#links.delete(link));
    this.#links.add(link);
  }
}

/** One proxied connection: a client socket, its upstream socket, and a {@link Direction} each way. */
class Link {
  readonly #up: Direction;
  readonly #down: Direction;

  constructor(
    private readonly client: net.Socket,
    private readonly upstream: net.Socket,
    faults: Faults,
    totals: { bytesUp: number; bytesDown: number },
    private readonly onGone: () => void,
  ) {
    client.setNoDelay(true);
    client.once('close', onGone);
    this.#up = new Direction(client, upstream, faults, (n) => (totals.bytesUp += n));
    this.#down = new Direction(upstream, client, faults, (n) => (totals.bytesDown += n));
    // An error on either side (reset, refused, EPIPE) is passed on as a reset,
    // which is what the peer would see if the proxy were a plain network path.
    client.on('error', () => this.reset());
    upstream.on('error', () => this.reset());
  }

  pump(): void {
    this.#up.pump();
    this.#down.pump();
  }

  dropQueued(): void {
    this.#up.dropQueued();
    this.#down.dropQueued();
  }

  lostBytes(): boolean {
    return this.#up.lostBytes || this.#down.lostBytes;
  }

  reset(): void {
    // Counted as gone right away: tests check stats() straight after cut().
    this.onGone();
    this.#up.stop();
    this.#down.stop();
    resetSocket(this.client);
    resetSocket(this.upstream);
  }
}

interface Pending {
  chunk: Buffer;
  /** performance.now() at arrival; release time is arrival + current latency, so order is kept even when latency changes. */
  arrived: number;
}

/**
 * Moves bytes from `src` to `dst`, applying the current faults. A single timer
 * per direction (for the queue head) drives delayed delivery.
 */
class Direction {
  /** True once any byte was dropped: the stream now has a hole in it. */
  lostBytes = false;
  #queue: Pending[] = [];
  #head = 0;
  #queuedBytes = 0;
  #timer: NodeJS.Timeout | null = null;
  #awaitingDrain = false;
  #srcEnded = false;
  #dstEnded = false;
  #stopped = false;
  #srcPaused = false;
  /** Token bucket for the bandwidth cap; reset whenever the cap changes. */
  #bucket = { rate: null as number | null, tokens: 0, refilledAt: 0 };

  constructor(
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly faults: Faults,
    private readonly count: (bytes: number) => void,
  ) {
    src.on('data', (chunk: Buffer) => this.#onData(chunk));
    src.on('end', () => {
      this.#srcEnded = true;
      this.pump();
    });
    dst.on('drain', () => {
      this.#awaitingDrain = false;
      this.pump();
    });
  }

  /** Delivers whatever is due, then schedules the next delivery or propagates a pending FIN. */
  pump(): void {
    if (this.#stopped) return;
    this.#clearTimer();
    while (this.#head < this.#queue.length && !this.#awaitingDrain && !this.faults.blackholed) {
      const entry = this.#queue[this.#head]!;
      const now = performance.now();
      const dueIn = entry.arrived + this.faults.latencyMs - now;
      if (dueIn > 0) {
        this.#schedule(dueIn);
        break;
      }
      const allowed = this.#allowance(entry.chunk.length, now);
      if (allowed.bytes === 0) {
        this.#schedule(allowed.waitMs);
        break;
      }
      if (allowed.bytes < entry.chunk.length) {
        this.#write(entry.chunk.subarray(0, allowed.bytes));
        entry.chunk = entry.chunk.subarray(allowed.bytes);
      } else {
        this.#write(entry.chunk);
        this.#head++;
      }
      this.#queuedBytes -= allowed.bytes;
    }
    this.#compact();
    if (this.#srcEnded && this.#queuedBytes === 0 && !this.#dstEnded && !this.faults.blackholed) {
      this.#dstEnded = true;
      this.dst.end();
    }
    this.#updateFlow();
  }

  /** Forgets queued bytes (blackhole); the loss is remembered so heal() can reset the connection. */
  dropQueued(): void {
    if (this.#queuedBytes > 0) this.lostBytes = true;
    this.#clear();
  }

  /** Final: the connection is being torn down. */
  stop(): void {
    this.#stopped = true;
    this.#clear();
  }

  #onData(chunk: Buffer): void {
    if (this.#stopped) return;
    if (this.faults.blackholed) {
      this.lostBytes = true;
      return;
    }
    const plain = this.faults.latencyMs === 0 && this.faults.bytesPerSecond === null;
    if (plain && this.#queuedBytes === 0) {
      // Fast path: behave exactly like pipe().
      this.#write(chunk);
      this.#updateFlow();
      return;
    }
    this.#queue.push({ chunk, arrived: performance.now() });
    this.#queuedBytes += chunk.length;
    // Only the head has a timer; a later chunk can never be due earlier.
    if (this.#timer === null) this.pump();
    else this.#updateFlow();
  }

  #write(chunk: Buffer): void {
    this.count(chunk.length);
    if (!this.dst.write(chunk)) this.#awaitingDrain = true;
  }

  /** How many bytes of a `size`-byte chunk may go now under the bandwidth cap, or how long to wait. */
  #allowance(size: number, now: number): { bytes: number; waitMs: number } {
    const rate = this.faults.bytesPerSecond;
    if (rate === null) return { bytes: size, waitMs: 0 };
    // A bucket of 1/10 s worth of bytes smooths the flow without long bursts.
    const capacity = Math.max(1, rate / 10);
    const bucket = this.#bucket;
    if (bucket.rate !== rate) Object.assign(bucket, { rate, tokens: capacity, refilledAt: now });
    bucket.tokens = Math.min(capacity, bucket.tokens + ((now - bucket.refilledAt) * rate) / 1000);
    bucket.refilledAt = now;
    const bytes = Math.min(size, Math.floor(bucket.tokens));
    if (bytes > 0) {
      bucket.tokens -= bytes;
      return { bytes, waitMs: 0 };
    }
    // Wait for a worthwhile slice rather than trickling single bytes.
    const want = Math.min(size, Math.floor(capacity));
    return { bytes: 0, waitMs: ((want - bucket.tokens) * 1000) / rate };
  }

  /** Pause the source while the destination is full or the queue is too long; resume otherwise. */
  #updateFlow(): void {
    const shouldPause = !this.#stopped && (this.#awaitingDrain || this.#queuedBytes >= QUEUE_HIGH_WATER);
    if (shouldPause === this.#srcPaused) return;
    this.#srcPaused = shouldPause;
    if (shouldPause) this.src.pause();
    else this.src.resume();
  }

  #schedule(ms: number): void {
    // Timers have 1 ms resolution; rounding up avoids waking just before the due time.
    this.#timer = setTimeout(
      () => {
        this.#timer = null;
        this.pump();
      },
      Math.max(1, Math.ceil(ms)),
    );
  }

  #clearTimer(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #clear(): void {
    this.#clearTimer();
    this.#queue = [];
    this.#head = 0;
    this.#queuedBytes = 0;
    this.#updateFlow();
  }

  /** Drops delivered entries in bulk so the queue is O(1) per chunk instead of shifting on every delivery. */
  #compact(): void {
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }
}

/** Sends an RST where supported (Node >= 16.17/18.3), so the peer sees ECONNRESET rather than a clean FIN. */
function resetSocket(socket: net.Socket): void {
  if (socket.destroyed) return;
  // On a socket that already sent its FIN, Node's reset fails (EINVAL) and
  // leaves the handle open for ever: a plain destroy is all that is left.
  if (typeof socket.resetAndDestroy === 'function' && !socket.writableEnded) socket.resetAndDestroy();
  else socket.destroy();
}
