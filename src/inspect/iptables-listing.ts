/**
 * Turns `iptables-save` output back into Services, for `kpx list` in
 * iptables mode: what the kernel holds, read through kube-proxy's structure
 * (KUBE-SERVICES / KUBE-NODEPORTS → KUBE-SVC-* or KUBE-EXT-* → KUBE-SEP-* →
 * DNAT). Reads kpx's rules and kube-proxy's alike, in the order and form
 * iptables-save prints them or as they were restored. Pure.
 *
 * The rules do not say whether an endpoint is local or terminating: every
 * backend is listed as ready and not local. A Service without endpoints has
 * no nat rule at all, only REJECT rules in the filter table, so it is listed
 * only when the text holds the filter table too (`iptables-save` without -t).
 */
import { KUBE_EXTERNAL_SERVICES, KUBE_NODEPORTS, KUBE_SERVICES } from '../datapath/iptables-rules.js';
import { NODE_PORT_ADDRESS } from '../model/types.js';
import { sortedIPv4s } from '../model/cluster-ip.js';
import { sortListed, type ListedServicePort } from './listing.js';

/**
 * The kind of an address that refuses connections for a Service without
 * endpoints from KUBE-EXTERNAL-SERVICES: kube-proxy's comment there is the
 * same for an externalIP and a load-balancer IP.
 */
export const EXTERNAL_OR_LOAD_BALANCER = 'ExternalIP|LoadBalancer';

const FRONTEND_KIND_ORDER = ['ClusterIP', 'NodePort', 'ExternalIP', 'LoadBalancer', EXTERNAL_OR_LOAD_BALANCER];

/** The KUBE-SERVICES comment suffix of each frontend kind (upstream's syncProxyRules). */
const KIND_BY_SUFFIX: ReadonlyArray<readonly [string, string]> = [
  [' cluster IP', 'ClusterIP'],
  [' external IP', 'ExternalIP'],
  [' loadbalancer IP', 'LoadBalancer'],
];
const NO_ENDPOINTS_SUFFIX = ' has no endpoints';

interface SavedRule {
  table: string;
  chain: string;
  /** Each option ("-d", "--dport", "-j", ...) with its last value, '' for a flag. A "!" before an option is dropped. */
  options: Map<string, string>;
}

/** Splits a line into arguments as iptables-restore does: double quotes group, a backslash escapes the next character. */
function splitArguments(line: string): string[] {
  const args: string[] = [];
  let current = '';
  let inArgument = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && i + 1 < line.length) {
      current += line[++i];
      inArgument = true;
    } else if (c === '"') {
      quoted = !quoted;
      inArgument = true;
    } else if (/\s/.test(c) && !quoted) {
      if (inArgument) args.push(current);
      current = '';
      inArgument = false;
    } else {
      current += c;
      inArgument = true;
    }
  }
  if (inArgument) args.push(current);
  return args;
}

function parseRule(table: string, line: string): SavedRule | undefined {
  const args = splitArguments(line);
  if (args[0] !== '-A' || args[1] === undefined) return undefined;
  const options = new Map<string, string>();
  for (let i = 2; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith('-')) continue;
    const value = args[i + 1];
    const hasValue = value !== undefined && value !== '!' && !value.startsWith('-');
    options.set(arg, hasValue ? value : '');
    if (hasValue) i++;
  }
  return { table, chain: args[1], options };
}

function parseSave(save: string): SavedRule[] {
  const rules: SavedRule[] = [];
  let table = '';
  for (const raw of save.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) table = line.slice(1);
    else if (line.startsWith('-A ')) {
      const rule = parseRule(table, line);
      if (rule) rules.push(rule);
    }
  }
  return rules;
}

/** "10.0.0.1/32" (as iptables-save prints a host) or "10.0.0.1" (as restored) → "10.0.0.1"; any other prefix length is not one address. */
function hostAddress(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const [address, length] = value.split('/');
  return length === undefined || length === '32' ? address : undefined;
}

/** "ns/name:port" or "ns/name" (proxy.ServicePortName.String()); names and port names cannot hold '/' or ':'. */
function parseServicePortName(text: string): { namespace: string; name: string; portName: string } | undefined {
  const slash = text.indexOf('/');
  if (slash <= 0) return undefined;
  const rest = text.slice(slash + 1);
  const colon = rest.indexOf(':');
  const name = colon < 0 ? rest : rest.slice(0, colon);
  if (name === '') return undefined;
  return { namespace: text.slice(0, slash), name, portName: colon < 0 ? '' : rest.slice(colon + 1) };
}

/** Collects service ports by name and protocol, whichever rule names them first. */
class Listing {
  private readonly byKey = new Map<string, ListedServicePort>();

  entry(servicePortName: string, protocol: string): ListedServicePort | undefined {
    const ref = parseServicePortName(servicePortName);
    if (!ref) return undefined;
    const key = `${servicePortName} ${protocol}`;
    let listed = this.byKey.get(key);
    if (!listed) {
      listed = { ...ref, protocol, frontends: [], backends: [] };
      this.byKey.set(key, listed);
    }
    return listed;
  }

  addFrontend(listed: ListedServicePort, kind: string, address: string, port: number): void {
    if (!listed.frontends.some((f) => f.kind === kind && f.address === address && f.port === port)) {
      listed.frontends.push({ kind, address, port });
    }
  }

  sorted(): ListedServicePort[] {
    return sortListed([...this.byKey.values()], FRONTEND_KIND_ORDER);
  }

}

/** What a rule captures: its service port (from the comment), protocol and destination port. */
function captured(rule: SavedRule, suffix: string): { name: string; protocol: string; port: number } | undefined {
  const text = rule.options.get('--comment');
  const protocol = rule.options.get('-p');
  const port = Number(rule.options.get('--dport'));
  if (text === undefined || !text.endsWith(suffix) || !protocol || !Number.isInteger(port) || port <= 0) return undefined;
  return { name: text.slice(0, text.length - suffix.length), protocol: protocol.toUpperCase(), port };
}

/** The endpoints of a KUBE-SVC-* chain, in rule order: each KUBE-SEP-* it jumps to, and that chain's DNAT destination. */
function endpointsOf(serviceChain: string, byChain: Map<string, SavedRule[]>): ListedServicePort['backends'] {
  const endpointChains = [...new Set((byChain.get(serviceChain) ?? []).map((r) => r.options.get('-j') ?? '').filter((j) => j.startsWith('KUBE-SEP-')))];
  const backends: ListedServicePort['backends'] = [];
  for (const chain of endpointChains) {
    const destination = byChain.get(chain)?.find((r) => r.options.get('-j') === 'DNAT')?.options.get('--to-destination');
    const colon = destination?.lastIndexOf(':') ?? -1;
    if (destination === undefined || colon < 0) continue;
    backends.push({ address: destination.slice(0, colon), port: Number(destination.slice(colon + 1)), state: 'ready', local: false });
  }
  return backends;
}

/** The KUBE-SVC-* chain of the service port a KUBE-SVC-/KUBE-EXT-/KUBE-FW-/KUBE-SVL- chain belongs to: all four end in the same hash. */
function serviceChainOf(target: string): string | undefined {
  const match = /^KUBE-(?:SVC|EXT|FW|SVL)-(.+)$/.exec(target);
  return match ? `KUBE-SVC-${match[1]}` : undefined;
}

/** A KUBE-SERVICES rule's frontend: its destination and the kind its comment names. */
function servicesFrontend(rule: SavedRule): { kind: string; suffix: string; address: string } | undefined {
  const address = hostAddress(rule.options.get('-d'));
  const kind = KIND_BY_SUFFIX.find(([suffix]) => rule.options.get('--comment')?.endsWith(suffix));
  return address && kind ? { kind: kind[1], suffix: kind[0], address } : undefined;
}

/** The service ports programmed in `save` (iptables-save output with the nat table, and the filter table for Services without endpoints). */
export function listFromIptablesSave(save: string): ListedServicePort[] {
  const rules = parseSave(save);
  const natChains = new Map<string, SavedRule[]>();
  for (const r of rules) if (r.table === 'nat') natChains.set(r.chain, [...(natChains.get(r.chain) ?? []), r]);

  const listing = new Listing();
  const serviceChains = new Map<ListedServicePort, string>();
  const frontendRules = [
    ...(natChains.get(KUBE_SERVICES) ?? []).flatMap((rule) => {
      const frontend = servicesFrontend(rule);
      return frontend ? [{ rule, ...frontend }] : [];
    }),
    // kube-proxy's extra 127.0.0.0/8 rule per NodePort (counted with nfacct) lists as the same frontend.
    ...(natChains.get(KUBE_NODEPORTS) ?? []).map((rule) => ({ rule, kind: 'NodePort', suffix: '', address: NODE_PORT_ADDRESS })),
  ];
  for (const { rule, kind, suffix, address } of frontendRules) {
    const serviceChain = serviceChainOf(rule.options.get('-j') ?? '');
    const what = captured(rule, suffix);
    const listed = what && serviceChain ? listing.entry(what.name, what.protocol) : undefined;
    if (!what || !serviceChain || !listed) continue;
    listing.addFrontend(listed, kind, address, what.port);
    serviceChains.set(listed, serviceChain);
  }
  for (const [listed, chain] of serviceChains) listed.backends = endpointsOf(chain, natChains);

  for (const rule of rules) {
    if (rule.table !== 'filter' || rule.options.get('-j') !== 'REJECT') continue;
    const what = captured(rule, NO_ENDPOINTS_SUFFIX);
    const listed = what ? listing.entry(what.name, what.protocol) : undefined;
    if (!what || !listed) continue;
    const address = hostAddress(rule.options.get('-d'));
    if (rule.chain === KUBE_SERVICES && address) listing.addFrontend(listed, 'ClusterIP', address, what.port);
    else if (rule.chain === KUBE_EXTERNAL_SERVICES && rule.options.get('--dst-type') === 'LOCAL' && !rule.options.has('-d')) {
      listing.addFrontend(listed, 'NodePort', NODE_PORT_ADDRESS, what.port);
    } else if (rule.chain === KUBE_EXTERNAL_SERVICES && address) listing.addFrontend(listed, EXTERNAL_OR_LOAD_BALANCER, address, what.port);
  }
  return listing.sorted();
}

/** The node addresses NodePorts answer on: the -d of each KUBE-SERVICES jump to KUBE-NODEPORTS, sorted numerically. */
export function nodeAddressesFromIptablesSave(save: string): string[] {
  const jumps = parseSave(save).filter((r) => r.table === 'nat' && r.chain === KUBE_SERVICES && r.options.get('-j') === KUBE_NODEPORTS);
  return sortedIPv4s(jumps.flatMap((r) => hostAddress(r.options.get('-d')) ?? []));
}
