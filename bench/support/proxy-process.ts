/**
 * The fault proxy of test/support, run in its own process so that the bytes
 * it forwards do not compete with the worker for this process's event loop.
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

/** A message to the child. */
export interface ProxyRequest {
  /** one-way delay added in each direction */
  latencyMs: number;
}

export interface ProxyProcess {
  readonly port: number;
  /** Adds `ms` of round trip: half of it each way. */
  setRoundTrip(ms: number): Promise<void>;
  close(): Promise<void>;
}

export async function startProxyProcess(targetPort: number): Promise<ProxyProcess> {
  // Inherits this process's execArgv, so tsx loads the TypeScript child too.
  const child = fork(fileURLToPath(new URL('./proxy-child.ts', import.meta.url)), [String(targetPort)]);
  const kill = () => child.kill('SIGKILL');
  process.on('exit', kill);
  const [{ port }] = (await once(child, 'message')) as [{ port: number }];
  return {
    port,
    async setRoundTrip(ms) {
      const request: ProxyRequest = { latencyMs: ms / 2 };
      child.send(request);
      await once(child, 'message');
    },
    async close() {
      process.off('exit', kill);
      const exited = once(child, 'exit');
      child.disconnect();
      await exited;
    },
  };
}
