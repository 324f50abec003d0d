/**
 * Child-process side of proxy-process.ts: runs the test suite's fault proxy
 * in front of the port given as the first argument, and sets its latency on
 * request.
 */
import { startProxy } from '../../test/support/fault-proxy.js';
import type { ProxyRequest } from './proxy-process.js';

const proxy = await startProxy(Number(process.argv[2]));
process.on('message', (request: ProxyRequest) => {
  proxy.latency(request.latencyMs);
  process.send!({ ok: true });
});
process.on('disconnect', () => void proxy.close().then(() => process.exit(0)));
process.send!({ port: proxy.port });
