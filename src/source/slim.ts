/**
 * What the watch keeps of an API object: the fields of src/k8s/types.ts
 * (less a Service's selector: a proxy has no use for it), only the labels
 * kpx reads, and a slice's trigger-time annotation. A real object also
 * carries managedFields, annotations such as kubectl's
 * last-applied-configuration and status kpx never reads; kept, they would
 * be most of the agent's memory.
 *
 * Values are copied as they are, wrong types included: the model validates
 * them and rejects an object with the reason.
 */
import type { NodeFacts } from '../health/proxy-health.js';
import type { EndpointSlice, Endpoints, ObjectMeta, Service } from '../k8s/types.js';
import { HEADLESS_LABEL, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL } from '../k8s/types.js';

/** Set by the EndpointSlice controller: when the change that produced this slice happened. */
export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';

/** Per field: true keeps the value as it is, a shape keeps that part of an object, [shape] that part of each list element, a function its result. */
interface Shape {
  [field: string]: true | Shape | [Shape] | ((value: unknown) => unknown);
}

type Raw = Record<string, unknown>;

const isRaw = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);

function slimTo(shape: Shape, value: unknown): unknown {
  // Not an object: left as it is, for the model to reject.
  if (!isRaw(value)) return value;
  const out: Raw = {};
  for (const field of Object.keys(shape)) {
    if (!Object.hasOwn(value, field)) continue;
    const part = shape[field]!;
    const v = value[field];
    if (part === true) out[field] = v;
    else if (typeof part === 'function') out[field] = part(v);
    else if (Array.isArray(part)) out[field] = Array.isArray(v) ? v.map((e) => slimTo(part[0], e)) : v;
    else out[field] = slimTo(part, v);
  }
  return out;
}

/** Only these keys of a label or annotation map. */
function only(keys: readonly string[]): (value: unknown) => unknown {
  return (value) => {
    if (!isRaw(value)) return value;
    const kept: Raw = {};
    for (const key of keys) if (Object.hasOwn(value, key)) kept[key] = value[key];
    return kept;
  };
}

const CONDITIONS: Shape = { ready: true, serving: true, terminating: true };
const sharedConditions = new Map<string, unknown>();

/**
 * Endpoint conditions take a handful of values across a whole cluster: one
 * frozen object per value, instead of one per endpoint.
 */
function conditions(value: unknown): unknown {
  const slim = slimTo(CONDITIONS, value);
  if (!isRaw(slim) || !Object.values(slim).every((v) => typeof v === 'boolean' || v === null)) return slim;
  const key = JSON.stringify(slim);
  let shared = sharedConditions.get(key);
  if (shared === undefined) sharedConditions.set(key, (shared = Object.freeze(slim)));
  return shared;
}

/** More names than a cluster has nodes and zones: past it the table starts over, so a flood of names cannot grow it. */
const INTERNED_NAMES_MAX = 65_536;
const internedNames = new Map<string, string>();

/**
 * Node and zone names repeat on every endpoint of a node: each parsed event
 * brings its own copy, and at 10,000 Services × 10 endpoints the node
 * names alone held 5.6 MB. One string per name instead.
 */
function interned(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const known = internedNames.get(value);
  if (known !== undefined) return known;
  if (internedNames.size >= INTERNED_NAMES_MAX) internedNames.clear();
  internedNames.set(value, value);
  return value;
}

const META: Shape = {
  name: true,
  namespace: true,
  resourceVersion: true,
  labels: only([SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL]),
};

const PORT: Shape = { name: true, port: true, protocol: true };

const SERVICE: Shape = {
  metadata: META,
  spec: {
    type: true,
    clusterIP: true,
    clusterIPs: true,
    externalIPs: true,
    externalName: true,
    ports: [{ ...PORT, targetPort: true, nodePort: true }],
    sessionAffinity: true,
    externalTrafficPolicy: true,
    internalTrafficPolicy: true,
    loadBalancerSourceRanges: true,
    healthCheckNodePort: true,
    allocateLoadBalancerNodePorts: true,
    publishNotReadyAddresses: true,
  },
  status: { loadBalancer: { ingress: [{ ip: true, hostname: true, ipMode: true }] } },
};

const ENDPOINT_SLICE: Shape = {
  metadata: { ...META, annotations: only([TRIGGER_TIME_ANNOTATION]) },
  addressType: true,
  endpoints: [{ addresses: true, conditions, nodeName: interned, zone: interned, hints: { forZones: [{ name: interned }] } }],
  ports: [PORT],
};

const ADDRESS: Shape = { ip: true, hostname: true, nodeName: interned };

const ENDPOINTS: Shape = {
  metadata: META,
  subsets: [{ addresses: [ADDRESS], notReadyAddresses: [ADDRESS], ports: [PORT] }],
};

/** What says whether the node is going away (health/proxy-health.ts nodeEligible), and its name, to key it. */
const NODE: Shape = { metadata: { name: true, resourceVersion: true, deletionTimestamp: true }, spec: { taints: [{ key: true }] } };

export const slimService = (raw: unknown) => slimTo(SERVICE, raw) as Service;
export const slimEndpointSlice = (raw: unknown) => slimTo(ENDPOINT_SLICE, raw) as EndpointSlice;
export const slimEndpoints = (raw: unknown) => slimTo(ENDPOINTS, raw) as Endpoints;
export const slimNode = (raw: unknown) => slimTo(NODE, raw) as { metadata?: ObjectMeta } & NodeFacts;
