// Drives HealthServers (src/health/servers.ts) inside a lab node's network
// namespace, for test/e2e/health-servers.test.ts: syncs, requests over real
// sockets, then close(). Prints one JSON line: what each step saw, the
// errors logged, and when close() returned; the process then has nothing
// left that keeps it alive, or the test sees it hang.
import http from 'node:http';
import type { Logger } from 'pino';
import { ProxyHealth } from '../../src/health/proxy-health.js';
import { HealthServers } from '../../src/health/servers.js';
import type { HealthCheckNodePort } from '../../src/model/types.js';

const [otherAddress] = process.argv.slice(2);
if (!otherAddress) throw new Error('usage: health-servers-driver OTHER_NODE_ADDRESS');

const errors: string[] = [];
const log = { error: (a: unknown, b?: string) => errors.push(typeof a === 'string' ? a : String(b)), info: () => {}, warn: () => {}, debug: () => {} } as unknown as Logger;

/** The status of a GET to host:port, or the error code. */
function status(host: string, port: number): Promise<number | string> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: '/', agent: false, timeout: 1000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
  });
}

const check = (name: string, port: number, localEndpoints = 1): HealthCheckNodePort => ({ namespace: 'default', name, port, localEndpoints });
const listening = () => new Promise((r) => setTimeout(r, 100));

const health = new ProxyHealth();
const servers = new HealthServers({ healthz: undefined, health, node: () => undefined, onAnswer: () => {}, log });
const steps: Record<string, unknown> = {};

servers.syncServices([check('a', 31001)], undefined);
await listening();
steps.open = await status('127.0.0.1', 31001);

servers.syncServices([check('a', 31002)], undefined);
await listening();
steps.moved = [await status('127.0.0.1', 31001), await status('127.0.0.1', 31002)];

servers.syncServices([check('a', 31002), check('b', 31002, 0)], undefined);
await listening();
steps.shared = await status('127.0.0.1', 31002);
steps.sharedLogged = errors.filter((e) => /31002 of default\/b is already default\/a's/.test(e)).length;

const squatter = http.createServer();
await new Promise<void>((r) => squatter.listen(31003, r));
servers.syncServices([check('c', 31003)], undefined);
await listening();
steps.taken = errors.filter((e) => /cannot serve health check node port 31003: .*EADDRINUSE/.test(e)).length;
await new Promise((r) => squatter.close(r));
servers.syncServices([check('c', 31003)], undefined);
await listening();
steps.retried = await status('127.0.0.1', 31003);

servers.syncServices([check('d', 31004)], ['127.0.0.1']);
await listening();
steps.narrowed = [await status('127.0.0.1', 31004), await status(otherAddress, 31004), await status('127.0.0.1', 31003)];

servers.syncServices([], undefined);
await listening();
steps.gone = await status('127.0.0.1', 31004);

servers.syncServices([check('e', 31005)], undefined);
await listening();
servers.close();
steps.closed = await status('127.0.0.1', 31005);
console.log(JSON.stringify({ steps, errors }));
