/**
 * The agent's Prometheus metrics: kube-proxy's, under its names and with its
 * buckets (pkg/proxy/metrics), so the dashboards and alerts of a cluster
 * that ran kube-proxy keep working, and kpx's own. Nothing here listens:
 * metrics-server.ts serves the registry.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Stats } from '../datapath/stats.js';
import type { ChangeKind } from '../source/types.js';

/** kube-proxy's sync duration buckets: 1 ms doubling up to 16 s. */
const SYNC_BUCKETS = Array.from({ length: 15 }, (_, i) => 0.001 * 2 ** i);

const linear = (start: number, width: number, count: number) => Array.from({ length: count }, (_, i) => start + i * width);
/** kube-proxy's network programming buckets: 0.25 s steps, then seconds, then 5 s, then 30 s, up to 5 min. */
const PROGRAMMING_BUCKETS = [...linear(0.25, 0.25, 2), ...linear(1, 1, 59), ...linear(60, 5, 12), ...linear(120, 30, 7)];

/** kpx_stats' counters under their metric label. */
const PACKET_PATHS: Record<keyof Stats, string> = { newFlow: 'new_flow', forward: 'forward', reply: 'reply', localReply: 'local_reply', drop: 'drop' };

export interface AgentMetricsOptions {
  /** The packet programs' path counters, where the datapath has them (ebpf mode). */
  packetCounts?: () => Stats;
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly syncDuration: Histogram;
  private readonly fullSyncDuration: Histogram;
  private readonly partialSyncDuration: Histogram;
  private readonly lastSync: Gauge;
  private readonly lastQueued: Gauge;
  private readonly programming: Histogram;
  private readonly healthz: Counter<'code'>;
  private readonly livez: Counter<'code'>;
  private readonly changes: Record<ChangeKind, { total: Counter; pending: Gauge }>;

  constructor(opts: AgentMetricsOptions = {}) {
    const registers = [this.registry];
    const seconds = (name: string, help: string, buckets: number[]) => new Histogram({ name, help, buckets, registers });
    this.syncDuration = seconds('kubeproxy_sync_proxy_rules_duration_seconds', 'SyncProxyRules latency in seconds', SYNC_BUCKETS);
    this.fullSyncDuration = seconds('kubeproxy_sync_full_proxy_rules_duration_seconds', 'SyncProxyRules latency in seconds for full resyncs', SYNC_BUCKETS);
    this.partialSyncDuration = seconds('kubeproxy_sync_partial_proxy_rules_duration_seconds', 'SyncProxyRules latency in seconds for partial resyncs', SYNC_BUCKETS);
    this.programming = seconds('kubeproxy_network_programming_duration_seconds', 'In Cluster Network Programming Latency in seconds', PROGRAMMING_BUCKETS);
    this.lastSync = new Gauge({ name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds', help: 'The last time proxy rules were successfully synced', registers });
    this.lastQueued = new Gauge({ name: 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds', help: 'The last time a sync of proxy rules was queued', registers });
    this.healthz = new Counter({ name: 'kubeproxy_proxy_healthz_total', help: 'Cumulative proxy healthz HTTP status', labelNames: ['code'], registers });
    this.livez = new Counter({ name: 'kubeproxy_proxy_livez_total', help: 'Cumulative proxy livez HTTP status', labelNames: ['code'], registers });
    // kube-proxy counts the changes it tracks per Service; kpx counts the events, which a sync takes all at once.
    const counted = (what: string, kind: string) => ({
      total: new Counter({ name: `kubeproxy_sync_proxy_rules_${what}_changes_total`, help: `Cumulative proxy rules ${kind} changes`, registers }),
      pending: new Gauge({ name: `kubeproxy_sync_proxy_rules_${what}_changes_pending`, help: `Pending proxy rules ${kind} changes`, registers }),
    });
    this.changes = { service: counted('service', 'Service'), endpoints: counted('endpoint', 'Endpoint') };
    const packetCounts = opts.packetCounts;
    if (packetCounts) {
      new Counter({
        name: 'kpx_packets_total',
        help: 'Packets the tc and XDP programs translated or dropped, by path (a packet XDP passes on to tc counts twice)',
        labelNames: ['path'],
        registers,
        // Read at scrape time from the kernel's per-CPU counters, which only grow (a new map starts them over).
        collect() {
          const counts = packetCounts();
          this.reset();
          for (const [stat, path] of Object.entries(PACKET_PATHS) as Array<[keyof Stats, string]>) this.labels(path).inc(Number(counts[stat]));
        },
      });
    }
    collectDefaultMetrics({ register: this.registry });
  }

  /** A change is waiting for a sync: of a Service or of endpoints, where the source says. */
  queued(atMs: number, kind: ChangeKind | undefined): void {
    this.lastQueued.set(atMs / 1000);
    if (!kind) return;
    this.changes[kind].total.inc();
    this.changes[kind].pending.inc();
  }

  /** A sync reached the kernel, with every change known so far. */
  synced(atMs: number, seconds: number, full: boolean): void {
    this.changes.service.pending.set(0);
    this.changes.endpoints.pending.set(0);
    this.syncDuration.observe(seconds);
    (full ? this.fullSyncDuration : this.partialSyncDuration).observe(seconds);
    this.lastSync.set(atMs / 1000);
  }

  /** The network programming latencies (seconds) of the EndpointSlice changes a sync applied. */
  programmed(latencies: readonly number[]): void {
    for (const seconds of latencies) this.programming.observe(seconds);
  }

  healthAnswered(path: '/healthz' | '/livez', status: number): void {
    (path === '/healthz' ? this.healthz : this.livez).labels(String(status)).inc();
  }
}
