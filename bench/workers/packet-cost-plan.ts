/**
 * What bench/packet-cost.ts and its worker agree on: the node's namespace,
 * the cluster synced into the maps, the paths measured and the messages
 * between the two processes.
 *
 * Every measured flow targets NODE_PORT_ADDRESS, an address the node
 * answers NodePorts on (it is in kpx_node_addrs) but that is not assigned
 * to any interface of the bench namespace, only routed on eth0. The
 * programs never ask whether it is local; it matters to the ping-pong half
 * of a flow (see the worker), whose FIB lookup goes towards that address
 * and would answer "not forwarded" for a local one.
 */
import { endpointSlice, service, snapshot, apiServerModelOptions, type ClusterSpec } from '../lib/cluster.js';
import type { ObjectSnapshot } from '../../src/k8s/types.js';
import type { ModelOptions } from '../../src/model/types.js';
import { NODE_B, NODE_SYSCTLS, NODE_TOPOLOGY, type NetProgram } from '../../test/fixtures/bpf-test-bed.js';

const NODE_NAME = 'node-a';
export const NODE_PORT_ADDRESS = { ip: '172.18.0.50', mac: '02:6b:70:00:00:32' };
/** The SNAT source of the hand-made reply flows: like NODE_PORT_ADDRESS, routed on eth0 but not local. */
export const SNAT_ADDRESS = { ip: '172.18.0.60', mac: '02:6b:70:00:00:3c' };
/** Where the synthetic endpoints (10.128.0.0/9, bench/lib/cluster.ts) live: behind node-b. */
const ENDPOINT_CIDR = '10.128.0.0/9';
/** A pod of this node, behind pods0. */
const LOCAL_POD = '10.244.1.5';

export const BENCH_TOPOLOGY: string[][] = [
  ...NODE_TOPOLOGY,
  ['route', 'add', ENDPOINT_CIDR, 'via', NODE_B.ip, 'dev', 'eth0'],
  ['neigh', 'replace', NODE_PORT_ADDRESS.ip, 'lladdr', NODE_PORT_ADDRESS.mac, 'nud', 'permanent', 'dev', 'eth0'],
  ['neigh', 'replace', SNAT_ADDRESS.ip, 'lladdr', SNAT_ADDRESS.mac, 'nud', 'permanent', 'dev', 'eth0'],
];
export const BENCH_SYSCTLS = NODE_SYSCTLS;

/** The default NodePort range: explicit nodePorts past 2,768 Services would collide. */
const NODE_PORT_MIN = 30000;
const NODE_PORT_MAX = 32767;
export const UDP_NODE_PORT = NODE_PORT_MAX;
export const LOCAL_NODE_PORT = NODE_PORT_MAX - 1;
/** TCP NodePorts 30000 up to (not including) LOCAL_NODE_PORT. */
const TCP_NODE_PORTS = LOCAL_NODE_PORT - NODE_PORT_MIN;

/**
 * The cluster of one size: `services` TCP Services, each with a ClusterIP,
 * the first ones (up to the NodePort range) with a NodePort too; then one
 * UDP NodePort Service, one whose endpoint runs on this node, and the
 * "pong" Services of the ping-pong flows (their endpoint is the NodePort
 * address at a measured NodePort, so the pong half of a forward flow
 * passes the backend check).
 */
export interface BenchCluster {
  snapshot: ObjectSnapshot;
  options: ModelOptions;
  /** The TCP NodePorts, Service i's at index i. */
  tcpNodePorts: number[];
  /** The TCP NodePort the established flows use (the last Service that has one). */
  tcpNodePort: number;
  /** Services in the maps, helpers included. */
  servicesInMaps: number;
}

export function benchCluster(services: number, endpointsPerService: number): BenchCluster {
  const nodePorts = Math.min(services, TCP_NODE_PORTS);
  const tcp: ClusterSpec = {
    services,
    endpointsPerService,
    nodePortOf: (i) => (i < nodePorts ? NODE_PORT_MIN + i : undefined),
  };
  const snap = snapshot(tcp);
  const tcpNodePorts = Array.from({ length: nodePorts }, (_, i) => NODE_PORT_MIN + i);
  const tcpNodePort = tcpNodePorts[nodePorts - 1]!;
  const helpers: ClusterSpec[] = [
    { services: 1, endpointsPerService, protocol: 'UDP', nodePortOf: () => UDP_NODE_PORT },
    { services: 1, endpointsPerService: 1, nodePortOf: () => LOCAL_NODE_PORT, endpointsOf: () => [{ ip: LOCAL_POD, port: 8080, nodeName: NODE_NAME }] },
    ...(
      [
        [tcpNodePort, 'TCP'],
        [UDP_NODE_PORT, 'UDP'],
        [LOCAL_NODE_PORT, 'TCP'],
      ] as const
    ).map(([port, protocol]): ClusterSpec => ({ services: 1, endpointsPerService: 1, protocol, endpointsOf: () => [{ ip: NODE_PORT_ADDRESS.ip, port }] })),
  ];
  // Helpers take the indexes after the TCP Services, so their synthetic endpoints are addresses of their own.
  helpers.forEach((spec, k) => {
    snap.services.push(service(services + k, spec));
    snap.endpointSlices.push(endpointSlice(services + k, spec));
  });
  return {
    snapshot: snap,
    options: apiServerModelOptions(NODE_NAME, [NODE_PORT_ADDRESS.ip]),
    tcpNodePorts,
    tcpNodePort,
    servicesInMaps: snap.services.length,
  };
}

/** The counter of kpx_stats a path must move, once per program run; none: no counter may move (not kpx's packet). */
export type PathCounter = 'newFlow' | 'forward' | 'reply' | 'localReply' | 'none';

export interface PathCase {
  program: NetProgram;
  path: string;
  /**
   * new-flow: one run per call on a fresh flow; ping-pong: the flow's entry
   * and a mirror entry rewrite the frame back and forth, `repeat` runs per
   * call; same-frame: the program leaves the frame as it is, so every run
   * of a call is the same hit.
   */
  method: 'new-flow' | 'ping-pong' | 'same-frame';
  protocol: 'TCP' | 'UDP';
  /** remote backend, local backend, the reply of a remote backend (hand-made flow), or no Service at all. */
  flow: 'remote' | 'local' | 'reply' | 'none';
  /**
   * New flows: to a NodePort Service drawn at random for each (their table
   * entries mostly cold in the caches), rather than all to the measured one.
   */
  spread?: boolean;
  counter: PathCounter;
  verdict: number;
}

export const TC = { OK: 0, REDIRECT: 7 } as const;
export const XDP = { PASS: 2, TX: 3 } as const;

export const CASES: PathCase[] = [
  { program: 'kpx_tc_ingress', path: 'TCP SYN, new flow, random Service', method: 'new-flow', protocol: 'TCP', flow: 'remote', spread: true, counter: 'newFlow', verdict: TC.REDIRECT },
  { program: 'kpx_tc_ingress', path: 'TCP SYN, new flow, one Service', method: 'new-flow', protocol: 'TCP', flow: 'remote', counter: 'newFlow', verdict: TC.REDIRECT },
  { program: 'kpx_tc_ingress', path: 'TCP established', method: 'ping-pong', protocol: 'TCP', flow: 'remote', counter: 'forward', verdict: TC.REDIRECT },
  { program: 'kpx_tc_ingress', path: 'TCP reply', method: 'ping-pong', protocol: 'TCP', flow: 'reply', counter: 'reply', verdict: TC.REDIRECT },
  { program: 'kpx_tc_ingress', path: 'UDP new flow', method: 'new-flow', protocol: 'UDP', flow: 'remote', counter: 'newFlow', verdict: TC.REDIRECT },
  { program: 'kpx_tc_ingress', path: 'UDP established', method: 'ping-pong', protocol: 'UDP', flow: 'remote', counter: 'forward', verdict: TC.REDIRECT },
  { program: 'kpx_tc_ingress', path: 'TCP established, local backend', method: 'ping-pong', protocol: 'TCP', flow: 'local', counter: 'forward', verdict: TC.OK },
  { program: 'kpx_tc_egress', path: 'TCP reply, local backend', method: 'ping-pong', protocol: 'TCP', flow: 'local', counter: 'localReply', verdict: TC.OK },
  { program: 'kpx_tc_ingress', path: 'TCP to the node, no Service', method: 'same-frame', protocol: 'TCP', flow: 'none', counter: 'none', verdict: TC.OK },
  { program: 'kpx_tc_egress', path: 'TCP from the node, no Service', method: 'same-frame', protocol: 'TCP', flow: 'none', counter: 'none', verdict: TC.OK },
  { program: 'kpx_xdp', path: 'TCP SYN, new flow, random Service', method: 'new-flow', protocol: 'TCP', flow: 'remote', spread: true, counter: 'newFlow', verdict: XDP.TX },
  { program: 'kpx_xdp', path: 'TCP SYN, new flow, one Service', method: 'new-flow', protocol: 'TCP', flow: 'remote', counter: 'newFlow', verdict: XDP.TX },
  { program: 'kpx_xdp', path: 'TCP established', method: 'ping-pong', protocol: 'TCP', flow: 'remote', counter: 'forward', verdict: XDP.TX },
  { program: 'kpx_xdp', path: 'TCP reply', method: 'ping-pong', protocol: 'TCP', flow: 'reply', counter: 'reply', verdict: XDP.TX },
  { program: 'kpx_xdp', path: 'UDP new flow', method: 'new-flow', protocol: 'UDP', flow: 'remote', counter: 'newFlow', verdict: XDP.TX },
  { program: 'kpx_xdp', path: 'UDP established', method: 'ping-pong', protocol: 'UDP', flow: 'remote', counter: 'forward', verdict: XDP.TX },
  { program: 'kpx_xdp', path: 'TCP established, local backend (to tc)', method: 'same-frame', protocol: 'TCP', flow: 'local', counter: 'forward', verdict: XDP.PASS },
  { program: 'kpx_xdp', path: 'TCP to the node, no Service', method: 'same-frame', protocol: 'TCP', flow: 'none', counter: 'none', verdict: XDP.PASS },
];

export interface WorkerInput {
  bpffs: string;
  programIds: Record<NetProgram, number>;
  /** eth0's index in the bench namespace: every frame arrives (or, at egress, leaves) there. */
  ifindex: number;
  tcpNodePorts: number[];
  tcpNodePort: number;
  /** Runs of every case; each is one figure. */
  runs: number;
  /** Program runs per call of the ping-pong and same-frame cases (at most 254: the frame's TTL falls by one per run). */
  repeat: number;
  /**
   * Calls per run of those cases, by program type. An XDP test run with a
   * repeat count swaps the program into the XDP dispatcher and back (tens
   * of milliseconds of RCU waits, outside the timing), so XDP makes fewer.
   */
  calls: Record<'tc' | 'xdp', number>;
  /** Fresh flows (calls of one program run) per run of the new-flow cases. */
  newFlows: number;
}

export interface CaseRun {
  /** Kernel nanoseconds per program run: the median call (each the kernel's mean over its `repeat` runs, or one run for new flows). */
  ns: number;
  /** The same for the empty program, measured right after on the same frames. */
  emptyNs: number;
  /**
   * New flows only: the same for kpx_floor.o's one kpx_ct insert (of the
   * program's type), on the same frames: the least a new flow costs.
   */
  floorNs?: number;
}

export interface CaseResult {
  program: NetProgram;
  path: string;
  runs: CaseRun[];
  /** Why the figures are not for the path they claim (a wrong verdict or counter); absent when every check held. */
  invalid?: string;
}

export interface WorkerOutput {
  cases: CaseResult[];
}
