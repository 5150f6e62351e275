/**
 * An HTTP server on a fixed address that keeps trying to bind: the agent
 * goes on without it, as kube-proxy does without its healthz or metrics
 * server, and a failure is logged once, not at every retry.
 */
import http from 'node:http';
import type { Logger } from 'pino';

const RETRY_MS = 5000;

export interface BindAddress {
  host: string;
  port: number;
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
    server.once('error', (err) => {
      const message = `cannot serve ${this.what} on ${this.at.host}:${this.at.port}: ${err.message}; trying again every ${RETRY_MS / 1000} s`;
      if (message !== this.reported) this.log.error(message);
      this.reported = message;
      if (this.closed) return;
      this.retry = setTimeout(() => this.listen(), RETRY_MS);
      this.retry.unref();
    });
    server.once('listening', () => {
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
