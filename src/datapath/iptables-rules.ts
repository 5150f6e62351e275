/**
 * The model rendered as kube-proxy's iptables proxier renders Services
 * (pkg/proxy/iptables/proxier.go, syncProxyRules), so `iptables-save` on a kpx
 * node reads like one on a kube-proxy node: the same chains, names, comments
 * and rule order. Pure: the iptables datapath applies what this returns.
 *
 * What kpx's model has no field for is not rendered: session affinity
 * (`-m recent`), traffic policies (KUBE-SVL-*), loadBalancerSourceRanges
 * (KUBE-FW-*), healthCheckNodePorts, and the masquerade of off-cluster
 * traffic to ClusterIPs (needs --cluster-cidr).
 */
import { createHash } from 'node:crypto';
import { type Backend, type Frontend, type Model, type ServicePort, type ServicePortRef } from '../model/types.js';

export type IptablesTable = 'nat' | 'filter';

/** Each kpx-owned chain of a table, in the order kube-proxy writes them, with its rules as iptables-restore lines ("-A CHAIN ..."). */
export interface RenderedRules {
  nat: ReadonlyMap<string, readonly string[]>;
  filter: ReadonlyMap<string, readonly string[]>;
}

/** A rule in a built-in chain, ensured with `iptables -t TABLE -C/-I CHAIN ...args`; its target chain must exist first. */
export interface BuiltinJump {
  table: IptablesTable;
  chain: string;
  args: string[];
}

export const KUBE_SERVICES = 'KUBE-SERVICES';
export const KUBE_EXTERNAL_SERVICES = 'KUBE-EXTERNAL-SERVICES';
export const KUBE_NODEPORTS = 'KUBE-NODEPORTS';
const KUBE_POSTROUTING = 'KUBE-POSTROUTING';
const KUBE_MARK_MASQ = 'KUBE-MARK-MASQ';
const KUBE_FORWARD = 'KUBE-FORWARD';
const KUBE_PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL';
/** kubelet's chain; kube-proxy fills it only to guard 127.0.0.1 NodePorts. */
const KUBE_FIREWALL = 'KUBE-FIREWALL';

/** Per-service-port chain prefixes (upstream's isServiceChainName): chains with these names come and go with Services. */
/** KUBE-XLB- is KUBE-SVL-'s name before kube-proxy 1.24: a node taken over from one may still hold such chains. */
const SERVICE_CHAIN_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-SEP-', 'KUBE-FW-', 'KUBE-EXT-', 'KUBE-XLB-'] as const;

/** kube-proxy's default --iptables-masquerade-bit 14, printed with Go's %#08x. */
const MASQUERADE_MARK = '0x4000';

/** Above this many endpoints in total kube-proxy drops the per-endpoint comments ("large cluster mode", upstream's largeClusterEndpointsThreshold). */
const LARGE_CLUSTER_ENDPOINTS = 1000;

const NODEPORTS_COMMENT = 'kubernetes service nodeports; NOTE: this must be the last rule in this chain';

const SERVICE_PORTALS = 'kubernetes service portals';
const EXTERNAL_PORTALS = 'kubernetes externally-visible service portals';
const LB_FIREWALL = 'kubernetes load balancer firewall';
const NEW_CONNECTIONS = ['-m', 'conntrack', '--ctstate', 'NEW'];

function jump(table: IptablesTable, chain: string, target: string, comment: string, extra: string[] = []): BuiltinJump {
  const commentArgs = comment ? ['-m', 'comment', '--comment', comment] : [];
  return { table, chain, args: [...extra, ...commentArgs, '-j', target] };
}

/**
 * upstream's iptablesJumpChains then iptablesKubeletJumpChains, in that order
 * and with the same arguments, so `-C` finds kube-proxy's own rules when kpx
 * takes over a node. Comments are plain arguments here (no shell, no quotes).
 */
export const BUILTIN_JUMPS: readonly BuiltinJump[] = [
  jump('filter', 'INPUT', KUBE_EXTERNAL_SERVICES, EXTERNAL_PORTALS, NEW_CONNECTIONS),
  jump('filter', 'FORWARD', KUBE_EXTERNAL_SERVICES, EXTERNAL_PORTALS, NEW_CONNECTIONS),
  jump('filter', 'INPUT', KUBE_NODEPORTS, 'kubernetes health check service ports'),
  jump('filter', 'FORWARD', KUBE_SERVICES, SERVICE_PORTALS, NEW_CONNECTIONS),
  jump('filter', 'OUTPUT', KUBE_SERVICES, SERVICE_PORTALS, NEW_CONNECTIONS),
  jump('filter', 'FORWARD', KUBE_FORWARD, 'kubernetes forwarding rules'),
  jump('filter', 'INPUT', KUBE_PROXY_FIREWALL, LB_FIREWALL, NEW_CONNECTIONS),
  jump('filter', 'OUTPUT', KUBE_PROXY_FIREWALL, LB_FIREWALL, NEW_CONNECTIONS),
  jump('filter', 'FORWARD', KUBE_PROXY_FIREWALL, LB_FIREWALL, NEW_CONNECTIONS),
  jump('nat', 'OUTPUT', KUBE_SERVICES, SERVICE_PORTALS),
  jump('nat', 'PREROUTING', KUBE_SERVICES, SERVICE_PORTALS),
  jump('nat', 'POSTROUTING', KUBE_POSTROUTING, 'kubernetes postrouting rules'),
  jump('filter', 'INPUT', KUBE_FIREWALL, ''),
  jump('filter', 'OUTPUT', KUBE_FIREWALL, ''),
];

/** proxy.ServicePortName.String(): "ns/name:port", or "ns/name" for an unnamed port. */
export function servicePortName(ref: ServicePortRef): string {
  return `${ref.namespace}/${ref.name}${ref.portName ? `:${ref.portName}` : ''}`;
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** The first 16 characters of base32.StdEncoding of sha256(text): 80 bits, the first 10 bytes of the digest. */
function chainHash(text: string): string {
  const digest = createHash('sha256').update(text).digest().subarray(0, 10);
  let out = '';
  let buffered = 0;
  let bits = 0;
  for (const byte of digest) {
    buffered = ((buffered << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += BASE32[(buffered >>> bits) & 31];
    }
  }
  return out;
}

/** upstream's portProtoHash: the service port name followed by the lower-case protocol. */
function portProtoHash(ref: ServicePortRef): string {
  return chainHash(servicePortName(ref) + ref.protocol.toLowerCase());
}

/** KUBE-SVC-*: the service port's endpoints, for Cluster traffic policy. */
export function serviceChainName(ref: ServicePortRef): string {
  return `KUBE-SVC-${portProtoHash(ref)}`;
}

/** KUBE-EXT-*: where NodePort, externalIP and load-balancer traffic goes before KUBE-SVC-*. */
export function externalChainName(ref: ServicePortRef): string {
  return `KUBE-EXT-${portProtoHash(ref)}`;
}

/** KUBE-SEP-*: one endpoint of one service port; `endpoint` is "ip:port" (upstream's BaseEndpointInfo.String()). */
export function endpointChainName(ref: ServicePortRef, endpoint: string): string {
  return `KUBE-SEP-${chainHash(servicePortName(ref) + ref.protocol.toLowerCase() + endpoint)}`;
}

/**
 * Go's fmt.Sprintf("%0.10f", 1/n) (upstream's computeProbability). toFixed
 * rounds an exact half up where Go rounds it to even; among 1/n only 1/2048
 * is such a half.
 */
export function randomProbability(n: number): string {
  const value = 1 / n;
  const rounded = value.toFixed(10);
  const exact = value.toFixed(40);
  const cut = exact.indexOf('.') + 11;
  if (!/^50*$/.test(exact.slice(cut))) return rounded;
  const truncated = exact.slice(0, cut);
  return Number(truncated.at(-1)) % 2 === 0 ? truncated : rounded;
}

/** An argument as iptables-save prints it (libxtables' xtables_save_string): bare when only [A-Za-z0-9_-], else double-quoted with " \ ' escaped. */
function saved(value: string): string {
  return /^[A-Za-z0-9_-]+$/.test(value) ? value : `"${value.replace(/["\\']/g, '\\$&')}"`;
}

function comment(text: string): string[] {
  return ['-m', 'comment', '--comment', saved(text)];
}

function rule(chain: string, ...args: string[]): string {
  return ['-A', chain, ...args].join(' ');
}

function protocolMatch(ref: ServicePortRef): string[] {
  const protocol = ref.protocol.toLowerCase();
  return ['-m', protocol, '-p', protocol];
}

function frontendsOf(sp: ServicePort, kind: Frontend['kind']): Frontend[] {
  return sp.frontends.filter((f) => f.kind === kind);
}

function endpointString(b: Backend): string {
  return `${b.address}:${b.port}`;
}

/** One table under construction: chains in first-use order. */
class TableBuilder {
  readonly chains = new Map<string, string[]>();
  constructor(topLevel: readonly string[]) {
    for (const chain of topLevel) this.chains.set(chain, []);
  }
  add(chain: string, ...args: string[]): void {
    const rules = this.chains.get(chain);
    if (rules) rules.push(rule(chain, ...args));
    else this.chains.set(chain, [rule(chain, ...args)]);
  }
}

/** A rule of a top-level chain that jumps to a per-service chain, with that chain's name. */
type Jump = [target: string, rule: string];

/** What one service port adds: its rules in the top-level chains and its own chains, in first-use order. */
interface ServicePortRules {
  natServices: Jump[];
  natNodePorts: Jump[];
  filterServices: string[];
  filterExternal: string[];
  chains: Array<[string, string[]]>;
}

/**
 * A service port's rules depend on it and on whether the whole model is
 * past LARGE_CLUSTER_ENDPOINTS. The model cache hands back the same object
 * for an unchanged service port, so a sync of the agent's watch renders
 * only what changed (a manifest folder, rebuilt whole, renders it all), and
 * an unchanged chain is the same array as in the previous rendering.
 */
const renderedServicePorts = new WeakMap<ServicePort, { large: boolean; rules: ServicePortRules }>();

function renderServicePort(sp: ServicePort, large: boolean): ServicePortRules {
  const known = renderedServicePorts.get(sp);
  if (known && known.large === large) return known.rules;
  const rules = buildServicePortRules(sp, large);
  renderedServicePorts.set(sp, { large, rules });
  return rules;
}

function buildServicePortRules(sp: ServicePort, large: boolean): ServicePortRules {
  const rules: ServicePortRules = { natServices: [], natNodePorts: [], filterServices: [], filterExternal: [], chains: [] };
  const endpointComment = large ? () => [] : comment;
  const name = servicePortName(sp.ref);
  const proto = protocolMatch(sp.ref);
  const svcChain = serviceChainName(sp.ref);
  const extChain = externalChainName(sp.ref);
  const clusterIPs = frontendsOf(sp, 'ClusterIP');
  const externalIPs = frontendsOf(sp, 'ExternalIP');
  const loadBalancerIPs = frontendsOf(sp, 'LoadBalancer');
  const nodePorts = frontendsOf(sp, 'NodePort');

  if (sp.backends.length === 0) {
    // No nat chain at all; the filter table refuses new connections with ICMP port unreachable (REJECT's default).
    const noEndpoints = comment(`${name} has no endpoints`);
    for (const f of clusterIPs) rules.filterServices.push(rule(KUBE_SERVICES, ...noEndpoints, ...proto, '-d', f.address, '--dport', String(f.port), '-j', 'REJECT'));
    for (const f of [...externalIPs, ...loadBalancerIPs]) {
      rules.filterExternal.push(rule(KUBE_EXTERNAL_SERVICES, ...noEndpoints, ...proto, '-d', f.address, '--dport', String(f.port), '-j', 'REJECT'));
    }
    // upstream matches every local address here, whatever --nodeport-addresses says.
    for (const f of nodePorts) {
      rules.filterExternal.push(
        rule(KUBE_EXTERNAL_SERVICES, ...noEndpoints, '-m', 'addrtype', '--dst-type', 'LOCAL', ...proto, '--dport', String(f.port), '-j', 'REJECT'),
      );
    }
    return rules;
  }

  for (const f of clusterIPs) {
    rules.natServices.push([svcChain, rule(KUBE_SERVICES, ...comment(`${name} cluster IP`), ...proto, '-d', f.address, '--dport', String(f.port), '-j', svcChain)]);
  }
  for (const f of externalIPs) {
    rules.natServices.push([extChain, rule(KUBE_SERVICES, ...comment(`${name} external IP`), ...proto, '-d', f.address, '--dport', String(f.port), '-j', extChain)]);
  }
  for (const f of loadBalancerIPs) {
    rules.natServices.push([extChain, rule(KUBE_SERVICES, ...comment(`${name} loadbalancer IP`), ...proto, '-d', f.address, '--dport', String(f.port), '-j', extChain)]);
  }
  for (const f of nodePorts) rules.natNodePorts.push([extChain, rule(KUBE_NODEPORTS, ...comment(name), ...proto, '--dport', String(f.port), '-j', extChain)]);

  if (externalIPs.length + loadBalancerIPs.length + nodePorts.length > 0) {
    // External traffic may be sent to another node: masquerade so the reply comes back through this one (Cluster traffic policy).
    rules.chains.push([
      extChain,
      [rule(extChain, ...comment(`masquerade traffic for ${name} external destinations`), '-j', KUBE_MARK_MASQ), rule(extChain, '-j', svcChain)],
    ]);
  }

  // No "cluster IP ... ! -s <cluster-cidr> -j KUBE-MARK-MASQ" rule first: kube-proxy writes it only with a
  // local-traffic detector (--cluster-cidr) or --masquerade-all, and kpx has neither yet.
  const n = sp.backends.length;
  rules.chains.push([
    svcChain,
    sp.backends.map((b, i) => {
      const sepChain = endpointChainName(sp.ref, endpointString(b));
      // Each rule but the last takes 1/(remaining) of what reaches it, so every endpoint gets 1/n overall.
      const statistic = i < n - 1 ? ['-m', 'statistic', '--mode', 'random', '--probability', randomProbability(n - i)] : [];
      return rule(svcChain, ...endpointComment(`${name} -> ${endpointString(b)}`), ...statistic, '-j', sepChain);
    }),
  ]);
  for (const b of sp.backends) {
    const sepChain = endpointChainName(sp.ref, endpointString(b));
    rules.chains.push([
      sepChain,
      [
        // Hairpin: a pod that reaches itself through the Service must see the reply come from the Service, not from itself.
        rule(sepChain, ...endpointComment(name), '-s', b.address, '-j', KUBE_MARK_MASQ),
        rule(sepChain, ...endpointComment(name), ...proto, '-j', 'DNAT', '--to-destination', endpointString(b)),
      ],
    ]);
  }
  return rules;
}

/** The order of the jumps in KUBE-SERVICES and KUBE-NODEPORTS: by target chain name, descending (see renderRules). */
export function jumpOrder(targetA: string, targetB: string): number {
  return targetA < targetB ? 1 : targetA > targetB ? -1 : 0;
}

/** kube-proxy's "large cluster mode": no per-endpoint comments, no periodic full syncs. */
export function isLargeCluster(model: Model): boolean {
  return model.servicePorts.reduce((n, sp) => n + sp.backends.length, 0) > LARGE_CLUSTER_ENDPOINTS;
}

/** Everything kpx programs in nat and filter for this model. Same model, same output. */
export function renderRules(model: Model): RenderedRules {
  // upstream's chain-line order for the chains written on every sync.
  const filter = new TableBuilder([KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL]);
  const nat = new TableBuilder([KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ]);

  nat.add(KUBE_POSTROUTING, '-m', 'mark', '!', '--mark', `${MASQUERADE_MARK}/${MASQUERADE_MARK}`, '-j', 'RETURN');
  // Clear the mark so a packet that goes through the stack again is not masqueraded twice.
  nat.add(KUBE_POSTROUTING, '-j', 'MARK', '--xor-mark', MASQUERADE_MARK);
  nat.add(KUBE_POSTROUTING, ...comment('kubernetes service traffic requiring SNAT'), '-j', 'MASQUERADE', '--random-fully');
  nat.add(KUBE_MARK_MASQ, '-j', 'MARK', '--or-mark', MASQUERADE_MARK);

  const servesLoopback = model.nodeAddresses.some((a) => a.startsWith('127.'));
  if (servesLoopback) {
    // NodePorts on 127.0.0.1 need route_localnet=1, which lets other hosts reach 127/8 (issue 90259); kube-proxy closes that hole with kubelet's rule.
    filter.add(
      KUBE_FIREWALL,
      ...comment('block incoming localnet connections'),
      ...['-d', '127.0.0.0/8', '!', '-s', '127.0.0.0/8', '-m', 'conntrack', '!', '--ctstate', 'RELATED,ESTABLISHED,DNAT', '-j', 'DROP'],
    );
  }

  const large = isLargeCluster(model);
  const natServices: Jump[] = [];
  const natNodePorts: Jump[] = [];
  const filterServices = filter.chains.get(KUBE_SERVICES)!;
  const filterExternal = filter.chains.get(KUBE_EXTERNAL_SERVICES)!;
  for (const sp of model.servicePorts) {
    const rules = renderServicePort(sp, large);
    for (const j of rules.natServices) natServices.push(j);
    for (const j of rules.natNodePorts) natNodePorts.push(j);
    for (const r of rules.filterServices) filterServices.push(r);
    for (const r of rules.filterExternal) filterExternal.push(r);
    for (const [chain, chainRules] of rules.chains) nat.chains.set(chain, chainRules);
  }
  // Each frontend has one rule and they match disjoint packets, so their order does not matter (kube-proxy's is its
  // map's iteration order). By target chain, descending: iptables-nft 1.8.9 inserts each rule's chain names into a
  // sorted list walked from the smallest, so a rewrite of KUBE-SERVICES at 10,000 Services took 0.5 s, not 1.7 s.
  for (const [top, jumps] of [[KUBE_SERVICES, natServices], [KUBE_NODEPORTS, natNodePorts]] as const) {
    const rules = nat.chains.get(top)!;
    for (const [, r] of jumps.sort((a, b) => jumpOrder(a[0], b[0]))) rules.push(r);
  }

  // Whatever the host's INPUT policy, a load balancer must reach its health check node port: one rule per service port,
  // as kube-proxy writes them.
  if (model.healthChecks.length > 0) {
    const healthCheckPorts = new Map(model.healthChecks.map((hc) => [`${hc.namespace}/${hc.name}`, hc.port]));
    for (const sp of model.servicePorts) {
      const port = healthCheckPorts.get(`${sp.ref.namespace}/${sp.ref.name}`);
      if (port === undefined) continue;
      filter.add(KUBE_NODEPORTS, ...comment(`${servicePortName(sp.ref)} health check node port`), '-m', 'tcp', '-p', 'tcp', '--dport', String(port), '-j', 'ACCEPT');
    }
  }

  // Last in KUBE-SERVICES, so a Service address on a node address wins over a NodePort. One jump per address is
  // upstream's form when --nodeport-addresses narrows the addresses; kpx always knows them (model.nodeAddresses).
  for (const address of model.nodeAddresses) {
    nat.add(KUBE_SERVICES, ...comment(NODEPORTS_COMMENT), '-d', address, '-j', KUBE_NODEPORTS);
  }

  // An out-of-window packet is INVALID and would reach the pod un-NATed (issue 74839); kube-proxy leaves the rule out
  // when nf_conntrack_tcp_be_liberal is set, a sysctl this pure renderer does not read.
  filter.add(KUBE_FORWARD, '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'DROP');
  // Marked traffic is Service traffic: forward it even when the FORWARD policy is DROP.
  filter.add(KUBE_FORWARD, ...comment('kubernetes forwarding rules'), '-m', 'mark', '--mark', `${MASQUERADE_MARK}/${MASQUERADE_MARK}`, '-j', 'ACCEPT');
  filter.add(KUBE_FORWARD, ...comment('kubernetes forwarding conntrack rule'), '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT');

  return { nat: nat.chains, filter: filter.chains };
}

function isServiceChain(chain: string): boolean {
  return SERVICE_CHAIN_PREFIXES.some((prefix) => chain.startsWith(prefix));
}

function sameRules(a: readonly string[] | undefined, b: readonly string[]): boolean {
  if (a === b) return true;
  return a !== undefined && a.length === b.length && a.every((r, i) => r === b[i]);
}

/** The chains one restore input declares and writes, and those it deletes, per table. */
interface TableChanges {
  written: Array<[string, readonly string[]]>;
  stale: string[];
}

/**
 * What a sync changes in one table. A declared chain (":CHAIN - [0:0]") is
 * created or flushed, so a restore declares and rewrites: every top-level
 * chain (the ones every service port's rules hang from, so a stale jump
 * cannot survive), every per-service chain that is new or whose rules
 * changed, and every per-service chain no longer wanted, which is then
 * deleted with -X once nothing refers to it. Unchanged per-service chains
 * are left out. `previous` is what the last good sync applied; undefined
 * (after a start or a failure) rewrites every chain and takes the chains to
 * delete from `existing`, the table's current chain names. A top-level
 * chain that is no longer wanted (KUBE-FIREWALL, when 127.0.0.1 stops
 * answering NodePorts) is left as it is: kubelet may own its rule.
 */
function tableChanges(
  previous: ReadonlyMap<string, readonly string[]> | undefined,
  next: ReadonlyMap<string, readonly string[]>,
  existing: readonly string[],
): TableChanges {
  const written = [...next].filter(([chain, rules]) => !isServiceChain(chain) || !previous || !sameRules(previous.get(chain), rules));
  const candidates = previous ? [...previous.keys()] : existing;
  const stale = [...new Set(candidates)].filter((chain) => isServiceChain(chain) && !next.has(chain)).sort();
  return { written, stale };
}

/** One table's part of a restore input: declarations, rules, deletions. */
function tableSection(table: IptablesTable, written: ReadonlyArray<[string, readonly string[]]>, stale: readonly string[]): string[] {
  return [
    `*${table}`,
    ...written.map(([chain]) => `:${chain} - [0:0]`),
    ...stale.map((chain) => `:${chain} - [0:0]`),
    ...written.flatMap(([, rules]) => rules),
    ...stale.map((chain) => `-X ${chain}`),
    'COMMIT',
  ];
}

/**
 * Where a per-service chain sits in kube-proxy's structure: a chain only
 * jumps to chains of a lower level (KUBE-FW- to KUBE-EXT- or KUBE-XLB-,
 * those to KUBE-SVC- or KUBE-SVL-, those to KUBE-SEP-) or to top-level
 * chains.
 */
const SERVICE_CHAIN_LEVELS: ReadonlyArray<readonly (typeof SERVICE_CHAIN_PREFIXES)[number][]> = [
  ['KUBE-SEP-'],
  ['KUBE-SVC-', 'KUBE-SVL-'],
  ['KUBE-EXT-', 'KUBE-XLB-'],
  ['KUBE-FW-'],
];

function serviceChainLevel(chain: string): number {
  const level = SERVICE_CHAIN_LEVELS.findIndex((prefixes) => prefixes.some((prefix) => chain.startsWith(prefix)));
  if (level < 0) throw new Error(`not a per-service chain: ${chain}`);
  return level;
}

function jumpsToServiceChain(rules: readonly string[]): boolean {
  return rules.some((r) => SERVICE_CHAIN_PREFIXES.some((prefix) => r.includes(` -j ${prefix}`)));
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * One iptables-restore input of a sync. `deletes` is what it deletes (and
 * nothing else) when it comes after the switch; undefined for the others,
 * whose failure leaves kpx not knowing what the tables hold.
 */
export interface RestoreStep {
  input: string;
  deletes?: Readonly<Record<IptablesTable, readonly string[]>>;
}

/**
 * The restore inputs of one sync, applied in order. Up to
 * `maxServiceChains` per-service chains to write or delete, one input (one
 * commit per table, filter then nat), as kube-proxy does. Beyond, staged
 * inputs of at most that many per-service chains each: iptables-nft 1.8.9
 * keeps the chain names an input uses in a sorted list walked for every
 * rule, so one input is quadratic (2,000 Services × 10 endpoints: 66-83 s),
 * and the kernel checks the whole table at every commit (linear). The order
 * keeps every jump on a chain that exists:
 *   1. nat's top-level chains that jump to no per-service chain
 *      (KUBE-MARK-MASQ, which KUBE-SEP- chains use);
 *   2. new and changed per-service chains, level by level from KUBE-SEP-
 *      up, each after the chains it jumps to;
 *   3. the switch: every other top-level chain, filter then nat;
 *   4. the chains no longer wanted, from the top level down, each once
 *      nothing jumps to it any more.
 * New Services appear and removed ones go at the switch (filter's
 * no-endpoint REJECTs and nat's jumps within one input). A Service whose
 * own chain changed is served through it from its stage on, under its old
 * top-level rules until the switch.
 */
export function restorePlan(
  previous: RenderedRules | undefined,
  next: RenderedRules,
  existing: Readonly<Record<IptablesTable, readonly string[]>>,
  maxServiceChains: number,
): RestoreStep[] {
  const tables: IptablesTable[] = ['filter', 'nat'];
  const changes = new Map(tables.map((t) => [t, tableChanges(previous?.[t], next[t], existing[t])]));
  const perService = (t: IptablesTable) => changes.get(t)!.written.filter(([c]) => isServiceChain(c));
  let serviceChains = 0;
  for (const t of tables) serviceChains += changes.get(t)!.stale.length + perService(t).length;
  if (serviceChains <= maxServiceChains) {
    return [{ input: tables.flatMap((t) => tableSection(t, changes.get(t)!.written, changes.get(t)!.stale)).concat('').join('\n') }];
  }
  const steps: RestoreStep[] = [];
  const input = (table: IptablesTable, written: ReadonlyArray<[string, readonly string[]]>, stale: readonly string[]) =>
    [...tableSection(table, written, stale), ''].join('\n');
  const byLevel = (chains: readonly string[], level: number) => chains.filter((c) => serviceChainLevel(c) === level);
  const switchInput: string[] = [];
  for (const table of tables) {
    const { written } = changes.get(table)!;
    const topLevel = written.filter(([c]) => !isServiceChain(c));
    const chains = perService(table);
    const leaves = chains.length > 0 ? topLevel.filter(([, rules]) => !jumpsToServiceChain(rules)) : [];
    if (leaves.length > 0) steps.push({ input: input(table, leaves, []) });
    for (let level = 0; level < SERVICE_CHAIN_LEVELS.length; level++) {
      const atLevel = new Set(byLevel(chains.map(([c]) => c), level));
      for (const part of chunks(chains.filter(([c]) => atLevel.has(c)), maxServiceChains)) steps.push({ input: input(table, part, []) });
    }
    switchInput.push(...tableSection(table, topLevel.filter((entry) => !leaves.includes(entry)), []));
  }
  steps.push({ input: [...switchInput, ''].join('\n') });
  for (const table of tables) {
    for (let level = SERVICE_CHAIN_LEVELS.length - 1; level >= 0; level--) {
      for (const part of chunks(byLevel(changes.get(table)!.stale, level), maxServiceChains)) {
        steps.push({ input: input(table, [], part), deletes: { filter: [], nat: [], [table]: part } });
      }
    }
  }
  return steps;
}
