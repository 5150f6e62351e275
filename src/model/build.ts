/**
 * buildModel: Kubernetes objects in, the kpx model out, with kube-proxy's
 * semantics. Pure: no I/O, no logging, no clock, no randomness. Input is
 * treated as arbitrary JSON; nothing here throws on a malformed object, it is
 * rejected with a reason and everything else goes on.
 */

import { HEADLESS_LABEL, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, type ObjectSnapshot } from '../k8s/types.js';
import { allocateClusterIPs, looksLikeIPv6, parseIPv4, sortedIPv4s } from './cluster-ip.js';
import { allocateNodePorts } from './node-port.js';
import {
  NODE_PORT_ADDRESS,
  type Backend,
  type EndpointState,
  type Frontend,
  type HealthCheckNodePort,
  type IgnoreReason,
  type IgnoredService,
  type Model,
  type ModelOptions,
  type Protocol,
  type Rejected,
  type ServicePort,
  type ServicePortRef,
} from './types.js';

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function hasOwn(o: Obj, k: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, k);
}

function isPort(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s;
  } catch {
    return String(v);
  }
}

type Kind = 'Service' | 'Endpoints' | 'EndpointSlice';

/** An object with a usable identity. */
interface Named {
  kind: Kind;
  namespace: string;
  name: string;
  origin: string;
  raw: Obj;
  meta: Obj;
  /** Tie-breaker for sorting identical identities deterministically; computed only on a tie. */
  json?: string;
}

interface LivePort {
  index: number;
  portName: string;
  protocol: Protocol;
  port: number;
  /** The nodePort it answers on; 'missing' when its Service type wants one that is not set; null for none. */
  nodePort: number | 'missing' | null;
}

interface LiveService {
  id: Named;
  /** Explicit IPv4 ClusterIP, or null when one must be allocated. */
  clusterIP: string | null;
  ports: LivePort[];
  externalIPs: string[];
  loadBalancerIPs: string[];
  /** Its endpoints: from its EndpointSlices, else from its Endpoints object. */
  endpointGroups: EpGroup[];
  /** An EndpointSlice names it (IPv6 ones too): its Endpoints object is not used. */
  hasSlices: boolean;
  /** spec.healthCheckNodePort of a LoadBalancer with externalTrafficPolicy Local; null for any other Service. */
  healthCheckNodePort: number | null;
}

interface EpPort {
  name: string;
  protocol: string;
  port: number;
}

/** Endpoint states in order of preference: ready ones take traffic, else serving terminating ones, never the others. */
const READY = 0;
const SERVING_TERMINATING = 1;
const NOT_SERVING = 2;

function rankOf(ready: boolean, serving: boolean, terminating: boolean): number {
  if (ready) return READY;
  if (serving && terminating) return SERVING_TERMINATING;
  return NOT_SERVING;
}

/**
 * Endpoints paired with ports: one EndpointSlice, or one subset of an
 * Endpoints object. Endpoint i is entry i of each list: as an object each,
 * a full sync made a hundred thousand only to drop them.
 */
interface EpGroup {
  ports: EpPort[];
  addresses: string[];
  /** Each address as parseIPv4 reads it. */
  addressNumbers: number[];
  /** Each endpoint's state: READY, SERVING_TERMINATING or NOT_SERVING. */
  ranks: number[];
  /** undefined where the endpoint does not say. */
  nodeNames: Array<string | undefined>;
}

/** A group with room for `room` endpoints, filled by addEndpoint and cut to size by trimmed. */
function epGroup(ports: EpPort[], room: number): EpGroup {
  return { ports, addresses: sizedArray(room), addressNumbers: sizedArray(room), ranks: sizedArray(room), nodeNames: sizedArray(room) };
}

function addEndpoint(g: EpGroup, at: number, address: string, addressNumber: number, rank: number, nodeName: string | undefined): void {
  g.addresses[at] = address;
  g.addressNumbers[at] = addressNumber;
  g.ranks[at] = rank;
  g.nodeNames[at] = nodeName;
}

/** The group holding its first `count` endpoints only (the others were rejected). */
function trimmed(g: EpGroup, count: number): EpGroup {
  if (g.addresses.length !== count) for (const list of [g.addresses, g.addressNumbers, g.ranks, g.nodeNames]) list.length = count;
  return g;
}

class Rejections {
  readonly list: Rejected[] = [];
  add(kind: string, namespace: string, name: string, origin: string, reason: string): void {
    this.list.push({ kind, namespace, name, origin, reason });
  }
  of(id: Named, reason: string): void {
    this.add(id.kind, id.namespace, id.name, id.origin, reason);
  }
}

function safeJSON(v: unknown): string {
  try {
    return JSON.stringify(v) ?? '';
  } catch {
    return '';
  }
}

function identify(kind: Kind, raw: unknown, rej: Rejections): Named | null {
  const origin = isObj(raw) && typeof raw.origin === 'string' ? raw.origin : '';
  if (!isObj(raw)) {
    rej.add(kind, '', '', origin, `${kind} is not an object`);
    return null;
  }
  const metaRaw = raw.metadata;
  const meta: Obj = isObj(metaRaw) ? metaRaw : {};
  const nsRaw = meta.namespace;
  const nsGuess = typeof nsRaw === 'string' ? nsRaw : '';
  if (metaRaw !== undefined && metaRaw !== null && !isObj(metaRaw)) {
    rej.add(kind, '', '', origin, 'metadata is not an object');
    return null;
  }
  const name = meta.name;
  if (typeof name !== 'string' || name === '') {
    rej.add(kind, nsGuess, '', origin, name === undefined || name === null || name === '' ? 'missing metadata.name' : `metadata.name is not a string: ${show(name)}`);
    return null;
  }
  let namespace = 'default';
  if (nsRaw !== undefined && nsRaw !== null && nsRaw !== '') {
    if (typeof nsRaw !== 'string') {
      rej.add(kind, '', name, origin, `metadata.namespace is not a string: ${show(nsRaw)}`);
      return null;
    }
    namespace = nsRaw;
  }
  return { kind, namespace, name, origin, raw, meta };
}

function compareNamed(a: Named, b: Named): number {
  return cmp(a.namespace, b.namespace) || cmp(a.name, b.name) || cmp(a.origin, b.origin) || cmp(jsonOf(a), jsonOf(b));
}

function jsonOf(id: Named): string {
  if (id.json === undefined) id.json = safeJSON(id.raw);
  return id.json;
}

/** Identifies, sorts and de-duplicates one kind of object; later duplicates are rejected. */
function collect(kind: Kind, raws: unknown, rej: Rejections): Named[] {
  const list = Array.isArray(raws) ? raws : [];
  const named: Named[] = [];
  for (let i = 0; i < list.length; i++) {
    const id = identify(kind, list[i], rej);
    if (id) named.push(id);
  }
  // One object, as in every group of the model cache: nothing to sort or de-duplicate.
  if (named.length < 2) return named;
  named.sort(compareNamed);
  const out: Named[] = [];
  const seen = new Map<string, Named>();
  for (const id of named) {
    const key = `${id.namespace}/${id.name}`;
    const first = seen.get(key);
    if (first) {
      rej.of(id, `duplicate ${kind} ${key} (first defined in ${first.origin || 'an earlier object'})`);
      continue;
    }
    seen.set(key, id);
    out.push(id);
  }
  return out;
}

/** What an object without labels reads: one object rather than one each. */
const NO_LABELS: Obj = Object.freeze({});

function labelsOf(id: Named): Obj {
  return isObj(id.meta.labels) ? id.meta.labels : NO_LABELS;
}

type ServiceVerdict = { ignored: IgnoreReason } | { live: LiveService } | null;

/** Frontend keys with address 0.0.0.0 are NodePorts, so no other kind of frontend may use that address. */
const UNSPECIFIED_REASON = `${NODE_PORT_ADDRESS}: the unspecified address cannot be a Service address`;

function portLabel(index: number, name: unknown): string {
  return typeof name === 'string' && name !== '' ? `spec.ports[${index}] ${JSON.stringify(name)}` : `spec.ports[${index}]`;
}

/** A health check node port that cannot be served leaves the rest of the Service served. */
const NO_HEALTH_CHECK = "the Service is served, but its load balancer's health checks get no answer";

function checkService(id: Named, rej: Rejections): ServiceVerdict {
  const labels = labelsOf(id);
  if (hasOwn(labels, SERVICE_PROXY_NAME_LABEL)) return { ignored: 'service-proxy-name' };
  if (hasOwn(labels, HEADLESS_LABEL)) return { ignored: 'headless' };

  const specRaw = id.raw.spec;
  if (specRaw !== undefined && specRaw !== null && !isObj(specRaw)) {
    rej.of(id, 'spec is not an object');
    return null;
  }
  const spec: Obj = isObj(specRaw) ? specRaw : {};

  const typeRaw = spec.type;
  if (typeRaw !== undefined && typeRaw !== null && typeof typeRaw !== 'string') {
    rej.of(id, `spec.type is not a string: ${show(typeRaw)}`);
    return null;
  }
  const type = typeof typeRaw === 'string' && typeRaw !== '' ? typeRaw : 'ClusterIP';
  if (type === 'ExternalName') return { ignored: 'ExternalName' };
  if (spec.clusterIP === 'None') return { ignored: 'headless' };
  if (type !== 'ClusterIP' && type !== 'NodePort' && type !== 'LoadBalancer') {
    rej.of(id, `unsupported spec.type ${show(type)}`);
    return null;
  }
  const hasNodePorts = type === 'NodePort' || type === 'LoadBalancer';
  // A LoadBalancer may opt out of nodePorts (allocateLoadBalancerNodePorts: false); the ones it sets still count.
  let wantsEveryNodePort = hasNodePorts;
  if (type === 'LoadBalancer') {
    const allocateRaw = spec.allocateLoadBalancerNodePorts;
    if (allocateRaw === false) wantsEveryNodePort = false;
    else if (allocateRaw !== undefined && allocateRaw !== null && allocateRaw !== true) {
      rej.of(id, `spec.allocateLoadBalancerNodePorts is not a boolean: ${show(allocateRaw)}`);
    }
  }

  // ClusterIP: spec.clusterIP, else the primary of spec.clusterIPs.
  let ipRaw: unknown = spec.clusterIP;
  if ((ipRaw === undefined || ipRaw === null || ipRaw === '') && Array.isArray(spec.clusterIPs) && spec.clusterIPs.length > 0) {
    ipRaw = spec.clusterIPs[0];
  }
  let clusterIP: string | null = null;
  if (ipRaw !== undefined && ipRaw !== null && ipRaw !== '') {
    if (ipRaw === NODE_PORT_ADDRESS) {
      rej.of(id, `spec.clusterIP ${UNSPECIFIED_REASON}`);
      return null;
    } else if (typeof ipRaw === 'string' && parseIPv4(ipRaw) !== null) {
      clusterIP = ipRaw;
    } else if (looksLikeIPv6(ipRaw)) {
      rej.of(id, 'IPv6 not supported yet');
      return null;
    } else {
      rej.of(id, `invalid spec.clusterIP ${show(ipRaw)}`);
      return null;
    }
  }

  // Ports.
  const portsRaw = spec.ports;
  if (portsRaw === undefined || portsRaw === null) {
    rej.of(id, 'spec.ports is missing');
    return null;
  }
  if (!Array.isArray(portsRaw)) {
    rej.of(id, 'spec.ports is not a list');
    return null;
  }
  if (portsRaw.length === 0) {
    rej.of(id, 'spec.ports is empty');
    return null;
  }
  const multi = portsRaw.length > 1;
  const ports: LivePort[] = [];
  // Duplicates need two ports: a Service of one port (most of them) makes none of these.
  const names = multi ? new Map<string, number>() : undefined;
  const numbers = multi ? new Map<string, number>() : undefined;
  const nodePorts = multi ? new Map<string, number>() : undefined;
  for (let index = 0; index < portsRaw.length; index++) {
    const p: unknown = portsRaw[index];
    if (!isObj(p)) {
      rej.of(id, `spec.ports[${index}] is not an object`);
      continue;
    }
    const nameRaw = p.name;
    if (nameRaw !== undefined && nameRaw !== null && typeof nameRaw !== 'string') {
      rej.of(id, `${portLabel(index, p.name)}: name is not a string: ${show(nameRaw)}`);
      continue;
    }
    const portName = typeof nameRaw === 'string' ? nameRaw : '';
    const protoRaw = p.protocol;
    if (protoRaw !== undefined && protoRaw !== null && typeof protoRaw !== 'string') {
      rej.of(id, `${portLabel(index, p.name)}: protocol is not a string: ${show(protoRaw)}`);
      continue;
    }
    const proto = typeof protoRaw === 'string' && protoRaw !== '' ? protoRaw : 'TCP';
    if (proto !== 'TCP' && proto !== 'UDP') {
      rej.of(id, `${portLabel(index, p.name)}: protocol ${proto} not supported`);
      continue;
    }
    if (!isPort(p.port)) {
      rej.of(id, `${portLabel(index, p.name)}: invalid port ${show(p.port)} (want an integer 1..65535)`);
      continue;
    }
    const tp = p.targetPort;
    if (tp !== undefined && tp !== null && !isPort(tp) && !(typeof tp === 'string' && tp !== '')) {
      rej.of(id, `${portLabel(index, p.name)}: invalid targetPort ${show(tp)} (want an integer 1..65535 or a port name)`);
      continue;
    }
    const np = p.nodePort;
    // 0 is the API's "not set", as for every int32 field.
    if (np !== undefined && np !== null && np !== 0 && !isPort(np)) {
      rej.of(id, `${portLabel(index, p.name)}: invalid nodePort ${show(np)} (want an integer 1..65535)`);
      continue;
    }
    if (multi && portName === '') {
      rej.of(id, `${portLabel(index, p.name)}: a Service with more than one port must name each port`);
      continue;
    }
    const firstName = names?.get(portName);
    if (firstName !== undefined) {
      rej.of(id, `${portLabel(index, p.name)}: duplicate port name (also spec.ports[${firstName}])`);
      continue;
    }
    // Only a Service of several ports has numbers to check: the key is built only then.
    const numKey = numbers ? `${p.port}/${proto}` : undefined;
    const firstNum = numKey === undefined ? undefined : numbers!.get(numKey);
    if (firstNum !== undefined) {
      rej.of(id, `${portLabel(index, p.name)}: duplicate port ${numKey} (also spec.ports[${firstNum}])`);
      continue;
    }
    names?.set(portName, index);
    if (numKey !== undefined) numbers!.set(numKey, index);
    // A nodePort that is set but cannot be used leaves the port without one, not with an allocated one.
    let nodePort: LivePort['nodePort'] = null;
    if (isPort(np)) {
      const npKey = `${np}/${proto}`;
      const firstNp = nodePorts?.get(npKey);
      if (!hasNodePorts) {
        rej.of(id, `${portLabel(index, p.name)}: nodePort ${np} is set but spec.type is ${type}`);
      } else if (firstNp !== undefined) {
        rej.of(id, `${portLabel(index, p.name)}: duplicate nodePort ${npKey} (also spec.ports[${firstNp}])`);
      } else {
        nodePorts?.set(npKey, index);
        nodePort = np;
      }
    } else if (wantsEveryNodePort) {
      nodePort = 'missing';
    }
    ports.push({ index, portName, protocol: proto, port: p.port, nodePort });
  }

  // External IPs.
  const externalIPs: string[] = [];
  const ext = spec.externalIPs;
  if (ext !== undefined && ext !== null) {
    if (!Array.isArray(ext)) {
      rej.of(id, 'spec.externalIPs is not a list');
    } else {
      ext.forEach((ip: unknown, i: number) => {
        if (ip === NODE_PORT_ADDRESS) {
          rej.of(id, `spec.externalIPs[${i}] ${UNSPECIFIED_REASON}`);
        } else if (typeof ip === 'string' && parseIPv4(ip) !== null) {
          if (!externalIPs.includes(ip)) externalIPs.push(ip);
        } else if (looksLikeIPv6(ip)) {
          rej.of(id, `spec.externalIPs[${i}] ${show(ip)}: IPv6 not supported yet`);
        } else {
          rej.of(id, `spec.externalIPs[${i}]: invalid IPv4 address ${show(ip)}`);
        }
      });
    }
  }

  // Load balancer ingress IPs (status), only for type LoadBalancer.
  const loadBalancerIPs: string[] = [];
  if (type === 'LoadBalancer') {
    const status = id.raw.status;
    const lb = isObj(status) ? status.loadBalancer : undefined;
    const ingress = isObj(lb) ? lb.ingress : undefined;
    if (ingress !== undefined && ingress !== null) {
      if (!Array.isArray(ingress)) {
        rej.of(id, 'status.loadBalancer.ingress is not a list');
      } else {
        ingress.forEach((ing: unknown, i: number) => {
          const where = `status.loadBalancer.ingress[${i}]`;
          if (!isObj(ing)) {
            rej.of(id, `${where} is not an object`);
            return;
          }
          const mode = ing.ipMode;
          if (mode === 'Proxy') return;
          if (mode !== undefined && mode !== null && mode !== 'VIP') {
            rej.of(id, `${where}: unsupported ipMode ${show(mode)}`);
            return;
          }
          const ip = ing.ip;
          if (ip === undefined || ip === null || ip === '') return; // hostname-only ingress
          if (ip === NODE_PORT_ADDRESS) {
            rej.of(id, `${where} ${UNSPECIFIED_REASON}`);
          } else if (typeof ip === 'string' && parseIPv4(ip) !== null) {
            if (!loadBalancerIPs.includes(ip)) loadBalancerIPs.push(ip);
          } else if (looksLikeIPv6(ip)) {
            rej.of(id, `${where} ${show(ip)}: IPv6 not supported yet`);
          } else {
            rej.of(id, `${where}: invalid IPv4 address ${show(ip)}`);
          }
        });
      }
    }
  }

  // kube-proxy serves a health check for a LoadBalancer whose external traffic must stay on the node (NeedsHealthCheck).
  let healthCheckNodePort: number | null = null;
  if (type === 'LoadBalancer' && spec.externalTrafficPolicy === 'Local') {
    const hc = spec.healthCheckNodePort;
    if (isPort(hc)) healthCheckNodePort = hc;
    else if (hc === undefined || hc === null || hc === 0) rej.of(id, `spec.healthCheckNodePort is missing: ${NO_HEALTH_CHECK}`);
    else rej.of(id, `invalid spec.healthCheckNodePort ${show(hc)} (want an integer 1..65535): ${NO_HEALTH_CHECK}`);
  }

  return { live: { id, clusterIP, ports, externalIPs, loadBalancerIPs, endpointGroups: [], hasSlices: false, healthCheckNodePort } };
}

/** Reads a condition; missing/null gives the default, a non-boolean is an error (undefined). */
function condition(v: unknown, dflt: boolean): boolean | undefined {
  if (v === undefined || v === null) return dflt;
  if (typeof v === 'boolean') return v;
  return undefined;
}

function parseEpPorts(id: Named, raw: unknown, where: string, rej: Rejections): EpPort[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) {
    rej.of(id, `${where} is not a list`);
    return [];
  }
  const out: EpPort[] = [];
  for (let i = 0; i < raw.length; i++) {
    const p: unknown = raw[i];
    if (!isObj(p)) {
      rej.of(id, `${where}[${i}] is not an object`);
      continue;
    }
    const name = p.name;
    if (name !== undefined && name !== null && typeof name !== 'string') {
      rej.of(id, `${where}[${i}]: name is not a string: ${show(name)}`);
      continue;
    }
    const proto = p.protocol;
    if (proto !== undefined && proto !== null && typeof proto !== 'string') {
      rej.of(id, `${epPortLabel(where, i, name)}: protocol is not a string: ${show(proto)}`);
      continue;
    }
    if (!isPort(p.port)) {
      rej.of(id, `${epPortLabel(where, i, name)}: invalid port ${show(p.port)} (want an integer 1..65535)`);
      continue;
    }
    out.push({
      name: typeof name === 'string' ? name : '',
      protocol: typeof proto === 'string' && proto !== '' ? proto : 'TCP',
      port: p.port,
    });
  }
  return out;
}

/** An endpoint port as a rejection names it. */
function epPortLabel(where: string, i: number, name: unknown): string {
  return typeof name === 'string' && name !== '' ? `${where}[${i}] ${JSON.stringify(name)}` : `${where}[${i}]`;
}

function parseSlice(id: Named, rej: Rejections): EpGroup {
  const ports = parseEpPorts(id, id.raw.ports, 'ports', rej);
  const eps = id.raw.endpoints;
  if (eps !== undefined && eps !== null && !Array.isArray(eps)) {
    rej.of(id, 'endpoints is not a list');
    return epGroup(ports, 0);
  }
  const list: unknown[] = Array.isArray(eps) ? eps : [];
  const group = epGroup(ports, list.length);
  let count = 0;
  for (let i = 0; i < list.length; i++) {
    const e = list[i];
    if (!isObj(e)) {
      rej.of(id, `endpoints[${i}] is not an object`);
      continue;
    }
    const addrs = e.addresses;
    if (!Array.isArray(addrs) || addrs.length === 0) {
      rej.of(id, `endpoints[${i}]: no addresses`);
      continue;
    }
    // kube-proxy uses only the first address of an endpoint.
    const address: unknown = addrs[0];
    const addressNumber = typeof address === 'string' ? parseIPv4(address) : null;
    if (typeof address !== 'string' || addressNumber === null) {
      rej.of(id, `endpoints[${i}]: invalid IPv4 address ${show(address)}`);
      continue;
    }
    const condsRaw = e.conditions;
    if (condsRaw !== undefined && condsRaw !== null && !isObj(condsRaw)) {
      rej.of(id, `endpoints[${i}] ${address}: conditions is not an object`);
      continue;
    }
    const conds: Obj = isObj(condsRaw) ? condsRaw : NO_CONDITIONS;
    // Read by name, not by a key passed in: a hundred thousand endpoints in a full sync.
    const ready = condition(conds.ready, true);
    const serving = condition(conds.serving, true);
    const terminating = condition(conds.terminating, false);
    if (ready === undefined || serving === undefined || terminating === undefined) {
      rej.of(id, `endpoints[${i}] ${address}: conditions must be booleans`);
      continue;
    }
    const nodeName = typeof e.nodeName === 'string' && e.nodeName !== '' ? e.nodeName : undefined;
    addEndpoint(group, count++, address, addressNumber, rankOf(ready, serving, terminating), nodeName);
  }
  return trimmed(group, count);
}

/** What an endpoint without conditions reads: every condition at its default. */
const NO_CONDITIONS: Obj = Object.freeze({});

function parseEndpoints(id: Named, rej: Rejections): EpGroup[] {
  const subsets = id.raw.subsets;
  if (subsets === undefined || subsets === null) return [];
  if (!Array.isArray(subsets)) {
    rej.of(id, 'subsets is not a list');
    return [];
  }
  const groups: EpGroup[] = [];
  for (let i = 0; i < subsets.length; i++) {
    const s: unknown = subsets[i];
    const at = `subsets[${i}]`;
    if (!isObj(s)) {
      rej.of(id, `${at} is not an object`);
      continue;
    }
    const ports = parseEpPorts(id, s.ports, `${at}.ports`, rej);
    const addrs = s.addresses;
    if (addrs !== undefined && addrs !== null && !Array.isArray(addrs)) {
      rej.of(id, `${at}.addresses is not a list`);
      groups.push(epGroup(ports, 0));
      continue;
    }
    const list: unknown[] = Array.isArray(addrs) ? addrs : [];
    const group = epGroup(ports, list.length);
    let count = 0;
    for (let j = 0; j < list.length; j++) {
      const a = list[j];
      const aat = `${at}.addresses[${j}]`;
      if (!isObj(a)) {
        rej.of(id, `${aat} is not an object`);
        continue;
      }
      const ip = a.ip;
      const addressNumber = typeof ip === 'string' ? parseIPv4(ip) : null;
      if (typeof ip !== 'string' || addressNumber === null) {
        rej.of(id, looksLikeIPv6(ip) ? `${aat} ${show(ip)}: IPv6 not supported yet` : `${aat}: invalid IPv4 address ${show(ip)}`);
        continue;
      }
      const nodeName = typeof a.nodeName === 'string' && a.nodeName !== '' ? a.nodeName : undefined;
      addEndpoint(group, count++, ip, addressNumber, READY, nodeName);
    }
    // notReadyAddresses are never used by kube-proxy.
    groups.push(trimmed(group, count));
  }
  return groups;
}

/**
 * The listings of one port across groups, merged: entry i of each list is
 * one listing, keyed by address and port as one number (32 + 16 bits, which
 * also orders them).
 */
interface Listings {
  keys: number[];
  ports: number[];
  addresses: string[];
  ranks: number[];
  nodeNames: Array<string | undefined>;
}

function listingsOf(groups: EpGroup[], portName: string, protocol: Protocol): Listings {
  const out: Listings = { keys: [], ports: [], addresses: [], ranks: [], nodeNames: [] };
  for (const g of groups) {
    for (const p of g.ports) {
      if (p.name !== portName || p.protocol !== protocol) continue;
      for (let i = 0; i < g.addresses.length; i++) {
        out.keys.push(g.addressNumbers[i]! * 65536 + p.port);
        out.ports.push(p.port);
        out.addresses.push(g.addresses[i]!);
        out.ranks.push(g.ranks[i]!);
        out.nodeNames.push(g.nodeNames[i]);
      }
    }
  }
  return out;
}

/** A service port's endpoints: those that take new flows, and those that only keep theirs (ServicePort.draining). */
interface PortEndpoints {
  backends: Backend[];
  draining: Backend[] | undefined;
}

function endpointsFor(groups: EpGroup[], portName: string, protocol: Protocol, nodeName: string): PortEndpoints {
  // One group listing the port (the common case: one slice) is read in place, its addresses ordering it
  // as the keys would; several are merged (listingsOf).
  let only: EpGroup | undefined;
  let onlyPort = 0;
  let matches = 0;
  for (const g of groups) {
    for (const p of g.ports) {
      if (p.name !== portName || p.protocol !== protocol) continue;
      only = g;
      onlyPort = p.port;
      matches++;
    }
  }
  if (matches === 0) return { backends: [], draining: undefined };
  const merged = matches > 1 ? listingsOf(groups, portName, protocol) : undefined;
  const keys = merged ? merged.keys : only!.addressNumbers;
  const ranks = merged ? merged.ranks : only!.ranks;
  const addresses = merged ? merged.addresses : only!.addresses;
  const nodeNames = merged ? merged.nodeNames : only!.nodeNames;
  const n = keys.length;
  // By key; an endpoint listed twice (two slices) counts in its best state, which sorts first.
  // Keys in strictly ascending order (one slice, as the controller often writes it) need no sorting.
  let order: number[] | undefined;
  for (let i = 1; i < n; i++) {
    if (keys[i - 1]! < keys[i]!) continue;
    order = keys.map((_, j) => j).sort((x, y) => keys[x]! - keys[y]! || ranks[x]! - ranks[y]!);
    break;
  }
  // Ready endpoints if any, else the serving terminating ones, never the others.
  let want = NOT_SERVING;
  for (let i = 0; i < n; i++) if (ranks[i]! < want) want = ranks[i]!;
  if (want === NOT_SERVING) return { backends: [], draining: undefined };
  const backendAt = (at: number, state: EndpointState): Backend => {
    const i = order ? order[at]! : at;
    const address = addresses[i]!;
    const port = merged ? merged.ports[i]! : onlyPort;
    const endpointNode = nodeNames[i];
    // An endpoint without nodeName is never local: nothing says where it runs. One literal per
    // shape: a property added later would give each of the hundred thousand backends a second object.
    return endpointNode === undefined
      ? { address, port, state, local: endpointNode === nodeName }
      : { address, port, state, local: endpointNode === nodeName, nodeName: endpointNode };
  };
  // Counted first: the list is kept with the model, and one pushed to keeps room for 16 more.
  let count = 0;
  let drainingCount = 0;
  for (let at = 0; at < n; at++) {
    if (taken(keys, ranks, order, at, want)) count++;
    else if (want === READY && taken(keys, ranks, order, at, SERVING_TERMINATING)) drainingCount++;
  }
  // Slot numbers stay below 2^16 (contract/tables.ts): past that, draining endpoints lose their stickiness.
  drainingCount = Math.min(drainingCount, Math.max(0, MAX_BACKENDS_PER_SERVICE_PORT - count));
  const backends = sizedArray<Backend>(count);
  const draining = drainingCount > 0 ? sizedArray<Backend>(drainingCount) : undefined;
  count = 0;
  let drained = 0;
  for (let at = 0; at < n; at++) {
    if (taken(keys, ranks, order, at, want)) backends[count++] = backendAt(at, want === READY ? 'ready' : 'serving-terminating');
    else if (drained < drainingCount && taken(keys, ranks, order, at, SERVING_TERMINATING)) draining![drained++] = backendAt(at, 'serving-terminating');
  }
  return { backends, draining };
}

/** Whether listing `at` (in key order) becomes a backend: the first of its key, in the state wanted. */
function taken(keys: number[], ranks: number[], order: number[] | undefined, at: number, want: number): boolean {
  const i = order ? order[at]! : at;
  return (at === 0 || keys[i] !== keys[order ? order[at - 1]! : at - 1]) && ranks[i] === want;
}

/**
 * An array with room for exactly n elements, filled by index: one pushed to
 * keeps room for 16 more. A long one grows as usual: V8 makes `new Array(n)`
 * a dictionary past some thousands of elements.
 */
export function sizedArray<T>(n: number): T[] {
  return n <= 8192 ? new Array<T>(n) : [];
}

export function buildModel(snapshot: ObjectSnapshot, opts: ModelOptions): Model {
  const rej = new Rejections();
  const snap: Obj = isObj(snapshot) ? (snapshot as unknown as Obj) : {};

  // Services.
  const services = collect('Service', snap.services, rej);
  const allServiceKeys = new ServiceIndex(services, itself);
  const ignored: IgnoredService[] = [];
  let live: LiveService[] = [];
  // Indexed loops: the model cache calls this once per Service, a first sync 10,000 times before V8 optimizes it,
  // and unoptimized for...of makes an object per step.
  for (let i = 0; i < services.length; i++) {
    const id = services[i]!;
    const v = checkService(id, rej);
    if (v === null) continue;
    if ('ignored' in v) ignored.push({ namespace: id.namespace, name: id.name, reason: v.ignored });
    else live.push(v.live);
  }

  // ClusterIPs: explicit ones must be unique (two Services at least); missing ones are allocated.
  if (live.length > 1) {
    const owner = new Map<string, string>();
    const kept: LiveService[] = [];
    for (const s of live) {
      if (s.clusterIP !== null) {
        const prev = owner.get(s.clusterIP);
        if (prev !== undefined) {
          rej.of(s.id, `spec.clusterIP ${s.clusterIP} is already used by Service ${prev}`);
          continue;
        }
        owner.set(s.clusterIP, `${s.id.namespace}/${s.id.name}`);
      }
      kept.push(s);
    }
    live = kept;
  }
  const needIP = live.filter((s) => s.clusterIP === null);
  if (needIP.length > 0) {
    if (!opts.allocateClusterIPs) {
      for (const s of needIP) rej.of(s.id, 'spec.clusterIP is missing');
      live = live.filter((s) => s.clusterIP !== null);
    } else {
      const reserved: string[] = [];
      for (const id of services) {
        const spec = id.raw.spec;
        if (isObj(spec) && typeof spec.clusterIP === 'string' && parseIPv4(spec.clusterIP) !== null) reserved.push(spec.clusterIP);
      }
      const { allocated, failed } = allocateClusterIPs(
        opts.serviceClusterIPRange,
        needIP.map((s) => `${s.id.namespace}/${s.id.name}`),
        reserved,
      );
      for (const s of needIP) {
        const key = `${s.id.namespace}/${s.id.name}`;
        const ip = allocated.get(key);
        if (ip !== undefined) s.clusterIP = ip;
        else rej.of(s.id, failed.get(key) ?? 'cannot allocate a ClusterIP');
      }
      live = live.filter((s) => s.clusterIP !== null);
    }
  }
  assignNodePorts(live, opts, rej);
  const liveByKey = new ServiceIndex(live, idOfLive);

  // EndpointSlices, filed with their Service.
  const slices = collect('EndpointSlice', snap.endpointSlices, rej);
  for (let i = 0; i < slices.length; i++) {
    const id = slices[i]!;
    const svcName = labelsOf(id)[SERVICE_NAME_LABEL];
    if (typeof svcName !== 'string' || svcName === '') {
      rej.of(id, `missing label ${SERVICE_NAME_LABEL}`);
      continue;
    }
    const key = `${id.namespace}/${svcName}`;
    if (!allServiceKeys.has(key)) {
      rej.of(id, `no Service ${key}`);
      continue;
    }
    const s = liveByKey.get(key);
    if (!s) continue; // Service ignored or already rejected
    s.hasSlices = true;
    const at = id.raw.addressType;
    if (at === 'IPv6') continue; // not supported yet; silently, like a single-stack kube-proxy
    if (at !== 'IPv4') {
      rej.of(id, at === undefined || at === null ? 'missing addressType' : `unsupported addressType ${show(at)}`);
      continue;
    }
    s.endpointGroups.push(parseSlice(id, rej));
  }

  // Legacy Endpoints, only for Services without any EndpointSlice.
  const endpoints = collect('Endpoints', snap.endpoints, rej);
  for (let i = 0; i < endpoints.length; i++) {
    const id = endpoints[i]!;
    const key = `${id.namespace}/${id.name}`;
    if (!allServiceKeys.has(key)) {
      rej.of(id, `no Service ${key}`);
      continue;
    }
    const s = liveByKey.get(key);
    if (!s || s.hasSlices) continue;
    s.endpointGroups = parseEndpoints(id, rej);
  }

  // Service ports.
  const servicePorts: ServicePort[] = [];
  for (let i = 0; i < live.length; i++) {
    const s = live[i]!;
    const groups = s.endpointGroups;
    const clusterIP = s.clusterIP as string;
    for (let j = 0; j < s.ports.length; j++) {
      const p = s.ports[j]!;
      const frontends: Frontend[] = [{ kind: 'ClusterIP', address: clusterIP, port: p.port }];
      if (typeof p.nodePort === 'number') frontends.push({ kind: 'NodePort', address: NODE_PORT_ADDRESS, port: p.nodePort });
      for (const ip of s.externalIPs) frontends.push({ kind: 'ExternalIP', address: ip, port: p.port });
      for (const ip of s.loadBalancerIPs) frontends.push({ kind: 'LoadBalancer', address: ip, port: p.port });
      const ref: ServicePortRef = { namespace: s.id.namespace, name: s.id.name, portName: p.portName, protocol: p.protocol };
      const { backends, draining } = endpointsFor(groups, p.portName, p.protocol, opts.nodeName);
      // One literal per shape, as for backends: a property added later would give most ports a second object.
      servicePorts.push(draining ? { ref, frontends, backends, draining } : { ref, frontends, backends });
    }
  }
  servicePorts.sort(byServicePort);
  const healthChecks: HealthCheckNodePort[] = [];
  for (let i = 0; i < live.length; i++) {
    const s = live[i]!;
    if (s.healthCheckNodePort === null) continue;
    healthChecks.push({ namespace: s.id.namespace, name: s.id.name, port: s.healthCheckNodePort, localEndpoints: localReadyAddresses(s.endpointGroups, opts.nodeName) });
  }
  healthChecks.sort(byHealthCheck);
  const claimed = claimFrontends(servicePorts, (ns, name) => live.find((s) => s.id.namespace === ns && s.id.name === name)?.id.origin ?? '');
  rej.list.push(...claimed.rejected);
  ignored.sort(byIgnored);
  const rejected = rej.list.sort(byRejection);
  return { servicePorts: claimed.servicePorts, ignored, rejected, healthChecks, nodeAddresses: nodeAddressesOf(opts.nodePortAddresses) };
}

/** The ready endpoints on this node, each address once whatever its ports (kube-proxy's LocalReadyEndpoints). */
function localReadyAddresses(groups: EpGroup[], nodeName: string): number {
  const addresses = new Set<number>();
  for (const g of groups) {
    for (let i = 0; i < g.addresses.length; i++) if (g.ranks[i] === READY && g.nodeNames[i] === nodeName) addresses.add(g.addressNumbers[i]!);
  }
  return addresses.size;
}

/* The model's orders, as functions rather than a closure per call. */

function byServicePort(a: ServicePort, b: ServicePort): number {
  return cmp(a.ref.namespace, b.ref.namespace) || cmp(a.ref.name, b.ref.name) || cmp(a.ref.portName, b.ref.portName) || cmp(a.ref.protocol, b.ref.protocol);
}

export function byHealthCheck(a: HealthCheckNodePort, b: HealthCheckNodePort): number {
  return cmp(a.namespace, b.namespace) || cmp(a.name, b.name);
}

function byIgnored(a: IgnoredService, b: IgnoredService): number {
  return cmp(a.namespace, b.namespace) || cmp(a.name, b.name);
}

function byRejection(a: Rejected, b: Rejected): number {
  return cmp(a.kind, b.kind) || cmp(a.namespace, b.namespace) || cmp(a.name, b.name) || cmp(a.origin, b.origin) || cmp(a.reason, b.reason);
}

const itself = (id: Named): Named => id;
const idOfLive = (s: LiveService): Named => s.id;

/**
 * Services by "namespace/name": a Map, except for the one or two Services
 * of a model cache group, which a scan finds for less than making the Map
 * costs.
 */
class ServiceIndex<T> {
  private readonly keys: string[];
  private readonly index: Map<string, T> | undefined;

  constructor(
    private readonly items: T[],
    idOf: (item: T) => Named,
  ) {
    this.keys = sizedArray(items.length);
    for (let i = 0; i < items.length; i++) {
      const id = idOf(items[i]!);
      this.keys[i] = `${id.namespace}/${id.name}`;
    }
    if (items.length <= 4) return;
    // The keys are unique (collect() dropped repeated namespace/name pairs).
    this.index = new Map();
    for (let i = 0; i < items.length; i++) this.index.set(this.keys[i]!, items[i]!);
  }

  get(key: string): T | undefined {
    if (this.index) return this.index.get(key);
    const at = this.keys.indexOf(key);
    return at < 0 ? undefined : this.items[at];
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }
}

let lastNodeAddresses: { from: string[]; sorted: string[] } | undefined;

/** sortedIPv4s of the options' addresses, sorted once for the model cache's many calls with the same ones. */
function nodeAddressesOf(addresses: string[]): string[] {
  const last = lastNodeAddresses;
  if (last && last.from.length === addresses.length && last.from.every((a, i) => a === addresses[i])) return last.sorted.slice();
  const sorted = sortedIPv4s(addresses);
  lastNodeAddresses = { from: addresses.slice(), sorted };
  return sorted.slice();
}

/**
 * Gives every port still 'missing' a nodePort, or none with a reason. In
 * manifest mode kpx allocates as the API server would: ports of one Service
 * with the same number (its TCP and UDP twins) share one nodePort, an
 * explicit one if either sets it; the rest come from allocateNodePorts,
 * keyed by "namespace/name:port", avoiding every explicit nodePort whatever
 * its protocol (the API server's allocator does not look at protocols).
 */
function assignNodePorts(live: LiveService[], opts: ModelOptions, rej: Rejections): void {
  if (!live.some((s) => s.ports.some((p) => p.nodePort === 'missing'))) return;
  const missing = live.flatMap((s) => s.ports.filter((p) => p.nodePort === 'missing').map((p) => ({ s, p })));
  if (missing.length === 0) return;
  if (!opts.allocateNodePorts) {
    for (const { s, p } of missing) {
      rej.of(s.id, `${portLabel(p.index, p.portName)}: nodePort is missing`);
      p.nodePort = null;
    }
    return;
  }
  const reserved = live.flatMap((s) => s.ports.flatMap((p) => (typeof p.nodePort === 'number' ? [p.nodePort] : [])));
  const keyOf = (s: LiveService, p: LivePort) => `${s.id.namespace}/${s.id.name}:${p.port}`;
  const toAllocate: string[] = [];
  for (const { s, p } of missing) {
    const twin = s.ports.find((q) => q.port === p.port && typeof q.nodePort === 'number');
    if (twin) p.nodePort = twin.nodePort;
    else toAllocate.push(keyOf(s, p));
  }
  const { allocated, failed } = allocateNodePorts(opts.serviceNodePortRange, toAllocate, reserved);
  for (const { s, p } of missing) {
    if (p.nodePort !== 'missing') continue;
    const key = keyOf(s, p);
    const nodePort = allocated.get(key);
    if (nodePort === undefined) rej.of(s.id, `${portLabel(p.index, p.portName)}: ${failed.get(key) ?? 'cannot allocate a nodePort'}`);
    p.nodePort = nodePort ?? null;
  }
}

/** The most endpoints one service port can address: kpx_frontend.backend_count is a __u16. */
export const MAX_BACKENDS_PER_SERVICE_PORT = 0xffff;

/** What a rejection needs to know about the Service a service port belongs to. */
export type ServiceOrigin = (namespace: string, name: string) => string;

/** The key two service ports compete for: one address:port/protocol leads to one service port. */
export function frontendClaimKey(fe: Frontend, protocol: Protocol): string {
  return `${fe.address}:${fe.port}/${protocol}`;
}

/** Why a service port is rejected whole, if it is: more endpoints than the dataplane can address. */
export function unaddressable(sp: ServicePort): string | undefined {
  if (sp.backends.length <= MAX_BACKENDS_PER_SERVICE_PORT) return undefined;
  return `port ${sp.ref.portName || sp.ref.protocol} has ${sp.backends.length} endpoints, more than ${MAX_BACKENDS_PER_SERVICE_PORT}`;
}

/** Why a service port loses a frontend to the Service `owner` (namespace/name) that holds it. */
export function claimedElsewhere(fe: Frontend, protocol: Protocol, owner: string): string {
  const what = fe.kind === 'NodePort' ? `NodePort *:${fe.port}/${protocol}` : `${fe.kind} ${frontendClaimKey(fe, protocol)}`;
  return `${what} is already served by Service ${owner}`;
}

/** No two frontends of one service port (one protocol) with the same address and port. */
function distinctFrontends(frontends: Frontend[]): boolean {
  for (let i = 1; i < frontends.length; i++) {
    for (let j = 0; j < i; j++) if (frontends[i]!.address === frontends[j]!.address && frontends[i]!.port === frontends[j]!.port) return false;
  }
  return true;
}

/**
 * One address:port/protocol can lead to one service port only (two Services
 * sharing an externalIP and port, say). The first in model order keeps it;
 * a later one loses that frontend, with a reason naming the owner. A service
 * port with more endpoints than the dataplane can address is rejected whole.
 * Service ports that keep all their frontends are returned as the same
 * objects, so callers that memoise on identity keep their hits.
 */
export function claimFrontends(sorted: ServicePort[], originOf: ServiceOrigin): { servicePorts: ServicePort[]; rejected: Rejected[] } {
  // One service port whose frontends differ (a model cache group, most often) claims them all.
  const only = sorted.length === 1 ? sorted[0]! : undefined;
  if (only && unaddressable(only) === undefined && distinctFrontends(only.frontends)) return { servicePorts: [only], rejected: [] };
  const owners = new Map<string, string>();
  const kept: ServicePort[] = [];
  const rejected: Rejected[] = [];
  for (const sp of sorted) {
    const { namespace, name } = sp.ref;
    const owner = `${namespace}/${name}`;
    const reject = (reason: string) => rejected.push({ kind: 'Service', namespace, name, origin: originOf(namespace, name), reason });
    const tooMany = unaddressable(sp);
    if (tooMany !== undefined) {
      reject(tooMany);
      continue;
    }
    const frontends = sp.frontends.filter((fe) => {
      const key = frontendClaimKey(fe, sp.ref.protocol);
      const current = owners.get(key);
      if (current === undefined) {
        owners.set(key, owner);
        return true;
      }
      if (current !== owner) reject(claimedElsewhere(fe, sp.ref.protocol, current));
      return false;
    });
    kept.push(frontends.length === sp.frontends.length ? sp : { ...sp, frontends });
  }
  return { servicePorts: kept, rejected };
}
