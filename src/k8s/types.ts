/**
 * The subset of Kubernetes API objects kpx reads. Field names and shapes are
 * the API's own (core/v1 Service and Endpoints, discovery.k8s.io/v1
 * EndpointSlice); everything is optional because a source may hand us
 * anything, and the model validates before it trusts a field.
 */

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface ServicePortSpec {
  name?: string;
  protocol?: string;
  port?: number;
  targetPort?: number | string;
  nodePort?: number;
}

export interface Service {
  apiVersion?: string;
  kind?: 'Service';
  metadata?: ObjectMeta;
  spec?: {
    type?: string;
    clusterIP?: string;
    clusterIPs?: string[];
    externalIPs?: string[];
    externalName?: string;
    selector?: Record<string, string>;
    ports?: ServicePortSpec[];
    sessionAffinity?: string;
    externalTrafficPolicy?: string;
    internalTrafficPolicy?: string;
    loadBalancerSourceRanges?: string[];
    healthCheckNodePort?: number;
    allocateLoadBalancerNodePorts?: boolean;
    publishNotReadyAddresses?: boolean;
  };
  status?: {
    loadBalancer?: { ingress?: Array<{ ip?: string; hostname?: string; ipMode?: string }> };
  };
}

export interface EndpointAddress {
  ip?: string;
  hostname?: string;
  nodeName?: string;
}

export interface EndpointPort {
  name?: string;
  port?: number;
  protocol?: string;
}

export interface Endpoints {
  apiVersion?: string;
  kind?: 'Endpoints';
  metadata?: ObjectMeta;
  subsets?: Array<{
    addresses?: EndpointAddress[];
    notReadyAddresses?: EndpointAddress[];
    ports?: EndpointPort[];
  }>;
}

export interface EndpointSliceEndpoint {
  addresses?: string[];
  conditions?: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null };
  nodeName?: string;
  zone?: string;
  hints?: { forZones?: Array<{ name?: string }> };
}

export interface EndpointSlice {
  apiVersion?: string;
  kind?: 'EndpointSlice';
  metadata?: ObjectMeta;
  addressType?: string;
  endpoints?: EndpointSliceEndpoint[];
  ports?: Array<{ name?: string; port?: number; protocol?: string }>;
}

/** Where an object came from, for log lines: a file path or an API resource. */
export interface Origin {
  origin: string;
}

/** The latest copy of every object a source knows, as the model consumes it. */
export interface ObjectSnapshot {
  services: Array<Service & Origin>;
  endpoints: Array<Endpoints & Origin>;
  endpointSlices: Array<EndpointSlice & Origin>;
}

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';
