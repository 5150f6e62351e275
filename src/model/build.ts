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
  type Frontend,
  type IgnoreReason,
  type IgnoredService,
  type Model,
  type ModelOptions,
  type Protocol,
  type Rejected,
  type ServicePort,
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
}

interface EpPort {
  name: string;
  protocol: string;
  port: number;
}

interface Ep {
  address: string;
  /** address as parseIPv4 reads it. */
  addressNumber: number;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  /** Always set, undefined or not: a property added later would give each endpoint a second object. */
  nodeName: string | undefined;
}

/** Endpoints paired with ports: one EndpointSlice, or one subset of an Endpoints object. */
interface EpGroup {
  ports: EpPort[];
  endpoints: Ep[];
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
  for (const raw of list) {
    const id = identify(kind, raw, rej);
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

function labelsOf(id: Named): Obj {
  return isObj(id.meta.labels) ? id.meta.labels : {};
}

type ServiceVerdict = { ignored: IgnoreReason } | { live: LiveService } | null;

/** Frontend keys with address 0.0.0.0 are NodePorts, so no other kind of frontend may use that address. */
const UNSPECIFIED_REASON = `${NODE_PORT_ADDRESS}: the unspecified address cannot be a Service address`;

function portLabel(index: number, name: unknown): string {
  return typeof name === 'string' && name !== '' ? `spec.ports[${index}] ${JSON.stringify(name)}` : `spec.ports[${index}]`;
}

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
  portsRaw.forEach((p: unknown, index: number) => {
    if (!isObj(p)) {
      rej.of(id, `spec.ports[${index}] is not an object`);
      return;
    }
    // Named only in a rejection.
    const label = () => portLabel(index, p.name);
    const nameRaw = p.name;
    if (nameRaw !== undefined && nameRaw !== null && typeof nameRaw !== 'string') {
      rej.of(id, `${label()}: name is not a string: ${show(nameRaw)}`);
      return;
    }
    const portName = typeof nameRaw === 'string' ? nameRaw : '';
    const protoRaw = p.protocol;
    if (protoRaw !== undefined && protoRaw !== null && typeof protoRaw !== 'string') {
      rej.of(id, `${label()}: protocol is not a string: ${show(protoRaw)}`);
      return;
    }
    const proto = typeof protoRaw === 'string' && protoRaw !== '' ? protoRaw : 'TCP';
    if (proto !== 'TCP' && proto !== 'UDP') {
      rej.of(id, `${label()}: protocol ${proto} not supported`);
      return;
    }
    if (!isPort(p.port)) {
      rej.of(id, `${label()}: invalid port ${show(p.port)} (want an integer 1..65535)`);
      return;
    }
    const tp = p.targetPort;
    if (tp !== undefined && tp !== null && !isPort(tp) && !(typeof tp === 'string' && tp !== '')) {
      rej.of(id, `${label()}: invalid targetPort ${show(tp)} (want an integer 1..65535 or a port name)`);
      return;
    }
    const np = p.nodePort;
    // 0 is the API's "not set", as for every int32 field.
    if (np !== undefined && np !== null && np !== 0 && !isPort(np)) {
      rej.of(id, `${label()}: invalid nodePort ${show(np)} (want an integer 1..65535)`);
      return;
    }
    if (multi && portName === '') {
      rej.of(id, `${label()}: a Service with more than one port must name each port`);
      return;
    }
    const firstName = names?.get(portName);
    if (firstName !== undefined) {
      rej.of(id, `${label()}: duplicate port name (also spec.ports[${firstName}])`);
      return;
    }
    const numKey = `${p.port}/${proto}`;
    const firstNum = numbers?.get(numKey);
    if (firstNum !== undefined) {
      rej.of(id, `${label()}: duplicate port ${numKey} (also spec.ports[${firstNum}])`);
      return;
    }
    names?.set(portName, index);
    numbers?.set(numKey, index);
    // A nodePort that is set but cannot be used leaves the port without one, not with an allocated one.
    let nodePort: LivePort['nodePort'] = null;
    if (isPort(np)) {
      const npKey = `${np}/${proto}`;
      const firstNp = nodePorts?.get(npKey);
      if (!hasNodePorts) {
        rej.of(id, `${label()}: nodePort ${np} is set but spec.type is ${type}`);
      } else if (firstNp !== undefined) {
        rej.of(id, `${label()}: duplicate nodePort ${npKey} (also spec.ports[${firstNp}])`);
      } else {
        nodePorts?.set(npKey, index);
        nodePort = np;
      }
    } else if (wantsEveryNodePort) {
      nodePort = 'missing';
    }
    ports.push({ index, portName, protocol: proto, port: p.port, nodePort });
  });

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

  return { live: { id, clusterIP, ports, externalIPs, loadBalancerIPs } };
}

/** Reads a condition; missing/null gives the default, a non-boolean is an error (undefined). */
function condition(conds: Obj, key: string, dflt: boolean): boolean | undefined {
  const v = conds[key];
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
  raw.forEach((p: unknown, i: number) => {
    // Named only in a rejection.
    const at = () => `${where}[${i}]`;
    if (!isObj(p)) {
      rej.of(id, `${at()} is not an object`);
      return;
    }
    const name = p.name;
    if (name !== undefined && name !== null && typeof name !== 'string') {
      rej.of(id, `${at()}: name is not a string: ${show(name)}`);
      return;
    }
    const label = () => (typeof name === 'string' && name !== '' ? `${at()} ${JSON.stringify(name)}` : at());
    const proto = p.protocol;
    if (proto !== undefined && proto !== null && typeof proto !== 'string') {
      rej.of(id, `${label()}: protocol is not a string: ${show(proto)}`);
      return;
    }
    if (!isPort(p.port)) {
      rej.of(id, `${label()}: invalid port ${show(p.port)} (want an integer 1..65535)`);
      return;
    }
    out.push({
      name: typeof name === 'string' ? name : '',
      protocol: typeof proto === 'string' && proto !== '' ? proto : 'TCP',
      port: p.port,
    });
  });
  return out;
}

function parseSlice(id: Named, rej: Rejections): EpGroup {
  const ports = parseEpPorts(id, id.raw.ports, 'ports', rej);
  const endpoints: Ep[] = [];
  const eps = id.raw.endpoints;
  if (eps !== undefined && eps !== null && !Array.isArray(eps)) {
    rej.of(id, 'endpoints is not a list');
  } else if (Array.isArray(eps)) {
    // Named only in a rejection: a full sync reads a hundred thousand valid endpoints.
    const endpointAt = (i: number) => `endpoints[${i}]`;
    eps.forEach((e: unknown, i: number) => {
      if (!isObj(e)) {
        rej.of(id, `${endpointAt(i)} is not an object`);
        return;
      }
      const addrs = e.addresses;
      if (!Array.isArray(addrs) || addrs.length === 0) {
        rej.of(id, `${endpointAt(i)}: no addresses`);
        return;
      }
      // kube-proxy uses only the first address of an endpoint.
      const address = addrs[0];
      const addressNumber = typeof address === 'string' ? parseIPv4(address) : null;
      if (typeof address !== 'string' || addressNumber === null) {
        rej.of(id, `${endpointAt(i)}: invalid IPv4 address ${show(address)}`);
        return;
      }
      const condsRaw = e.conditions;
      if (condsRaw !== undefined && condsRaw !== null && !isObj(condsRaw)) {
        rej.of(id, `${endpointAt(i)} ${address}: conditions is not an object`);
        return;
      }
      const conds: Obj = isObj(condsRaw) ? condsRaw : {};
      const ready = condition(conds, 'ready', true);
      const serving = condition(conds, 'serving', true);
      const terminating = condition(conds, 'terminating', false);
      if (ready === undefined || serving === undefined || terminating === undefined) {
        rej.of(id, `${endpointAt(i)} ${address}: conditions must be booleans`);
        return;
      }
      const nodeName = typeof e.nodeName === 'string' && e.nodeName !== '' ? e.nodeName : undefined;
      endpoints.push({ address, addressNumber, ready, serving, terminating, nodeName });
    });
  }
  return { ports, endpoints };
}

function parseEndpoints(id: Named, rej: Rejections): EpGroup[] {
  const subsets = id.raw.subsets;
  if (subsets === undefined || subsets === null) return [];
  if (!Array.isArray(subsets)) {
    rej.of(id, 'subsets is not a list');
    return [];
  }
  const groups: EpGroup[] = [];
  subsets.forEach((s: unknown, i: number) => {
    const at = `subsets[${i}]`;
    if (!isObj(s)) {
      rej.of(id, `${at} is not an object`);
      return;
    }
    const ports = parseEpPorts(id, s.ports, `${at}.ports`, rej);
    const endpoints: Ep[] = [];
    const addrs = s.addresses;
    if (addrs !== undefined && addrs !== null && !Array.isArray(addrs)) {
      rej.of(id, `${at}.addresses is not a list`);
    } else if (Array.isArray(addrs)) {
      addrs.forEach((a: unknown, j: number) => {
        const aat = `${at}.addresses[${j}]`;
        if (!isObj(a)) {
          rej.of(id, `${aat} is not an object`);
          return;
        }
        const ip = a.ip;
        const addressNumber = typeof ip === 'string' ? parseIPv4(ip) : null;
        if (typeof ip !== 'string' || addressNumber === null) {
          rej.of(id, looksLikeIPv6(ip) ? `${aat} ${show(ip)}: IPv6 not supported yet` : `${aat}: invalid IPv4 address ${show(ip)}`);
          return;
        }
        const nodeName = typeof a.nodeName === 'string' && a.nodeName !== '' ? a.nodeName : undefined;
        endpoints.push({ address: ip, addressNumber, ready: true, serving: true, terminating: false, nodeName });
      });
    }
    // notReadyAddresses are never used by kube-proxy.
    groups.push({ ports, endpoints });
  });
  return groups;
}

function stateRank(ep: Ep): number {
  if (ep.ready) return 0;
  if (ep.serving && ep.terminating) return 1;
  return 2;
}

function backendsFor(groups: EpGroup[], portName: string, protocol: Protocol, nodeName: string): Backend[] {
  // Every listing of the port, keyed by address and port as one number (32 + 16 bits, which also orders them).
  const keys: number[] = [];
  const endpoints: Ep[] = [];
  const ports: number[] = [];
  for (const g of groups) {
    for (const p of g.ports) {
      if (p.name !== portName || p.protocol !== protocol) continue;
      for (const ep of g.endpoints) {
        keys.push(ep.addressNumber * 65536 + p.port);
        endpoints.push(ep);
        ports.push(p.port);
      }
    }
  }
  const n = keys.length;
  // By address then port; an endpoint listed twice (two slices) counts in its best state, which sorts first.
  // Listings in strictly ascending order (one slice, as the controller often writes it) need no sorting.
  let order: number[] | undefined;
  for (let i = 1; i < n; i++) {
    if (keys[i - 1]! < keys[i]!) continue;
    order = keys.map((_, j) => j).sort((x, y) => keys[x]! - keys[y]! || stateRank(endpoints[x]!) - stateRank(endpoints[y]!));
    break;
  }
  const listing = (at: number) => (order ? order[at]! : at);
  // Ready endpoints if any, else the serving terminating ones, never the others.
  let want = 2;
  for (const ep of endpoints) want = Math.min(want, stateRank(ep));
  if (want > 1) return [];
  const state = want === 0 ? 'ready' : 'serving-terminating';
  const taken = (at: number) => {
    const i = listing(at);
    return (at === 0 || keys[i] !== keys[listing(at - 1)]) && stateRank(endpoints[i]!) === want;
  };
  // Counted first: the list is kept with the model, and one pushed to keeps room for 16 more.
  let count = 0;
  for (let at = 0; at < n; at++) if (taken(at)) count++;
  const backends = sizedArray<Backend>(count);
  count = 0;
  for (let at = 0; at < n; at++) {
    if (!taken(at)) continue;
    const i = listing(at);
    const ep = endpoints[i]!;
    // An endpoint without nodeName is never local: nothing says where it runs. One literal per
    // shape: a property added later would give each of the hundred thousand backends a second object.
    backends[count++] =
      ep.nodeName === undefined
        ? { address: ep.address, port: ports[i]!, state, local: ep.nodeName === nodeName }
        : { address: ep.address, port: ports[i]!, state, local: ep.nodeName === nodeName, nodeName: ep.nodeName };
  }
  return backends;
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
  const allServiceKeys = keyLookup(services.map((s) => `${s.namespace}/${s.name}`));
  const ignored: IgnoredService[] = [];
  let live: LiveService[] = [];
  for (const id of services) {
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
  const liveKeys = keyLookup(live.map((s) => `${s.id.namespace}/${s.id.name}`));

  // EndpointSlices, grouped by Service.
  const groupsBySvc = new Map<string, EpGroup[]>();
  const hasSlices = new Set<string>();
  for (const id of collect('EndpointSlice', snap.endpointSlices, rej)) {
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
    hasSlices.add(key);
    if (!liveKeys.has(key)) continue; // Service ignored or already rejected
    const at = id.raw.addressType;
    if (at === 'IPv6') continue; // not supported yet; silently, like a single-stack kube-proxy
    if (at !== 'IPv4') {
      rej.of(id, at === undefined || at === null ? 'missing addressType' : `unsupported addressType ${show(at)}`);
      continue;
    }
    const list = groupsBySvc.get(key) ?? [];
    list.push(parseSlice(id, rej));
    groupsBySvc.set(key, list);
  }

  // Legacy Endpoints, only for Services without any EndpointSlice.
  for (const id of collect('Endpoints', snap.endpoints, rej)) {
    const key = `${id.namespace}/${id.name}`;
    if (!allServiceKeys.has(key)) {
      rej.of(id, `no Service ${key}`);
      continue;
    }
    if (hasSlices.has(key) || !liveKeys.has(key)) continue;
    groupsBySvc.set(key, parseEndpoints(id, rej));
  }

  // Service ports.
  const servicePorts: ServicePort[] = [];
  for (const s of live) {
    const key = `${s.id.namespace}/${s.id.name}`;
    const groups = groupsBySvc.get(key) ?? [];
    const clusterIP = s.clusterIP as string;
    for (const p of s.ports) {
      const frontends: Frontend[] = [{ kind: 'ClusterIP', address: clusterIP, port: p.port }];
      if (typeof p.nodePort === 'number') frontends.push({ kind: 'NodePort', address: NODE_PORT_ADDRESS, port: p.nodePort });
      for (const ip of s.externalIPs) frontends.push({ kind: 'ExternalIP', address: ip, port: p.port });
      for (const ip of s.loadBalancerIPs) frontends.push({ kind: 'LoadBalancer', address: ip, port: p.port });
      servicePorts.push({
        ref: { namespace: s.id.namespace, name: s.id.name, portName: p.portName, protocol: p.protocol },
        frontends,
        backends: backendsFor(groups, p.portName, p.protocol, opts.nodeName),
      });
    }
  }
  servicePorts.sort(
    (a, b) =>
      cmp(a.ref.namespace, b.ref.namespace) ||
      cmp(a.ref.name, b.ref.name) ||
      cmp(a.ref.portName, b.ref.portName) ||
      cmp(a.ref.protocol, b.ref.protocol),
  );
  const claimed = claimFrontends(servicePorts, (ns, name) => live.find((s) => s.id.namespace === ns && s.id.name === name)?.id.origin ?? '');
  rej.list.push(...claimed.rejected);
  ignored.sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name));
  const rejected = rej.list.sort(
    (a, b) =>
      cmp(a.kind, b.kind) ||
      cmp(a.namespace, b.namespace) ||
      cmp(a.name, b.name) ||
      cmp(a.origin, b.origin) ||
      cmp(a.reason, b.reason),
  );
  return { servicePorts: claimed.servicePorts, ignored, rejected, nodeAddresses: nodeAddressesOf(opts.nodePortAddresses) };
}

/**
 * Membership of a list of keys: a Set, except for the one or two keys of a
 * model cache group, which a scan finds for less than making the Set costs.
 */
function keyLookup(keys: string[]): { has(key: string): boolean } {
  return keys.length > 4 ? new Set(keys) : { has: (key) => keys.includes(key) };
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
