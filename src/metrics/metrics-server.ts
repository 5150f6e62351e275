/**
 * kube-proxy's metrics server: /metrics (Prometheus text) and /proxyMode
 * (which datapath serves) on --metrics-bind-address.
 */
import type { Logger } from 'pino';
import { RetryingListener, type BindAddress } from '../http-listener.js';
import type { AgentMetrics } from './agent-metrics.js';

export function serveMetrics(at: BindAddress, metrics: AgentMetrics, mode: string, log: Logger): RetryingListener {
  return new RetryingListener(
    at,
    '/metrics and /proxyMode',
    (req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (path === '/proxyMode') return void res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' }).end(mode);
      if (path !== '/metrics') return void res.writeHead(404).end();
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'Content-Type': metrics.registry.contentType }).end(text),
        (err: Error) => {
          log.error({ err: err.message }, 'could not collect metrics');
          res.writeHead(500).end(err.message);
        },
      );
    },
    log,
  );
}
