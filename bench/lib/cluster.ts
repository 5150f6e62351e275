/**
 * Synthetic clusters for benchmarks: N Services of one TCP port, each with
 * its EndpointSlice of E endpoints, as an API server would hand them over
 * (ClusterIPs set). Names sort in index order (svc-000000, ...).
 */
import type { EndpointSlice, Origin, Service } from '../../src/k8s/types.js';
import type { ObjectSnapshot } from '../../src/k8s/types.js';
import { jumpOrder, serviceChainName } from '../../src/datapath/iptables-rules.js';
import type { ModelOptions } from '../../src/model/types.js';

export const NAMESPACE = 'bench';
export const SERVICE_PORT = 80;
export const TARGET_PORT = 8080;

function ipv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** ClusterIPs from 10.96.0.10 on: room for a million Services inside 10.96.0.0/12. */
export function clusterIP(i: number): string {
  return ipv4((10 << 24) + (96 << 16) + 10 + i);
}

/** Endpoint j of Service i, inside 10.128.0.0/9: 16 addresses per Service. */
export function endpointIP(i: number, j: number): string {
  return ipv4((10 << 24) + (128 << 16) + i * 16 + j);
}

export function serviceName(i: number): string {
  return `svc-${String(i).padStart(6, '0')}`;
}

/** The indexes of Services 0..n-1 (TCP) in the order of their jumps in iptables mode's KUBE-SERVICES. */
export function kubeServicesIndexes(n: number): number[] {
  const chain = (i: number) => serviceChainName({ namespace: NAMESPACE, name: serviceName(i), portName: 'http', protocol: 'TCP' });
  const names = Array.from({ length: n }, (_, i) => chain(i));
  return names.map((_, i) => i).sort((a, b) => jumpOrder(names[a]!, names[b]!));
}

export interface Endpoint {
  ip: string;
  port: number;
  nodeName?: string;
}

export interface ClusterSpec {
  services: number;
  endpointsPerService: number;
  /** Where Service i's endpoints really are (e.g. a lab server); synthetic addresses otherwise. */
  endpointsOf?: (i: number) => Endpoint[] | undefined;
  /** Gives Service i a nodePort too. */
  nodePortOf?: (i: number) => number | undefined;
  protocol?: 'TCP' | 'UDP';
}

export function service(i: number, spec: ClusterSpec): Service & Origin {
  const nodePort = spec.nodePortOf?.(i);
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: serviceName(i), namespace: NAMESPACE },
    spec: {
      type: nodePort === undefined ? 'ClusterIP' : 'NodePort',
      clusterIP: clusterIP(i),
      ports: [{ name: 'http', port: SERVICE_PORT, targetPort: TARGET_PORT, protocol: spec.protocol ?? 'TCP', ...(nodePort === undefined ? {} : { nodePort }) }],
    },
    origin: `bench/${serviceName(i)}`,
  } as Service & Origin;
}

/** Synthetic endpoints run on this many nodes, none of them the agent's, named as a cloud names them. */
const SYNTHETIC_NODES = 100;

/** Service i's slice; `generation` moves endpoint 0 to another address, for single-endpoint changes. */
export function endpointSlice(i: number, spec: ClusterSpec, generation = 0): EndpointSlice & Origin {
  const endpoints: Endpoint[] =
    spec.endpointsOf?.(i) ??
    Array.from({ length: spec.endpointsPerService }, (_, j) => ({
      ip: j === 0 && generation > 0 ? ipv4((10 << 24) + (1 << 16) + generation) : endpointIP(i, j),
      port: TARGET_PORT,
      nodeName: `ip-10-0-${(i * spec.endpointsPerService + j) % SYNTHETIC_NODES}-17.eu-west-1.compute.internal`,
    }));
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${serviceName(i)}-1`, namespace: NAMESPACE, labels: { 'kubernetes.io/service-name': serviceName(i) } },
    addressType: 'IPv4',
    // One port per slice: every endpoint of a synthetic Service listens on the same one.
    ports: [{ name: 'http', port: endpoints[0]?.port ?? TARGET_PORT, protocol: spec.protocol ?? 'TCP' }],
    endpoints: endpoints.map((e) => ({ addresses: [e.ip], conditions: { ready: true }, ...(e.nodeName ? { nodeName: e.nodeName } : {}) })),
    origin: `bench/${serviceName(i)}-1`,
  } as EndpointSlice & Origin;
}

export function snapshot(spec: ClusterSpec): ObjectSnapshot {
  const services: Array<Service & Origin> = [];
  const endpointSlices: Array<EndpointSlice & Origin> = [];
  for (let i = 0; i < spec.services; i++) {
    services.push(service(i, spec));
    endpointSlices.push(endpointSlice(i, spec));
  }
  return { services, endpointSlices, endpoints: [] };
}

/** Model options of an agent watching an API server (nothing to allocate). */
export function apiServerModelOptions(nodeName: string, nodePortAddresses: string[] = []): ModelOptions {
  return {
    serviceClusterIPRange: '10.96.0.0/12',
    allocateClusterIPs: false,
    allocateNodePorts: false,
    serviceNodePortRange: { min: 30000, max: 32767 },
    nodeName,
    nodePortAddresses,
  };
}
