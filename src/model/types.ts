/**
 * What kpx programs, independent of how: one entry per Service port, with the
 * addresses it answers on and the endpoints that may receive its traffic.
 * Produced by buildModel (pure) and consumed by every datapath.
 */

export type Protocol = 'TCP' | 'UDP';

export type FrontendKind = 'ClusterIP' | 'NodePort' | 'ExternalIP' | 'LoadBalancer';

/** The address of every NodePort frontend: the dataplane reads it as "any address in Model.nodeAddresses". */
export const NODE_PORT_ADDRESS = '0.0.0.0';

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
  /** NODE_PORT_ADDRESS for a NodePort. */
  address: string;
  port: number;
}

export type EndpointState = 'ready' | 'serving-terminating';

export interface Backend {
  address: string;
  port: number;
  state: EndpointState;
  nodeName?: string;
  /** The endpoint runs on this node (its nodeName is ModelOptions.nodeName). */
  local: boolean;
}

export interface ServicePort {
  ref: ServicePortRef;
  frontends: Frontend[];
  /** The endpoints that take new connections, sorted by address then port. Empty means reject. */
  backends: Backend[];
  /**
   * Serving terminating endpoints while ready ones take the new connections:
   * sorted as backends, never empty (absent instead). They get no new flow,
   * but a UDP flow already on one stays there, as kube-proxy's conntrack
   * cleanup leaves the flows of an endpoint that still serves.
   */
  draining?: Backend[];
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

/**
 * A LoadBalancer Service with externalTrafficPolicy Local: its load balancer
 * probes this node on spec.healthCheckNodePort and sends traffic only where
 * the answer is 200, i.e. where the Service has a ready local endpoint.
 */
export interface HealthCheckNodePort {
  namespace: string;
  name: string;
  port: number;
  /** Ready endpoints on this node, each address once (a pod serving two ports counts once), as kube-proxy counts them. */
  localEndpoints: number;
}

export interface Model {
  servicePorts: ServicePort[];
  ignored: IgnoredService[];
  rejected: Rejected[];
  /** Sorted by namespace, then name. */
  healthChecks: HealthCheckNodePort[];
  /** The node addresses NodePorts answer on: ModelOptions.nodePortAddresses sorted numerically, without duplicates. */
  nodeAddresses: string[];
}

/** An inclusive range of port numbers. */
export interface PortRange {
  min: number;
  max: number;
}

export interface ModelOptions {
  /** CIDR that manifest-mode Services without spec.clusterIP get an address from. */
  serviceClusterIPRange: string;
  /** Allocate missing ClusterIPs (manifest mode); an API server always sets them. */
  allocateClusterIPs: boolean;
  /** This node's name: endpoints whose nodeName is this one are local. */
  nodeName: string;
  /** The range manifest-mode nodePorts are allocated from (kube-apiserver's --service-node-port-range). */
  serviceNodePortRange: PortRange;
  /** Allocate missing nodePorts (manifest mode); an API server always sets them. */
  allocateNodePorts: boolean;
  /** IPv4 addresses of this node that answer NodePorts (resolveNodePortAddresses); anything not a dotted quad is left out. */
  nodePortAddresses: string[];
}

/**
 * What changed between two models from the same model cache: the service
 * ports and ignored Services that are new or different (new objects), and
 * the objects of the previous model that are gone. Everything else is the
 * very same object as before.
 */
export interface ModelDelta {
  /** The update this delta starts from (ModelUpdate.sequence). */
  since: number;
  upserted: Array<ServicePort | IgnoredService>;
  removed: Array<ServicePort | IgnoredService>;
  nodeAddresses: string[];
}

/**
 * One step of the model, as the datapaths take it: the whole model for a
 * consumer that starts over or renders everything (built on demand: at
 * scale that is the costly part), and, when the cache knows it, the delta
 * since the previous step, whose cost is that of the change alone.
 */
export interface ModelUpdate {
  /** Increases with every update from one cache; a delta names the one it follows. */
  sequence: number;
  full(): Model;
  delta?: ModelDelta;
  rejected: Rejected[];
  /** The whole model's healthChecks, made without building the whole model. */
  healthChecks: HealthCheckNodePort[];
  servicePortCount: number;
}
