/**
 * What kube-proxy's health servers answer (pkg/proxy/healthcheck), as pure
 * functions of the agent's state and the time: the proxy is healthy unless
 * a change has waited longer than the timeout to reach the kernel; /healthz
 * also fails while the node is going away, so that load balancers drain it
 * first; a health check node port answers 200 only where its Service has a
 * ready endpoint on this node.
 */
import type { HealthCheckNodePort } from '../model/types.js';

/** kube-proxy's: twice its 30 s sync period. kpx syncs within milliseconds, or retries with backoff of at most 10 s. */
export const HEALTH_TIMEOUT_MS = 60_000;

/** The taint the cluster autoscaler puts on a node it is about to remove (kube-proxy's ToBeDeletedTaint). */
export const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';

/** As much of this node's Node object as eligibility needs. */
export interface NodeFacts {
  metadata?: { deletionTimestamp?: string };
  spec?: { taints?: Array<{ key?: string }> };
}

export interface HttpAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Time spans on a monotonic clock, which a step of the wall clock cannot move; the wall clock only for reports. */
export interface HealthClock {
  monotonicMs(): number;
  wallMs(): number;
}

export const SYSTEM_CLOCK: HealthClock = { monotonicMs: () => performance.now(), wallMs: () => Date.now() };

/** When the kernel last took a sync, and since when a change has been waiting for one. */
export class ProxyHealth {
  private lastUpdatedWallMs: number;
  private oldestQueuedMs: number | undefined;

  /**
   * Healthy while starting up, as kube-proxy is: nothing waits until the
   * source has its first view (queued() then), so an API server that is
   * away at start makes no probe restart the agent.
   */
  constructor(
    private readonly clock: HealthClock = SYSTEM_CLOCK,
    private readonly timeoutMs = HEALTH_TIMEOUT_MS,
  ) {
    this.lastUpdatedWallMs = clock.wallMs();
  }

  /** A change waits for a sync; the oldest waiting one is what can make the proxy late. */
  queued(): void {
    this.oldestQueuedMs ??= this.clock.monotonicMs();
  }

  /** A sync reached the kernel with everything known so far. */
  updated(): void {
    this.lastUpdatedWallMs = this.clock.wallMs();
    this.oldestQueuedMs = undefined;
  }

  healthy(): boolean {
    return this.oldestQueuedMs === undefined || this.clock.monotonicMs() - this.oldestQueuedMs < this.timeoutMs;
  }

  /** The wall-clock times reports give: kube-proxy reports a healthy proxy as updated now, as its sync loop once ran whether or not anything changed. */
  times(): { lastUpdated: string; currentTime: string } {
    const now = this.clock.wallMs();
    return { lastUpdated: iso(this.healthy() ? now : this.lastUpdatedWallMs), currentTime: iso(now) };
  }
}

/** A node being deleted, or marked for removal by the cluster autoscaler, should get no new load-balanced traffic. */
export function nodeEligible(node: NodeFacts | undefined): boolean {
  if (node?.metadata?.deletionTimestamp) return false;
  return !(node?.spec?.taints ?? []).some((t) => t.key === TO_BE_DELETED_TAINT);
}

const JSON_HEADERS = { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' };

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** GET /healthz on the healthz port: the proxy's health and the node's eligibility. */
export function healthzAnswer(health: ProxyHealth, node: NodeFacts | undefined): HttpAnswer {
  const eligible = nodeEligible(node);
  const body = { ...health.times(), nodeEligible: eligible };
  return { status: health.healthy() && eligible ? 200 : 503, headers: JSON_HEADERS, body: JSON.stringify(body) };
}

/** GET /livez: the proxy's health alone, for a liveness probe that must not restart the agent of a draining node. */
export function livezAnswer(health: ProxyHealth): HttpAnswer {
  return { status: health.healthy() ? 200 : 503, headers: JSON_HEADERS, body: JSON.stringify(health.times()) };
}

/** Any request to a health check node port. */
export function serviceHealthAnswer(check: HealthCheckNodePort, proxyHealthy: boolean): HttpAnswer {
  const body = { service: { namespace: check.namespace, name: check.name }, localEndpoints: check.localEndpoints, serviceProxyHealthy: proxyHealthy };
  return {
    status: check.localEndpoints > 0 && proxyHealthy ? 200 : 503,
    // What Google Cloud's weighted load balancing reads, as kube-proxy sets it.
    headers: { ...JSON_HEADERS, 'X-Load-Balancing-Endpoint-Weight': String(check.localEndpoints) },
    body: JSON.stringify(body),
  };
}
