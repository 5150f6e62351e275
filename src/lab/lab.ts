// A throwaway network lab made of network namespaces, cgroups and bpffs mounts.
// Two shapes:
//
// Single node, createLab({ pods, externalHosts }), the original lab:
//   <runId>-node     bridge br0 10.244.0.1/24, ip_forward=1, ext<k> links to external hosts
//   <runId>-<pod>    eth0 <address>/32 on br0, default via 10.244.0.1 onlink (incl. "client" 10.244.0.100)
//   <runId>-<ext>    eth0 <address>/24, default via 192.0.2.1 (node side of its own veth)
//   one cgroup (lab.cgroupPath) and one bpffs (lab.bpffsPath); the node is called node-a.
//
// Several nodes, createLab({ nodes, externalHosts }):
//   <runId>-wire     bridge br0 joining every node and external host (172.18.0.0/24)
//   <runId>-<node>   node i: eth0 172.18.0.(2+i)/24 on the wire, br0 10.244.(1+i).1/24 for its
//                    pods, ip_forward=1, a route to every other node's pod /24 via that node
//   <runId>-<pod>    eth0 <address>/32 on its node's br0, default via the node (onlink)
//   <runId>-<ext>    eth0 <address>/24 on the wire and nothing else: it reaches node
//                    addresses only, so whatever it gets from a pod went through NAT
//   per node: its own cgroup and bpffs mount (lab.node(name).cgroupPath, .bpffsPath).
//
// The kpx agent runs in a node's netns and attaches only to that node's cgroup
// and interfaces; clients run inside a cgroup *and* a lab netns so their
// connect()/sendmsg() go through kpx. Nothing here links to the root netns.
//
// Every resource is named after the run id and recorded on an undo stack, so
// close() (or a failed createLab) removes exactly what was made. Labs left by
// a killed process are found through /run/kpx/<runId>/pid and swept.
import { execFile, execFileSync, spawn as spawnChild, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const LAB_ROOT = '/run/kpx';
export const NETNS_DIR = '/run/netns';
export const POD_GATEWAY = '10.244.0.1';
export const EXTERNAL_GATEWAY = '192.0.2.1';
/** Pseudo-host for the agent process: the root network namespace, no cgroup. */
export const AGENT_HOST = 'agent-host';
export const CLIENT_HOST = { name: 'client', address: '10.244.0.100' } as const;
/** The network joining the nodes and external hosts of a multi-node lab. */
export const WIRE_CIDR = '172.18.0.0/24';
/** Scripts run with `node` inside lab namespaces. */
export const NAME_SERVER_SCRIPT = fileURLToPath(new URL('./name-server.js', import.meta.url));
export const PROBE_SCRIPT = fileURLToPath(new URL('./probe.js', import.meta.url));
const XDP_PASS_SCRIPT = fileURLToPath(new URL('./xdp-pass.js', import.meta.url));

/** The single-node lab's node: host "node", Kubernetes name node-a (as examples/ say). */
const SINGLE_NODE = { name: 'node-a', host: 'node' } as const;
const WIRE_HOST = 'wire';
const NODE_INTERFACE = 'eth0';
const CHILD_STOP_GRACE_MS = 2000;
const DEFAULT_EXEC_TIMEOUT_MS = 30_000;
/** A run dir without pid file younger than this may still be being created. */
const UNFINISHED_RUN_DIR_GRACE_MS = 60_000;

/** Node i of a multi-node lab. */
const nodeAddress = (i: number): string => `172.18.0.${2 + i}`;
const podGatewayOf = (i: number): string => `10.244.${1 + i}.1`;
const podCidrOf = (i: number): string => `10.244.${1 + i}.0/24`;

// ---------------------------------------------------------------- public API

export interface Handle {
  close(): Promise<void>;
}

export interface HostSpec {
  name: string;
  address: string;
}

export interface SingleNodeLabSpec {
  runId?: string;
  pods: HostSpec[];
  externalHosts?: HostSpec[];
}

export interface NodeSpec {
  /** Kubernetes node name, also the name of the node's host. */
  name: string;
  /** Addresses inside the node's pod /24, 10.244.(1+i).0/24 for node i. */
  pods?: HostSpec[];
}

export interface MultiNodeLabSpec {
  runId?: string;
  nodes: NodeSpec[];
  /** Addresses inside 172.18.0.0/24, above the node addresses. */
  externalHosts?: HostSpec[];
}

export type LabSpec = SingleNodeLabSpec | MultiNodeLabSpec;

export interface ExecOptions {
  /**
   * Join the cgroup of the node the host belongs to before exec'ing, so the
   * process's sockets are kpx-managed (a pod belongs to its node, a node to itself).
   */
  inCgroup?: boolean;
  timeoutMs?: number;
  input?: string;
}

export interface ExecResult {
  /** Exit code; null when killed by a signal (e.g. on timeout). */
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface SpawnOptions {
  inCgroup?: boolean;
}

export interface LabProcess extends Handle {
  readonly pid: number;
  /** Settles when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first stdout line matching pattern; rejects on exit or timeout. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
}

export interface NameServerSpec {
  host: string;
  /** What the server answers with; the host name by default. */
  name?: string;
  tcp?: number[];
  udp?: number[];
  /** TCP ports that greet with the name, then echo every line back on the same connection. */
  echo?: number[];
}

export type HostKind = 'node' | 'pod' | 'external';

export interface LabHost {
  name: string;
  kind: HostKind;
  /** Address of eth0 (pods, externals, nodes of a multi-node lab) or br0 (the single node). */
  address: string;
  /** The node a pod or node host belongs to; externals belong to none. */
  node?: string;
}

export interface LabNode {
  /** Kubernetes node name: what --node-name and an endpoint's nodeName say. */
  readonly name: string;
  /** The lab host that is this node (same as name in a multi-node lab). */
  readonly host: string;
  /** Where other hosts reach the node: eth0 on the wire, or br0 in the single-node lab. */
  readonly address: string;
  readonly podGateway: string;
  readonly podCidr: string;
  readonly cgroupPath: string;
  readonly bpffsPath: string;
  /** The node's interface to the wire (where tc/XDP attach); the single-node lab has none. */
  readonly interface?: string;
}

/** TX checksum offload at either end of a host's wire link; an end left out stays as it is. */
export interface TxChecksumOffload {
  /** The host's own eth0: what it sends. */
  eth0?: boolean;
  /** Its port on the wire's bridge: what it receives. */
  wirePort?: boolean;
}

/** Any lab: hosts, the nodes they belong to, processes in them. */
export interface ClusterLab extends Handle {
  readonly runId: string;
  /** One folder for every node's agent, as kube-proxies share one API server. */
  readonly manifestsDir: string;
  readonly hosts: readonly LabHost[];
  readonly nodes: readonly LabNode[];
  node(name: string): LabNode;
  netnsPath(host: string): string;
  exec(host: string, argv: string[], opts?: ExecOptions): Promise<ExecResult>;
  spawn(host: string, argv: string[], opts?: SpawnOptions): LabProcess;
  startNameServers(servers: NameServerSpec[]): Promise<LabProcess[]>;
  setTxChecksumOffload(host: string, ends: TxChecksumOffload): Promise<void>;
  trackCleanup(fn: () => void | Promise<void>): void;
}

/** The single-node lab, whose one node's cgroup and bpffs are the lab's. */
export interface Lab extends ClusterLab {
  readonly cgroupPath: string;
  readonly bpffsPath: string;
}

export function newRunId(): string {
  return `kpx${randomBytes(3).toString('hex')}`;
}

export function runDirOf(runId: string): string {
  return `${LAB_ROOT}/${runId}`;
}

export function createLab(spec: SingleNodeLabSpec): Promise<Lab>;
export function createLab(spec: MultiNodeLabSpec): Promise<ClusterLab>;
export async function createLab(spec: LabSpec): Promise<Lab> {
  const runId = spec.runId ?? newRunId();
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(runId)) throw new Error(`invalid runId: ${runId}`);
  const plan = 'nodes' in spec ? planMultiNode(spec) : planSingleNode(spec);
  await sweepStaleLabs();
  const lab = new LabImpl(runId, plan);
  try {
    await lab.build();
  } catch (err) {
    await lab.close().catch((closeErr: unknown) => {
      process.stderr.write(`kpx lab ${runId}: cleanup after failed create: ${String(closeErr)}\n`);
    });
    throw err;
  }
  return lab;
}

/**
 * Removes labs whose creating process is gone (killed test runs). Returns the
 * run ids swept. Labs of live processes, including our own, are left alone.
 */
export async function sweepStaleLabs(): Promise<string[]> {
  const swept: string[] = [];
  for (const runId of await listRunDirs()) {
    if (!(await isStaleRun(runId))) continue;
    await removeRunByDiscovery(runId);
    swept.push(runId);
  }
  if (swept.length > 0) await removeLabRootIfEmpty();
  return swept;
}

// ---------------------------------------------------------- planning

/** A node before its cgroup and bpffs exist. */
type PlannedNode = Omit<LabNode, 'cgroupPath' | 'bpffsPath'>;

interface LabPlan {
  /** The multi-node lab joins nodes and externals on a wire; the single node has point-to-point externals. */
  shape: 'single-node' | 'multi-node';
  hosts: LabHost[];
  nodes: PlannedNode[];
}

function planSingleNode(spec: SingleNodeLabSpec): LabPlan {
  const node = SINGLE_NODE.name;
  const hosts: LabHost[] = [
    { name: SINGLE_NODE.host, kind: 'node', address: POD_GATEWAY, node },
    { name: CLIENT_HOST.name, kind: 'pod', address: CLIENT_HOST.address, node },
    ...spec.pods.map((p) => ({ ...p, kind: 'pod' as const, node })),
    ...(spec.externalHosts ?? []).map((h) => ({ ...h, kind: 'external' as const })),
  ];
  checkHostNames(hosts, []);
  const nodes = [{ ...SINGLE_NODE, address: POD_GATEWAY, podGateway: POD_GATEWAY, podCidr: '10.244.0.0/24' }];
  return { shape: 'single-node', hosts, nodes };
}

function planMultiNode(spec: MultiNodeLabSpec): LabPlan {
  if (spec.nodes.length === 0) throw new Error('a lab needs at least one node');
  if (spec.nodes.length > 250) throw new Error('at most 250 nodes (one 10.244.x.0/24 each)');
  const nodes: PlannedNode[] = spec.nodes.map((n, i) => ({
    name: n.name,
    host: n.name,
    address: nodeAddress(i),
    podGateway: podGatewayOf(i),
    podCidr: podCidrOf(i),
    interface: NODE_INTERFACE,
  }));
  const hosts: LabHost[] = [];
  for (const [i, n] of spec.nodes.entries()) {
    hosts.push({ name: n.name, kind: 'node', address: nodes[i]!.address, node: n.name });
    for (const pod of n.pods ?? []) {
      if (!inCidr(pod.address, nodes[i]!.podCidr) || pod.address === nodes[i]!.podGateway) {
        throw new Error(`pod ${pod.name} ${pod.address}: not a pod address of ${n.name} (${nodes[i]!.podCidr})`);
      }
      hosts.push({ ...pod, kind: 'pod', node: n.name });
    }
  }
  const nodeAddresses = new Set(nodes.map((n) => n.address));
  for (const ext of spec.externalHosts ?? []) {
    if (!inCidr(ext.address, WIRE_CIDR) || nodeAddresses.has(ext.address) || /\.(0|1|255)$/.test(ext.address)) {
      throw new Error(`external host ${ext.name} ${ext.address}: want a free address in ${WIRE_CIDR}`);
    }
    hosts.push({ ...ext, kind: 'external' });
  }
  checkHostNames(hosts, [WIRE_HOST]);
  return { shape: 'multi-node', hosts, nodes };
}

function checkHostNames(hosts: LabHost[], reserved: string[]): void {
  const seen = new Set<string>(reserved);
  for (const h of hosts) {
    if (!/^[a-z0-9][a-z0-9-]*$/.test(h.name)) throw new Error(`invalid host name: ${h.name}`);
    if (seen.has(h.name)) throw new Error(`duplicate or reserved host name: ${h.name}`);
    seen.add(h.name);
  }
}

function ipv4ToNumber(address: string): number | undefined {
  const parts = address.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return undefined;
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

function inCidr(address: string, cidr: string): boolean {
  const [base = '', bits = '32'] = cidr.split('/');
  const a = ipv4ToNumber(address);
  const b = ipv4ToNumber(base);
  if (a === undefined || b === undefined) return false;
  const size = 2 ** (32 - Number(bits));
  return Math.floor(a / size) === Math.floor(b / size);
}

// ---------------------------------------------------------- the lab itself

interface UndoStep {
  label: string;
  undo(): Promise<void>;
  /** Best-effort synchronous variant for the process-exit path. */
  undoSync(): void;
}

class LabImpl implements Lab {
  readonly runDir: string;
  readonly manifestsDir: string;
  readonly hosts: readonly LabHost[];
  readonly nodes: readonly LabNode[];
  private readonly shape: LabPlan['shape'];
  private readonly cgroupMount: string;
  private readonly undoStack: UndoStep[] = [];
  private readonly liveChildren = new Set<ChildProcess>();
  /** Multi-node lab: each host on the wire → its port on the wire's bridge. */
  private readonly wirePorts = new Map<string, string>();
  private closing: Promise<void> | undefined;

  constructor(readonly runId: string, plan: LabPlan) {
    this.runDir = runDirOf(runId);
    this.manifestsDir = `${this.runDir}/manifests`;
    this.hosts = plan.hosts;
    this.shape = plan.shape;
    // Without a cgroup2 mount on the host, build() mounts one for the lab.
    this.cgroupMount = findCgroup2Mount() ?? `${this.runDir}/cgroup2`;
    const single = plan.shape === 'single-node';
    this.nodes = plan.nodes.map((n) => ({
      ...n,
      cgroupPath: single ? `${this.cgroupMount}/${runId}` : `${this.cgroupMount}/${runId}-${n.name}`,
      bpffsPath: single ? `${this.runDir}/bpffs` : `${this.runDir}/bpffs-${n.name}`,
    }));
    openLabs.add(this);
    installExitHandlers();
  }

  get cgroupPath(): string {
    return this.onlyNode().cgroupPath;
  }

  get bpffsPath(): string {
    return this.onlyNode().bpffsPath;
  }

  private onlyNode(): LabNode {
    if (this.nodes.length !== 1) throw new Error(`lab ${this.runId} has ${this.nodes.length} nodes: use lab.node(name)`);
    return this.nodes[0]!;
  }

  node(name: string): LabNode {
    const node = this.nodes.find((n) => n.name === name);
    if (!node) throw new Error(`lab ${this.runId} has no node ${name}`);
    return node;
  }

  netnsPath(host: string): string {
    if (!this.hosts.some((h) => h.name === host)) throw new Error(`lab ${this.runId} has no host ${host}`);
    return `${NETNS_DIR}/${this.netnsName(host)}`;
  }

  private netnsName(host: string): string {
    return `${this.runId}-${host}`;
  }

  /** The cgroup of the node a host belongs to; in the single-node lab every host shares the one cgroup. */
  private cgroupOf(hostName: string): string {
    const host = this.hosts.find((h) => h.name === hostName);
    if (!host) throw new Error(`lab ${this.runId} has no host ${hostName}`);
    if (host.node !== undefined) return this.node(host.node).cgroupPath;
    if (this.shape === 'single-node') return this.onlyNode().cgroupPath;
    throw new Error(`${hostName} belongs to no node, so it has no cgroup`);
  }

  // -------------------------------------------------------------- build

  async build(): Promise<void> {
    await this.createRunDir();
    for (const node of this.nodes) await this.mountBpffs(node.bpffsPath);
    await this.createCgroups();
    if (this.shape === 'single-node') await this.buildSingleNode();
    else await this.buildMultiNode();
  }

  private async buildSingleNode(): Promise<void> {
    for (const host of this.hosts) await this.createNetns(host.name);
    const node = this.onlyNode();
    await this.setUpPodBridge(node);
    for (const [i, pod] of this.podsOf(node).entries()) await this.attachPod(node, pod, `vp${i}`);
    const externals = this.hosts.filter((h) => h.kind === 'external');
    for (const [k, ext] of externals.entries()) await this.attachExternal(ext, `ext${k}`);
  }

  private async buildMultiNode(): Promise<void> {
    await this.createNetns(WIRE_HOST);
    await this.ip(WIRE_HOST, 'link', 'add', 'br0', 'type', 'bridge');
    await this.ip(WIRE_HOST, 'link', 'set', 'br0', 'up');
    for (const host of this.hosts) await this.createNetns(host.name);
    const nodePorts = this.nodes.map((_, i) => `n${i}`);
    for (const [i, node] of this.nodes.entries()) {
      await this.attachToWire(node.host, node.address, nodePorts[i]!);
      await this.setUpPodBridge(node);
      for (const [j, pod] of this.podsOf(node).entries()) await this.attachPod(node, pod, `vp${j}`);
      for (const other of this.nodes) {
        if (other !== node) await this.ip(node.host, 'route', 'add', other.podCidr, 'via', other.address, 'dev', NODE_INTERFACE);
      }
    }
    // kpx's XDP_TX on a node's eth0 reaches the wire only if the peer has an XDP program (xdp-pass.ts says why).
    await this.runInNetns(WIRE_HOST, [process.execPath, XDP_PASS_SCRIPT, ...nodePorts]);
    const externals = this.hosts.filter((h) => h.kind === 'external');
    for (const [k, ext] of externals.entries()) await this.attachToWire(ext.name, ext.address, `x${k}`);
  }

  private podsOf(node: LabNode): LabHost[] {
    return this.hosts.filter((h) => h.kind === 'pod' && h.node === node.name);
  }

  private async createRunDir(): Promise<void> {
    await mkdirUnderLabRoot(this.runDir);
    this.pushUndo({
      label: `remove ${this.runDir}`,
      undo: async () => { await rm(this.runDir, { recursive: true, force: true }); await removeLabRootIfEmpty(); },
      undoSync: () => { rmSync(this.runDir, { recursive: true, force: true }); removeLabRootIfEmptySync(); },
    });
    // The pid file is what lets sweepStaleLabs() recognise a dead run.
    await writeFile(`${this.runDir}/pid`, `${process.pid}\n`);
    await mkdir(this.manifestsDir);
  }

  private async mountBpffs(path: string): Promise<void> {
    await mkdir(path);
    await run('mount', ['-t', 'bpf', 'bpf', path]);
    this.pushUndo(unmountStep(path));
  }

  /** One cgroup per node: <mount>/<runId> for the single node, <mount>/<runId>-<node> otherwise. */
  private async createCgroups(): Promise<void> {
    if (this.cgroupMount.startsWith(`${this.runDir}/`)) {
      await mkdir(this.cgroupMount);
      await run('mount', ['-t', 'cgroup2', 'none', this.cgroupMount]);
      this.pushUndo(unmountStep(this.cgroupMount));
    }
    // Recorded (one per line) so a sweep can find the cgroups even if they live in our own mount.
    await writeFile(`${this.runDir}/cgroup`, this.nodes.map((n) => `${n.cgroupPath}\n`).join(''));
    for (const { cgroupPath } of this.nodes) {
      await mkdir(cgroupPath);
      this.pushUndo({
        label: `remove cgroup ${cgroupPath}`,
        undo: () => removeCgroup(cgroupPath),
        undoSync: () => removeCgroupSync(cgroupPath),
      });
    }
  }

  private async createNetns(host: string): Promise<void> {
    const name = this.netnsName(host);
    await run('ip', ['netns', 'add', name]);
    this.pushUndo({
      label: `delete netns ${name}`,
      undo: () => deleteNetns(name),
      undoSync: () => deleteNetnsSync(name),
    });
    await this.ip(host, 'link', 'set', 'lo', 'up');
  }

  private async setUpPodBridge(node: LabNode): Promise<void> {
    await this.ip(node.host, 'link', 'add', 'br0', 'type', 'bridge');
    await this.ip(node.host, 'addr', 'add', `${node.podGateway}/24`, 'dev', 'br0');
    await this.ip(node.host, 'link', 'set', 'br0', 'up');
    // /proc/sys/net is per netns: the writer's netns decides which one is set.
    // Pods reach each other through the node (see attachPod), which must not
    // teach them a shortcut with ICMP redirects.
    await this.runInNetns(node.host, [
      'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.send_redirects=0', 'net.ipv4.conf.br0.send_redirects=0',
    ]);
    // A real node routes everything it has no better route for (ClusterIPs
    // included) to its uplink; netfilter only sees what routing lets through.
    // Here the uplink is a bridge without ports (no dummy module needed):
    // whatever is not translated goes nowhere, and never leaves the namespace.
    await this.ip(node.host, 'link', 'add', 'uplink0', 'type', 'bridge');
    await this.ip(node.host, 'link', 'set', 'uplink0', 'up');
    await this.ip(node.host, 'route', 'add', 'default', 'dev', 'uplink0');
  }

  /** veth created inside the node netns with its peer moved straight into the pod: no host-side names. */
  private async attachPod(node: LabNode, pod: LabHost, bridgePort: string): Promise<void> {
    await this.ip(node.host, 'link', 'add', bridgePort, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.netnsName(pod.name));
    await this.ip(node.host, 'link', 'set', bridgePort, 'master', 'br0', 'up');
    // A /32 and an onlink gateway, as Calico and Cilium give pods: traffic
    // between two pods of a node is routed by the node, never bridged past
    // it, so the node's netfilter sees both directions (iptables mode's DNAT
    // of pod-to-Service traffic depends on it, as kube-proxy depends on
    // br_netfilter).
    await this.ip(pod.name, 'addr', 'add', `${pod.address}/32`, 'dev', 'eth0');
    await this.ip(pod.name, 'link', 'set', 'eth0', 'up');
    await this.ip(pod.name, 'route', 'add', 'default', 'via', node.podGateway, 'dev', 'eth0', 'onlink');
  }

  /**
   * Single-node lab: each external host gets its own point-to-point veth. The
   * node side holds 192.0.2.1 as /32 plus a host route, so several externals can share it.
   */
  private async attachExternal(ext: LabHost, nodePort: string): Promise<void> {
    const node = SINGLE_NODE.host;
    await this.ip(node, 'link', 'add', nodePort, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.netnsName(ext.name));
    await this.ip(node, 'addr', 'add', `${EXTERNAL_GATEWAY}/32`, 'dev', nodePort);
    await this.ip(node, 'link', 'set', nodePort, 'up');
    await this.ip(node, 'route', 'add', `${ext.address}/32`, 'dev', nodePort);
    await this.configureEth0(ext.name, ext.address);
    // onlink: the gateway is not inside the external's /24.
    await this.ip(ext.name, 'route', 'add', 'default', 'via', EXTERNAL_GATEWAY, 'dev', 'eth0', 'onlink');
  }

  /** Multi-node lab: a veth from the wire bridge to eth0 of a node or external host. */
  private async attachToWire(host: string, address: string, wirePort: string): Promise<void> {
    await this.ip(WIRE_HOST, 'link', 'add', wirePort, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.netnsName(host));
    await this.ip(WIRE_HOST, 'link', 'set', wirePort, 'master', 'br0', 'up');
    // A wire carries complete checksums: with TX offload a veth would hand on
    // CHECKSUM_PARTIAL packets whose checksum XDP cannot see or fix.
    await this.runInNetns(WIRE_HOST, ['ethtool', '-K', wirePort, 'tx', 'off']);
    await this.runInNetns(host, ['ethtool', '-K', 'eth0', 'tx', 'off']);
    // Native XDP_REDIRECT into a veth needs NAPI on its peer, which GRO turns on.
    await this.runInNetns(WIRE_HOST, ['ethtool', '-K', wirePort, 'gro', 'on']);
    await this.configureEth0(host, address);
    this.wirePorts.set(host, wirePort);
  }

  /**
   * TX checksum offload of a host's wire link, each end apart (the lab's
   * default: off at both, as on a real wire, where every checksum is
   * complete). A veth sending with it hands on CHECKSUM_PARTIAL packets: a
   * host's eth0 for what it sends, its port on the wire's bridge for what
   * the host receives (each packet crosses the bridge out through the
   * receiver's port, where an end without offload completes the checksum).
   */
  async setTxChecksumOffload(host: string, ends: TxChecksumOffload): Promise<void> {
    const wirePort = this.wirePorts.get(host);
    if (wirePort === undefined) throw new Error(`${host} is not on the wire of a multi-node lab`);
    const state = (on: boolean) => (on ? 'on' : 'off');
    if (ends.eth0 !== undefined) await this.runInNetns(host, ['ethtool', '-K', 'eth0', 'tx', state(ends.eth0)]);
    if (ends.wirePort !== undefined) await this.runInNetns(WIRE_HOST, ['ethtool', '-K', wirePort, 'tx', state(ends.wirePort)]);
  }

  private async configureEth0(host: string, address: string): Promise<void> {
    await this.ip(host, 'addr', 'add', `${address}/24`, 'dev', 'eth0');
    await this.ip(host, 'link', 'set', 'eth0', 'up');
  }

  private ip(host: string, ...args: string[]): Promise<void> {
    return run('ip', ['-n', this.netnsName(host), ...args]);
  }

  private runInNetns(host: string, argv: string[]): Promise<void> {
    return run('nsenter', [`--net=${NETNS_DIR}/${this.netnsName(host)}`, '--', ...argv]);
  }

  private pushUndo(step: UndoStep): void {
    this.undoStack.push(step);
  }

  // -------------------------------------------------------------- processes

  /** argv that enters the netns (and optionally the host's node cgroup) before exec'ing the program. */
  private enterArgv(host: string, argv: string[], inCgroup: boolean): string[] {
    if (argv.length === 0) throw new Error('empty argv');
    if (host === AGENT_HOST) {
      // Only the agent runs here: it talks to the kernel and to an API server on loopback, never to lab addresses.
      if (inCgroup) throw new Error('the agent host never runs inside a lab cgroup');
      return argv;
    }
    const nsPath = this.netnsPath(host);
    if (!inCgroup) return ['nsenter', `--net=${nsPath}`, '--', ...argv];
    // $$ stays the same pid through both execs, so the program starts inside
    // the cgroup before it can open any socket. Paths go in as arguments, never
    // spliced into the script.
    const script = 'echo $$ > "$1" || exit 125; ns=$2; shift 2; exec nsenter --net="$ns" -- "$@"';
    return ['sh', '-c', script, 'sh', `${this.cgroupOf(host)}/cgroup.procs`, nsPath, ...argv];
  }

  private startChild(host: string, argv: string[], inCgroup: boolean): ChildProcess {
    if (this.closing) throw new Error(`lab ${this.runId} is closed`);
    const [cmd, ...args] = this.enterArgv(host, argv, inCgroup);
    const child = spawnChild(cmd!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.liveChildren.add(child);
    child.once('exit', () => this.liveChildren.delete(child));
    child.once('error', () => this.liveChildren.delete(child));
    return child;
  }

  async exec(host: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const child = this.startChild(host, argv, opts.inCgroup ?? false);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
      child.stdout!.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
      child.stderr!.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
      child.once('error', (err) => { clearTimeout(timer); reject(err); });
      child.once('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr, timedOut }); });
      child.stdin!.on('error', () => { /* child may exit without reading its input */ });
      child.stdin!.end(opts.input ?? '');
    });
  }

  spawn(host: string, argv: string[], opts: SpawnOptions = {}): LabProcess {
    const child = this.startChild(host, argv, opts.inCgroup ?? false);
    child.stdin!.end();
    return new TrackedProcess(child, argv.join(' '));
  }

  async startNameServers(servers: NameServerSpec[]): Promise<LabProcess[]> {
    const started = servers.map((s) => this.spawn(s.host, nameServerArgv(s)));
    try {
      await Promise.all(started.map((p) => p.waitFor(/^listening/)));
    } catch (err) {
      await Promise.allSettled(started.map((p) => p.close()));
      throw err;
    }
    return started;
  }

  trackCleanup(fn: () => void | Promise<void>): void {
    this.pushUndo({
      label: 'tracked cleanup',
      undo: async () => { await fn(); },
      undoSync: () => { Promise.resolve().then(fn).catch(() => { /* exiting anyway */ }); },
    });
  }

  // -------------------------------------------------------------- teardown

  /** Undoes everything in reverse order; keeps going past failures; idempotent. */
  close(): Promise<void> {
    this.closing ??= this.closeNow();
    return this.closing;
  }

  private async closeNow(): Promise<void> {
    const errors: unknown[] = [];
    await Promise.allSettled([...this.liveChildren].map((c) => stopChild(c)));
    for (let step = this.undoStack.pop(); step; step = this.undoStack.pop()) {
      try {
        await step.undo();
      } catch (err) {
        errors.push(new Error(`${step.label}: ${err instanceof Error ? err.message : String(err)}`));
      }
    }
    openLabs.delete(this);
    if (openLabs.size === 0) uninstallExitHandlers();
    if (errors.length > 0) throw new AggregateError(errors, `lab ${this.runId}: ${errors.length} cleanup step(s) failed`);
  }

  /** For the exit path only: no awaiting possible, so everything is sync and best-effort. */
  closeSync(): void {
    this.closing ??= Promise.resolve();
    for (const child of this.liveChildren) child.kill('SIGKILL');
    for (let step = this.undoStack.pop(); step; step = this.undoStack.pop()) {
      try {
        step.undoSync();
      } catch (err) {
        process.stderr.write(`kpx lab ${this.runId}: ${step.label}: ${String(err)}\n`);
      }
    }
    openLabs.delete(this);
  }
}

function nameServerArgv(s: NameServerSpec): string[] {
  const argv = [process.execPath, NAME_SERVER_SCRIPT, '--name', s.name ?? s.host];
  if (s.tcp?.length) argv.push('--tcp', s.tcp.join(','));
  if (s.udp?.length) argv.push('--udp', s.udp.join(','));
  if (s.echo?.length) argv.push('--echo', s.echo.join(','));
  return argv;
}

class TrackedProcess implements LabProcess {
  readonly pid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private out = '';
  private err = '';
  private hasExited = false;

  constructor(private readonly child: ChildProcess, private readonly description: string) {
    this.pid = child.pid ?? -1;
    child.stdout!.setEncoding('utf8').on('data', (s: string) => { this.out += s; });
    child.stderr!.setEncoding('utf8').on('data', (s: string) => { this.err += s; });
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => { this.hasExited = true; resolve({ code, signal }); });
      child.once('error', () => { this.hasExited = true; resolve({ code: null, signal: null }); });
    });
  }

  stdout(): string { return this.out; }
  stderr(): string { return this.err; }

  waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const line = this.out.split('\n').find((l) => pattern.test(l));
        if (line === undefined) return false;
        done();
        resolve(line);
        return true;
      };
      const fail = (why: string): void => {
        done();
        reject(new Error(`${this.description}: ${why} waiting for ${pattern}; stderr: ${this.err.trim()}`));
      };
      const onData = (): void => { check(); };
      const onExit = (): void => { if (!check()) fail('exited'); };
      const timer = setTimeout(() => fail(`timed out after ${timeoutMs} ms`), timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.child.stdout!.off('data', onData);
        this.child.off('close', onExit);
      };
      if (check()) return;
      if (this.hasExited) return fail('exited');
      this.child.stdout!.on('data', onData);
      this.child.once('close', onExit);
    });
  }

  async close(): Promise<void> {
    await stopChild(this.child);
  }
}

/** SIGTERM, then SIGKILL if still running after the grace period. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------- resource primitives

async function run(cmd: string, args: string[]): Promise<void> {
  try {
    await execFileAsync(cmd, args);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new Error(`${cmd} ${args.join(' ')} failed: ${stderr || (err as Error).message}`);
  }
}

function runSync(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function unmountStep(mountPoint: string): UndoStep {
  return {
    label: `unmount ${mountPoint}`,
    undo: () => unmount(mountPoint),
    undoSync: () => {
      if (isMounted(mountPoint)) runSync('umount', ['-l', mountPoint]);
    },
  };
}

async function unmount(mountPoint: string): Promise<void> {
  if (!isMounted(mountPoint)) return;
  try {
    await run('umount', [mountPoint]);
  } catch {
    // Busy (someone's cwd or open fd): detach it anyway so nothing stays visible.
    await run('umount', ['-l', mountPoint]);
  }
}

async function deleteNetns(name: string): Promise<void> {
  if (!existsSync(`${NETNS_DIR}/${name}`)) return;
  // Processes would keep the namespace (and its veths) alive after the delete.
  for (const pid of await netnsPids(name)) killQuietly(pid);
  await run('ip', ['netns', 'del', name]);
}

function deleteNetnsSync(name: string): void {
  if (!existsSync(`${NETNS_DIR}/${name}`)) return;
  const out = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' });
  for (const pid of parsePids(out)) killQuietly(pid);
  runSync('ip', ['netns', 'del', name]);
}

async function netnsPids(name: string): Promise<number[]> {
  const { stdout } = await execFileAsync('ip', ['netns', 'pids', name]);
  return parsePids(stdout);
}

async function listNetns(): Promise<string[]> {
  const { stdout } = await execFileAsync('ip', ['netns', 'list']);
  return stdout.split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
}

/** Kills everything in the cgroup (cgroup.kill), waits for it to drain, removes it. */
async function removeCgroup(path: string): Promise<void> {
  if (!existsSync(path)) return;
  await writeFile(`${path}/cgroup.kill`, '1');
  for (let attempt = 0; ; attempt++) {
    try {
      await rmdir(path);
      return;
    } catch (err) {
      // EBUSY while killed processes are still exiting.
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY' || attempt >= 50) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

function removeCgroupSync(path: string): void {
  if (!existsSync(path)) return;
  writeFileSync(`${path}/cgroup.kill`, '1');
  for (let attempt = 0; ; attempt++) {
    try {
      rmdirSync(path);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY' || attempt >= 20) throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    }
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch { /* already gone */ }
}

function parsePids(text: string): number[] {
  return text.split(/\s+/).filter(Boolean).map(Number).filter((n) => Number.isInteger(n) && n > 0);
}

interface MountEntry {
  fsType: string;
  mountPoint: string;
}

function readMounts(): MountEntry[] {
  // Paths in /proc/mounts escape space, tab, newline and backslash as octal.
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync('/proc/mounts', 'utf8').split('\n').filter(Boolean).map((line) => {
    const [, mountPoint = '', fsType = ''] = line.split(' ');
    return { fsType, mountPoint: unescape(mountPoint) };
  });
}

function isMounted(mountPoint: string): boolean {
  return readMounts().some((m) => m.mountPoint === mountPoint);
}

/** The host's cgroup2 mount, ignoring ones that labs mounted for themselves. */
export function findCgroup2Mount(): string | undefined {
  return readMounts().find((m) => m.fsType === 'cgroup2' && !m.mountPoint.startsWith(`${LAB_ROOT}/`))?.mountPoint;
}

async function mkdirUnderLabRoot(dir: string): Promise<void> {
  // A concurrent removeLabRootIfEmpty() may delete the parent between the two mkdirs; retry once.
  for (let attempt = 0; ; attempt++) {
    await mkdir(LAB_ROOT, { recursive: true });
    try {
      await mkdir(dir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt > 0) throw err;
    }
  }
}

async function removeLabRootIfEmpty(): Promise<void> {
  await rmdir(LAB_ROOT).catch(() => { /* not empty (other labs) or already gone */ });
}

function removeLabRootIfEmptySync(): void {
  try {
    rmdirSync(LAB_ROOT);
  } catch { /* not empty or gone */ }
}

// ---------------------------------------------------------- stale-lab sweep

async function listRunDirs(): Promise<string[]> {
  try {
    return (await readdir(LAB_ROOT, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return [];
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function isStaleRun(runId: string): Promise<boolean> {
  const runDir = runDirOf(runId);
  const pidText = await readFile(`${runDir}/pid`, 'utf8').catch(() => undefined);
  if (pidText === undefined) {
    const age = Date.now() - (await stat(runDir)).mtimeMs;
    return age > UNFINISHED_RUN_DIR_GRACE_MS;
  }
  const pid = Number(pidText.trim());
  return !(Number.isInteger(pid) && pid > 0 && isAlive(pid));
}

/** Removes a dead run's resources from what is left on the machine, not from an undo stack. */
async function removeRunByDiscovery(runId: string): Promise<void> {
  const runDir = runDirOf(runId);
  const errors: string[] = [];
  const attempt = async (what: string, fn: () => Promise<void>): Promise<void> => {
    try { await fn(); } catch (err) { errors.push(`${what}: ${err instanceof Error ? err.message : String(err)}`); }
  };
  const cgroupPaths = (await readFile(`${runDir}/cgroup`, 'utf8').catch(() => '')).split('\n').filter(Boolean);
  for (const path of cgroupPaths) await attempt(`cgroup ${path}`, () => removeCgroup(path));
  for (const name of (await listNetns()).filter((n) => n.startsWith(`${runId}-`))) {
    await attempt(`netns ${name}`, () => deleteNetns(name));
  }
  // Deepest mounts first (e.g. bpffs and an own cgroup2 mount under the run dir).
  const mounts = readMounts().map((m) => m.mountPoint).filter((p) => p.startsWith(`${runDir}/`)).sort().reverse();
  for (const mountPoint of mounts) await attempt(`unmount ${mountPoint}`, () => unmount(mountPoint));
  if (errors.length > 0) {
    // Keep the run dir (and its pid file) so a later sweep retries.
    process.stderr.write(`kpx lab sweep ${runId}: ${errors.join('; ')}\n`);
    return;
  }
  await rm(runDir, { recursive: true, force: true });
}

// ---------------------------------------------------------- process-exit safety

const openLabs = new Set<LabImpl>();
let exitHandlersInstalled = false;
const FATAL_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function closeAllLabsSync(): void {
  for (const lab of [...openLabs]) lab.closeSync();
}

function onFatalSignal(signal: NodeJS.Signals): void {
  closeAllLabsSync();
  uninstallExitHandlers();
  // Re-raise so the process dies the way it would have without us.
  process.kill(process.pid, signal);
}

function onUncaughtException(err: Error): void {
  closeAllLabsSync();
  // With no other handler, behave like Node's default: report and exit 1.
  if (process.listenerCount('uncaughtException') === 1) {
    process.stderr.write(`${err.stack ?? String(err)}\n`);
    process.exit(1);
  }
}

function installExitHandlers(): void {
  if (exitHandlersInstalled) return;
  exitHandlersInstalled = true;
  for (const s of FATAL_SIGNALS) process.on(s, onFatalSignal);
  process.on('uncaughtException', onUncaughtException);
  // Also covers process.exit() with labs still open.
  process.on('exit', closeAllLabsSync);
}

function uninstallExitHandlers(): void {
  if (!exitHandlersInstalled) return;
  exitHandlersInstalled = false;
  for (const s of FATAL_SIGNALS) process.off(s, onFatalSignal);
  process.off('uncaughtException', onUncaughtException);
  process.off('exit', closeAllLabsSync);
}
