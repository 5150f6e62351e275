/**
 * What kpx programs, independent of how: one entry per Service port, with the
 * addresses it answers on and the endpoints that may receive its traffic.
 * Produced by buildModel (pure) and consumed by every datapath.
 */

export type Protocol = 'TCP' | 'UDP';

export type FrontendKind = 'ClusterIP' | 'NodePort' | 'ExternalIP' | 'LoadBalancer';

/** kube-proxy's ServicePortName: namespace/name:port-name plus protocol. */
export interface ServicePortRef {
  namespace: string;
  name: string;
  /** spec.ports[].name; '' for a single unnamed port. */
  portName: string;
  protocol: Protocol;
}

export interface Frontend {
  kind: FrontendKind;
  address: string;
  port: number;
}

export type EndpointState = 'ready' | 'serving-terminating';

export interface Backend {
  address: string;
  port: number;
  state: EndpointState;
  nodeName?: string;
}

export interface ServicePort {
  ref: ServicePortRef;
  frontends: Frontend[];
  /** The endpoints that take new connections, sorted by address then port. Empty means reject. */
  backends: Backend[];
}

/** Why kpx deliberately leaves a whole Service alone (kube-proxy ignores these too). */
export type IgnoreReason = 'ExternalName' | 'headless' | 'service-proxy-name';

export interface IgnoredService {
  namespace: string;
  name: string;
  reason: IgnoreReason;
}

/** An object that is invalid or unsupported: logged once, skipped, everything else goes on. */
export interface Rejected {
  kind: string;
  namespace: string;
  name: string;
  origin: string;
  reason: string;
}

export interface Model {
  servicePorts: ServicePort[];
  ignored: IgnoredService[];
  rejected: Rejected[];
}

export interface ModelOptions {
  /** CIDR that manifest-mode Services without spec.clusterIP get an address from. */
  serviceClusterIPRange: string;
  /** Allocate missing ClusterIPs (manifest mode); an API server always sets them. */
  allocateClusterIPs: boolean;
}
