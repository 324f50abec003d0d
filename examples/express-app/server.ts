/**
 * An Express app whose Redis writes reach a replica through qsync: its
 * ioredis client is wrapped with the producer, so every write below is
 * logged on the master in the same atomic step, and `qsync consume` carries
 * it to the replica. Reads go straight to the master.
 *
 *   MASTER_URL=redis://127.0.0.1:6379 PORT=3000 npx tsx examples/express-app/server.ts
 *
 * Routes:
 *   POST   /counters/:name               add 1 (or ?by=n) to a counter
 *   GET    /counters/:name
 *   PUT    /carts/:user/items/:sku       {"qty": n}: set a cart line (the cart expires after a week idle)
 *   DELETE /carts/:user/items/:sku
 *   GET    /carts/:user
 *   POST   /carts/:user/checkout         order the cart: stock taken, order recorded, cart emptied, in one step
 */
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import express, { type NextFunction, type Request, type Response } from 'express';
import { Redis } from 'ioredis';
// In your own app: import { createProducer, QueueFullError } from 'qsync/producer';
import { createProducer, QueueFullError } from '../../producer/index.js';

const CART_TTL_SECONDS = 7 * 24 * 3600;

export interface App {
  /** the port the app listens on */
  readonly port: number;
  close(): Promise<void>;
}

/** Starts the app on `port` (0 picks a free one), writing through a producer on `masterUrl`. */
export async function startApp({ masterUrl, port = 0, host = '127.0.0.1' }: { masterUrl: string; port?: number; host?: string }): Promise<App> {
  const db = createProducer(new Redis(masterUrl));
  const app = express();
  app.use(express.json());

  app.post('/counters/:name', async (req, res) => {
    const by = Number(req.query.by ?? 1);
    if (!Number.isSafeInteger(by)) {
      res.status(400).json({ error: `by must be an integer, got '${String(req.query.by)}'` });
      return;
    }
    res.json({ name: req.params.name, value: await db.incrby(`counter:${req.params.name}`, by) });
  });

  app.get('/counters/:name', async (req, res) => {
    res.json({ name: req.params.name, value: Number((await db.get(`counter:${req.params.name}`)) ?? 0) });
  });

  app.put('/carts/:user/items/:sku', async (req, res) => {
    const qty = Number((req.body as { qty?: unknown } | undefined)?.qty);
    if (!Number.isSafeInteger(qty) || qty < 1) {
      res.status(400).json({ error: 'qty must be a positive integer' });
      return;
    }
    const cart = `cart:${req.params.user}`;
    // One entry in the log: the line and the new expiry reach the replica together.
    await db.multi().hset(cart, req.params.sku, qty).expire(cart, CART_TTL_SECONDS).exec();
    res.json(await cartOf(db, req.params.user));
  });

  app.delete('/carts/:user/items/:sku', async (req, res) => {
    await db.hdel(`cart:${req.params.user}`, req.params.sku);
    res.json(await cartOf(db, req.params.user));
  });

  app.get('/carts/:user', async (req, res) => {
    res.json(await cartOf(db, req.params.user));
  });

  app.post('/carts/:user/checkout', async (req, res) => {
    const { user } = req.params;
    const { items } = await cartOf(db, user);
    if (Object.keys(items).length === 0) {
      res.status(409).json({ error: 'the cart is empty' });
      return;
    }
    const order = `order:${await db.incr('orders:next')}`;
    const checkout = db.multi();
    for (const [sku, qty] of Object.entries(items)) checkout.decrby(`stock:${sku}`, qty);
    checkout
      .hset(order, { user, ...items })
      .rpush(`orders:${user}`, order)
      .del(`cart:${user}`);
    await checkout.exec();
    res.status(201).json({ order, items });
  });

  // A queue at its cap under the `reject` policy refuses writes (qsync limit).
  app.use((err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (err instanceof QueueFullError) {
      res.status(503).json({ error: err.message });
      return;
    }
    next(err);
  });

  const server = app.listen(port, host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await db.quit();
    },
  };
}

async function cartOf(db: Redis, user: string): Promise<{ user: string; items: Record<string, number> }> {
  const lines = await db.hgetall(`cart:${user}`);
  return { user, items: Object.fromEntries(Object.entries(lines).map(([sku, qty]) => [sku, Number(qty)])) };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const app = await startApp({
    masterUrl: process.env.MASTER_URL ?? 'redis://127.0.0.1:6379',
    port: Number(process.env.PORT ?? 3000),
    host: process.env.HOST ?? '127.0.0.1',
  });
  process.stdout.write(`listening on http://127.0.0.1:${app.port}\n`);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void app.close());
}
