/**
 * The demo's workload: a small web shop writing to its Redis master through
 * a qsync producer. Every write below is logged for the replica; the mix
 * covers the kinds of writes qsync rewrites before logging (TTLs, float
 * increments, random pops, MULTI groups).
 */
import type { ChainableCommander, Redis } from 'ioredis';

/** Seconds a login session lives; long enough that nothing expires during the demo. */
const SESSION_TTL = 1800;
const COUNTRIES = ['FR', 'DE', 'JP', 'BR', 'US', 'IN', 'NG', 'SE'];

/** A small seeded random generator (mulberry32), so every run writes the same shape of data. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Shop {
  private readonly random: () => number;

  /**
   * @param db a producer (see createProducer) on the master
   * @param users how many customer accounts to create
   * @param products how many products in the catalogue
   */
  constructor(
    private readonly db: Redis,
    readonly users: number,
    readonly products: number,
    seed = 42,
  ) {
    this.random = seededRandom(seed);
  }

  private pick(n: number): number {
    return 1 + Math.floor(this.random() * n);
  }

  private price(sku: number): number {
    return 5 + (sku % 20) * 2.5;
  }

  /** Creates the catalogue, the customers with their sessions, and the raffle. Returns the number of writes. */
  async open(): Promise<number> {
    const writes: ((pipe: ChainableCommander) => unknown)[] = [];
    for (let sku = 1; sku <= this.products; sku++) {
      writes.push(
        (p) => p.hset(`product:${sku}`, { name: `Product ${sku}`, price: this.price(sku).toFixed(2) }),
        (p) => p.set(`product:${sku}:stock`, 500 + sku),
      );
    }
    for (let id = 1; id <= this.users; id++) {
      const token = `token-${id}-${Math.floor(this.random() * 1e9)}`;
      writes.push(
        (p) =>
          p.hset(`user:${id}`, { name: `Customer ${id}`, email: `customer${id}@example.com`, country: COUNTRIES[id % COUNTRIES.length], orders: 0 }),
        (p) => p.set(`session:${id}`, token, 'EX', SESSION_TTL),
      );
      if (id % 3 === 0) writes.push((p) => p.sadd('raffle:entrants', `user:${id}`));
    }
    // Pipelined in slices: fast, and each write is still its own log entry.
    for (let i = 0; i < writes.length; i += 500) {
      const pipe = this.db.pipeline();
      for (const write of writes.slice(i, i + 500)) write(pipe);
      await exec(pipe);
    }
    return writes.length;
  }

  /**
   * One burst of shoppers: product views, carts, session refreshes and
   * ratings in one pipeline (each write its own log entry), a few orders
   * (each a MULTI: one atomic entry) and sometimes a raffle draw.
   */
  async tick(actions: number): Promise<void> {
    const pipe = this.db.pipeline();
    let orders = 0;
    for (let i = 0; i < actions; i++) {
      const user = this.pick(this.users);
      const sku = this.pick(this.products);
      const roll = this.random();
      if (roll < 0.4) pipe.incr(`product:${sku}:views`);
      else if (roll < 0.65) pipe.rpush(`cart:${user}`, `product:${sku}`);
      else if (roll < 0.8) pipe.expire(`session:${user}`, SESSION_TTL);
      else if (roll < 0.9) pipe.zincrby('ranking:popular', 1, `product:${sku}`);
      else orders++;
    }
    await exec(pipe);
    for (let i = 0; i < orders; i++) await this.placeOrder(this.pick(this.users), this.pick(this.products));
    if (this.random() < 0.2) await this.drawRaffle();
  }

  /** Checkout: stock, order record, customer history, cart, spend ranking and revenue change together or not at all. */
  private async placeOrder(user: number, sku: number): Promise<void> {
    const id = await this.db.incr('seq:order');
    const qty = this.pick(3);
    const total = Number((qty * this.price(sku)).toFixed(2));
    await exec(
      this.db
        .multi()
        .decrby(`product:${sku}:stock`, qty)
        .hset(`order:${id}`, { user: `user:${user}`, sku: `product:${sku}`, qty, total: total.toFixed(2) })
        .rpush(`user:${user}:orders`, `order:${id}`)
        .hincrby(`user:${user}`, 'orders', 1)
        .del(`cart:${user}`)
        .zincrby('ranking:spend', total, `user:${user}`)
        .incrbyfloat('stats:revenue', total)
        .incr('stats:orders'),
    );
  }

  /** SPOP picks a random winner on the master; qsync logs which one, so the replica removes the same member. */
  private async drawRaffle(): Promise<void> {
    const winner = await this.db.spop('raffle:entrants');
    if (winner) await this.db.sadd('raffle:winners', winner);
  }
}

/** Runs a pipeline or MULTI and fails on the first command that failed. */
async function exec(group: { exec(): Promise<[Error | null, unknown][] | null> }): Promise<void> {
  const results = await group.exec();
  const failed = results?.find(([err]) => err);
  if (failed) throw failed[0];
}
