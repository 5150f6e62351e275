/**
 * Composition root of `kpx run`: source -> model -> datapath, wired once,
 * with the shutdown order that leaves the dataplane serving.
 */
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import { EbpfDatapath } from './datapath/ebpf.js';
import { IptablesDatapath } from './datapath/iptables.js';
import { chooseMode, probeKernel } from './datapath/probe.js';
import type { Datapath } from './datapath/types.js';
import { readPinnedStats } from './datapath/stats.js';
import { ProxyHealth } from './health/proxy-health.js';
import { HealthServers } from './health/servers.js';
import type { BindAddress } from './http-listener.js';
import { collectAfterSync } from './heap.js';
import { AgentMetrics } from './metrics/agent-metrics.js';
import { serveMetrics } from './metrics/metrics-server.js';
import { networkProgrammingLatencies } from './metrics/programming-latency.js';
import { ModelCache, wholeModel } from './model/incremental.js';
import { resolveNodePortAddresses } from './model/node-addresses.js';
import type { HealthCheckNodePort, ModelOptions, ModelUpdate, PortRange } from './model/types.js';
import { DEFAULT_SYNCER_OPTIONS, Syncer } from './reconcile/syncer.js';
import type { ChangeKind, Source } from './source/types.js';

export type SourceConfig =
  | { kind: 'manifests'; dir: string }
  /** kubeconfig undefined: the in-cluster service account. */
  | { kind: 'kube'; kubeconfig?: string; master?: string };

export interface AgentConfig {
  source: SourceConfig;
  /** cgroup2 folder for the socket programs; required in ebpf mode. */
  cgroup?: string;
  bpffs: string;
  nodeName: string;
  mode: 'auto' | 'ebpf' | 'iptables';
  /** A probe result to use instead of the kernel's (tests of --mode auto on a kernel that has everything). */
  probeOverride?: string;
  /** External interfaces for NodePort/externalIP/LoadBalancer traffic; 'auto': those of the default route. */
  interfaces: string[] | 'auto';
  /** kube-proxy's --nodeport-addresses: CIDRs that limit which node addresses answer NodePorts. */
  nodePortCIDRs: string[];
  xdp: boolean;
  serviceClusterIPRange: string;
  serviceNodePortRange: PortRange;
  minSyncIntervalMs: number;
  mapSizes: Partial<Record<string, number>>;
  /** Where /healthz and /livez are served (kube-proxy's --healthz-bind-address); undefined: nowhere. */
  healthz: BindAddress | undefined;
  /** Where /metrics and /proxyMode are served (kube-proxy's --metrics-bind-address); undefined: nowhere. */
  metrics: BindAddress | undefined;
}

/**
 * How often the node's addresses are read for a change: nothing tells the
 * agent of one. kube-proxy reads them at every sync (30 s apart at most).
 */
const NODE_ADDRESS_POLL_MS = 1000;

export interface Agent {
  /** Stops watching and releases handles; what is in the kernel stays. */
  stop(): void;
}

/**
 * Starts the agent. onFatal is called when it had to stop on its own (a
 * failure no retry can mend), once its handles are released: the caller
 * exits non-zero, as when the agent fails to start.
 */
export async function startAgent(config: AgentConfig, log: Logger, onFatal: (err: Error) => void): Promise<Agent> {
  // A forced iptables mode needs no probe (it loads some 30 throwaway programs).
  const report = config.mode === 'iptables' ? { missing: [], checked: [] } : probeKernel({ override: config.probeOverride });
  const choice = chooseMode(config.mode, report);
  if ('error' in choice) throw new Error(choice.error);
  log.info({ mode: choice.mode, requested: config.mode, reason: choice.reason }, `datapath mode ${choice.mode}`);
  const src = config.source;
  // Only the source in use is loaded: each pulls in its own parsers and clients.
  const kube =
    src.kind === 'kube'
      ? new (await import('./source/kube.js')).KubeSource({ kubeconfig: src.kubeconfig, master: src.master, nodeName: config.nodeName, log })
      : undefined;
  const source: Source = src.kind === 'manifests' ? new (await import('./source/manifests.js')).ManifestSource(src.dir, log) : kube!;
  const interfaces = config.interfaces === 'auto' ? defaultRouteInterfaces() : config.interfaces;
  let nodePortProblems: string[] = [];
  /** The node addresses that answer NodePorts, as the interfaces hold them now; each problem logged when it appears. */
  const readNodePortAddresses = (): string[] => {
    const resolved = resolveNodePortAddresses(networkInterfaces(), interfaces, config.nodePortCIDRs);
    for (const problem of resolved.problems) {
      if (!nodePortProblems.includes(problem)) log.warn({ interfaces, nodePortCIDRs: config.nodePortCIDRs }, problem);
    }
    nodePortProblems = resolved.problems;
    return resolved.addresses;
  };
  const nodePortAddresses = readNodePortAddresses();
  log.info({ interfaces, nodePortAddresses }, 'node addresses');
  const datapath: Datapath = choice.mode === 'ebpf' ? openEbpf(config, interfaces, log) : new IptablesDatapath({ log });
  let triggerTimes: number[] = [];
  const metrics = new AgentMetrics({ packetCounts: datapath.mode === 'ebpf' ? () => readPinnedStats(config.bpffs) : undefined });
  const metricsServer = config.metrics ? serveMetrics(config.metrics, metrics, datapath.mode, log) : undefined;
  const health = new ProxyHealth();
  const onAnswer = (path: '/healthz' | '/livez', status: number) => metrics.healthAnswered(path, status);
  const healthServers = new HealthServers({ healthz: config.healthz, health, node: () => source.node(), onAnswer, log });
  /** The health check node ports of the model the syncer last built: served once that sync has landed. */
  let healthChecks: HealthCheckNodePort[] = [];
  const models = new ModelCache();
  const modelOptions: ModelOptions = {
    serviceClusterIPRange: config.serviceClusterIPRange,
    // An API server has already allocated every ClusterIP and nodePort; a manifest folder has no one to do it.
    allocateClusterIPs: src.kind === 'manifests',
    allocateNodePorts: src.kind === 'manifests',
    serviceNodePortRange: config.serviceNodePortRange,
    nodeName: config.nodeName,
    nodePortAddresses,
  };
  let manifestSequence = 0;
  const model = (): ModelUpdate => {
    const update = buildUpdate();
    healthChecks = update.healthChecks;
    return update;
  };
  const buildUpdate = (): ModelUpdate => {
    // The API server's objects arrive one event at a time: the model follows them per Service.
    if (kube) {
      triggerTimes = triggerTimes.concat(kube.takeTriggerTimes());
      return models.update(kube.groups, modelOptions);
    }
    // A manifest folder is re-read whole, and allocation spans its Services.
    const snap = source.snapshot();
    const built = models.build(snap.objects, modelOptions);
    return wholeModel({ ...built, rejected: [...snap.rejected, ...built.rejected] }, ++manifestSequence);
  };
  /** A change waits for a sync: what /healthz fails on when it waits too long. */
  const request = (kind?: ChangeKind) => {
    health.queued();
    metrics.queued(Date.now(), kind);
    syncer.request();
  };
  const onApplied = (appliedAtMs: number, seconds: number, full: boolean) => {
    health.updated();
    metrics.synced(appliedAtMs, seconds, full);
    // kube-proxy listens on the NodePort addresses when --nodeport-addresses narrows them, else on every address.
    healthServers.syncServices(healthChecks, config.nodePortCIDRs.length ? modelOptions.nodePortAddresses : undefined);
    const latencies = networkProgrammingLatencies(triggerTimes, appliedAtMs);
    triggerTimes = [];
    metrics.programmed(latencies);
    if (latencies.length) log.debug({ networkProgrammingSeconds: latencies }, 'network programming latency');
  };
  const syncer = new Syncer(
    model,
    datapath,
    log,
    { ...DEFAULT_SYNCER_OPTIONS, minSyncIntervalMs: config.minSyncIntervalMs },
    onApplied,
    collectAfterSync,
    (err) => {
      release();
      onFatal(err);
    },
  );
  let addressPoll: NodeJS.Timeout | undefined;
  /** Stops watching and syncing and lets go of the kernel handles; the dataplane stays. */
  const release = () => {
    clearInterval(addressPoll);
    metricsServer?.close();
    healthServers.close();
    source.close();
    syncer.stop();
    datapath.close();
  };
  try {
    await source.start(request);
  } catch (err) {
    metricsServer?.close();
    healthServers.close();
    source.close();
    datapath.close();
    throw err;
  }
  // The source has its first view: the first sync is due, and late after the health timeout.
  health.queued();
  syncer.start();
  // An address added to or removed from the interfaces: NodePorts follow it, as kube-proxy's do. Read here rather
  // than at every sync: with a veth per pod the read costs more than a whole single-change sync.
  addressPoll = setInterval(() => {
    const addresses = readNodePortAddresses();
    if (addresses.join() === modelOptions.nodePortAddresses.join()) return;
    log.info({ nodePortAddresses: addresses, before: modelOptions.nodePortAddresses }, 'node addresses changed');
    modelOptions.nodePortAddresses = addresses;
    request();
  }, NODE_ADDRESS_POLL_MS);
  addressPoll.unref();
  log.info({ mode: datapath.mode, node: config.nodeName, source: src.kind }, 'agent running');
  return {
    stop: release,
  };
}

/** The interfaces of this network namespace's default IPv4 routes (/proc/net/route is per namespace). */
function defaultRouteInterfaces(): string[] {
  const rows = readFileSync('/proc/net/route', 'utf8').trim().split('\n').slice(1);
  const names = rows.map((row) => row.split('\t')).filter((cols) => cols[1] === '00000000' && cols[7] === '00000000');
  return [...new Set(names.map((cols) => cols[0]))];
}

function openEbpf(config: AgentConfig, interfaces: string[], log: Logger): EbpfDatapath {
  if (config.cgroup === undefined) throw new Error('ebpf mode needs --cgroup (the cgroup2 folder whose sockets kpx translates)');
  return EbpfDatapath.open({ bpffs: config.bpffs, cgroup: config.cgroup, interfaces, xdp: config.xdp, mapSizes: config.mapSizes, log });
}
