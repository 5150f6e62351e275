/**
 * An HTTP server on a fixed address that keeps trying to bind: the agent
 * goes on without it, as kube-proxy does without its healthz or metrics
 * server, and a failure is logged once, not at every retry.
 */
import http from 'node:http';
import { isIP } from 'node:net';
import type { Logger } from 'pino';

const RETRY_MS = 5000;

export interface BindAddress {
  host: string;
  port: number;
}

/**
 * kube-proxy's --healthz-bind-address and --metrics-bind-address: "IP:port"
 * ("[IPv6]:port"; port 0: a free one, which the log names), a bare IP (the
 * flag's own port), or "" for no server. A string says what is wrong.
 */
export function parseBindAddress(text: string, defaultPort: number): BindAddress | undefined | string {
  if (text === '') return undefined;
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const host = m ? (m[1] ?? m[2]!) : text.replace(/^\[(.*)\]$/, '$1');
  const port = m ? Number(m[3]) : defaultPort;
  if (isIP(host) === 0 || port > 65535) return `expected IP:port (e.g. 0.0.0.0:${defaultPort}), an IP, or "" to serve nothing, got "${text}"`;
  return { host, port };
}

export class RetryingListener {
  private server: http.Server | undefined;
  private retry: NodeJS.Timeout | undefined;
  private reported: string | undefined;
  private closed = false;

  /** `what` names the server in the log, e.g. "/healthz and /livez". */
  constructor(
    private readonly at: BindAddress,
    private readonly what: string,
    private readonly handler: http.RequestListener,
    private readonly log: Logger,
  ) {
    this.listen();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    if (this.server) stopServer(this.server);
  }

  private listen(): void {
    const server = http.createServer(this.handler);
    this.server = server;
    const bindFailed = (err: Error) => {
      const message = `cannot serve ${this.what} on ${this.at.host}:${this.at.port}: ${err.message}; trying again every ${RETRY_MS / 1000} s`;
      if (message !== this.reported) this.log.error(message);
      this.reported = message;
      if (this.closed) return;
      this.retry = setTimeout(() => this.listen(), RETRY_MS);
      this.retry.unref();
    };
    server.once('error', bindFailed);
    server.once('listening', () => {
      // Bound: a later error (an accept that fails for want of file descriptors) is logged, the server stays.
      server.off('error', bindFailed);
      server.on('error', (err) => this.log.error({ err: err.message }, `${this.what}: ${err.message}`));
      this.reported = undefined;
      const bound = server.address();
      // The bound port, which says where a port-0 listener went.
      const address = typeof bound === 'object' && bound ? `${bound.address}:${bound.port}` : String(bound);
      this.log.info({ address }, `serving ${this.what}`);
    });
    server.listen(this.at.port, this.at.host);
  }
}

/** Stops listening and drops the connections a client keeps open. */
export function stopServer(server: http.Server): void {
  server.close();
  server.closeAllConnections();
}
