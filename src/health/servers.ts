/**
 * kube-proxy's health servers, the effects around proxy-health.ts: /healthz
 * and /livez on the healthz address, and a listener on each health check
 * node port, answering for its Service. A listener that cannot bind is
 * logged once and tried again: the healthz one every few seconds, as
 * kube-proxy does, a node port one at the next sync.
 */
import http from 'node:http';
import type { Logger } from 'pino';
import { RetryingListener, stopServer, type BindAddress } from '../http-listener.js';
import type { HealthCheckNodePort } from '../model/types.js';
import { healthzAnswer, livezAnswer, serviceHealthAnswer, type HttpAnswer, type NodeFacts, type ProxyHealth } from './proxy-health.js';

export interface HealthServersOptions {
  /** Where /healthz and /livez are served (kube-proxy's --healthz-bind-address); undefined: nowhere. */
  healthz: BindAddress | undefined;
  health: ProxyHealth;
  /** This node's Node object, once the source has it. */
  node: () => NodeFacts | undefined;
  /** Told the status of every /healthz and /livez answer (kube-proxy counts them in its metrics). */
  onAnswer: (path: '/healthz' | '/livez', status: number) => void;
  log: Logger;
}

function reply(res: http.ServerResponse, answer: HttpAnswer): void {
  res.writeHead(answer.status, answer.headers).end(answer.body);
}

export class HealthServers {
  private readonly healthz: RetryingListener | undefined;
  /** Per host and port ("host|port"; host '' for every address), the listener of a health check node port. */
  private readonly listeners = new Map<string, http.Server>();
  /** Per node port, the Service it answers for. */
  private checks = new Map<number, HealthCheckNodePort>();
  /** What was last logged per listener that failed, so a failure that repeats is logged once. */
  private readonly reported = new Map<string, string>();

  constructor(private readonly opts: HealthServersOptions) {
    if (opts.healthz) this.healthz = new RetryingListener(opts.healthz, '/healthz and /livez', (req, res) => this.answerHealthz(req, res), opts.log);
  }

  /** Answers each of checks on its port, on every address (hosts undefined) or on each of hosts; stops the others. */
  syncServices(checks: readonly HealthCheckNodePort[], hosts: readonly string[] | undefined): void {
    const byPort = new Map<number, HealthCheckNodePort>();
    const conflicts = new Set<string>();
    for (const check of checks) {
      const holder = byPort.get(check.port);
      if (!holder) {
        byPort.set(check.port, check);
        continue;
      }
      const key = `conflict|${check.port}|${check.namespace}/${check.name}`;
      conflicts.add(key);
      this.reportOnce(key, `health check node port ${check.port} of ${check.namespace}/${check.name} is already ${holder.namespace}/${holder.name}'s`);
    }
    // A conflict that ends and comes back is logged again.
    for (const key of this.reported.keys()) if (key.startsWith('conflict|') && !conflicts.has(key)) this.reported.delete(key);
    this.checks = byPort;
    const wanted = new Set<string>();
    for (const port of byPort.keys()) for (const host of hosts ?? ['']) wanted.add(`${host}|${port}`);
    for (const [key, server] of this.listeners) {
      if (wanted.has(key)) continue;
      this.listeners.delete(key);
      stopServer(server);
    }
    for (const key of wanted) {
      if (this.listeners.has(key)) continue;
      const [host, port] = key.split('|') as [string, string];
      const server = http.createServer((_req, res) => this.answerService(Number(port), res));
      this.listeners.set(key, server);
      const bindFailed = (err: Error) => {
        // Tried again at the next sync.
        if (this.listeners.get(key) === server) this.listeners.delete(key);
        this.reportOnce(key, `cannot serve health check node port ${port}${host ? ` on ${host}` : ''}: ${err.message}`);
      };
      server.once('error', bindFailed);
      server.once('listening', () => {
        // Bound: a later error (an accept that fails for want of file descriptors) is logged, the listener stays.
        server.off('error', bindFailed);
        server.on('error', (err) => this.opts.log.error({ err: err.message, port: Number(port) }, `health check node port ${port}: ${err.message}`));
        this.reported.delete(key);
      });
      server.listen(Number(port), host || undefined);
    }
  }

  close(): void {
    this.healthz?.close();
    for (const server of this.listeners.values()) stopServer(server);
    this.listeners.clear();
  }

  private answerService(port: number, res: http.ServerResponse): void {
    const check = this.checks.get(port);
    // The port is closing: its Service went with the last sync.
    if (!check) return void res.writeHead(503).end();
    reply(res, serviceHealthAnswer(check, this.opts.health.healthy()));
  }

  private answerHealthz(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/healthz' && path !== '/livez') return void res.writeHead(404).end();
    const answer = path === '/healthz' ? healthzAnswer(this.opts.health, this.opts.node()) : livezAnswer(this.opts.health);
    this.opts.onAnswer(path, answer.status);
    reply(res, answer);
  }

  private reportOnce(key: string, message: string): void {
    if (this.reported.get(key) === message) return;
    this.reported.set(key, message);
    this.opts.log.error(message);
  }
}
