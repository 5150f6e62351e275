/**
 * The lab the socket benchmarks share (connect-rate, socket-program-cost):
 * the single-node lab with the client pod and a server pod, N synthetic
 * Services installed by the real agent from the lab's manifest folder, and
 * the native client and server (bench/native/) pinned to one CPU.
 *
 * The server pod holds ten addresses, the ten endpoints of the first and the
 * last Service; every other Service's endpoints are synthetic. Two extra UDP
 * Services (indexes N and N + 1, so they sort after every TCP one in
 * KUBE-SERVICES), for the sendmsg program, have the same ten addresses, the
 * second on the next port: their backends differ.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { kpxArgv } from '../../src/lab/agent.js';
import { createLab, type Lab, type LabProcess } from '../../src/lab/lab.js';
import { clusterIP, endpointSlice, kubeServicesIndexes, service, SERVICE_PORT, TARGET_PORT, type ClusterSpec, type Endpoint } from './cluster.js';
import { buildNative } from './native.js';

export const ENDPOINTS_PER_SERVICE = 10;
/** Client, server and their softirq work share this CPU, so a run measures one CPU's worth of work. */
export const BENCH_CPU = 0;
export const SERVER_ADDRESSES = Array.from({ length: ENDPOINTS_PER_SERVICE }, (_, j) => `10.244.0.${20 + j}`);
const SERVER_POD = { name: 'server', address: SERVER_ADDRESSES[0]! };
const SERVER_ENDPOINTS: Endpoint[] = SERVER_ADDRESSES.map((ip) => ({ ip, port: TARGET_PORT }));
const SERVER_ENDPOINTS_NEXT_PORT: Endpoint[] = SERVER_ADDRESSES.map((ip) => ({ ip, port: TARGET_PORT + 1 }));
/** A 10,000-Service iptables-restore takes a while; startLabAgent's own wait is shorter. */
const SYNC_TIMEOUT_MS = 180_000;

export type Mode = 'ebpf' | 'iptables';

export interface ServiceLab {
  lab: Lab;
  clientBinary: string;
}

/** Where a client connects: an address list (taken in turn) and a port. */
export interface Destination {
  addresses: string[];
  port: number;
}

export const DIRECT: Destination = { addresses: SERVER_ADDRESSES, port: TARGET_PORT };

export function serviceDestination(index: number): Destination {
  return { addresses: [clusterIP(index)], port: SERVICE_PORT };
}

/** The first UDP Service of a lab with `services` TCP Services. */
export function udpServiceDestination(services: number): Destination {
  return serviceDestination(services);
}

/** Both UDP Services of a lab with `services` TCP Services, to be taken in turn. */
export function udpServicesDestination(services: number): Destination {
  return { addresses: [clusterIP(services), clusterIP(services + 1)], port: SERVICE_PORT };
}

export interface TcpRun {
  connections: number;
  seconds: number;
  p50_us: number;
  p99_us: number;
}

export interface UdpRun {
  datagrams: number;
  seconds: number;
}

/** Builds the native programs, then the lab with the server running; the caller closes the lab. */
export async function createServiceLab(): Promise<ServiceLab> {
  const clientBinary = buildNative('connect-loop');
  const serverBinary = buildNative('echo-server');
  const lab = await createLab({ pods: [SERVER_POD] });
  try {
    // The node reaches them through ARP on its bridge, like the pod's first address.
    for (const address of SERVER_ADDRESSES.slice(1)) {
      const r = await lab.exec(SERVER_POD.name, ['ip', 'addr', 'add', `${address}/32`, 'dev', 'eth0']);
      if (r.code !== 0) throw new Error(`adding ${address} to the server pod: ${r.stderr}`);
    }
    // Timestamps from the clock, without the per-destination random offset:
    // the server's TIME_WAIT for a 4-tuple then accepts the next SYN on it
    // whether that connection was made to the backend's address (direct,
    // ebpf) or to a ClusterIP (iptables, DNAT after the client picked its
    // offset). With offsets, a run that mixes the two gets SYNs refused by
    // PAWS and retransmitted.
    const sysctl = await lab.exec('client', ['sysctl', '-qw', 'net.ipv4.tcp_timestamps=2']);
    if (sysctl.code !== 0) throw new Error(`tcp_timestamps in the client pod: ${sysctl.stderr}`);
    const server = lab.spawn(SERVER_POD.name, ['taskset', '-c', String(BENCH_CPU), serverBinary, String(TARGET_PORT)]);
    await server.waitFor(/^listening/);
    return { lab, clientBinary };
  } catch (err) {
    await lab.close();
    throw err;
  }
}

function clusterSpec(services: number, protocol: 'TCP' | 'UDP'): ClusterSpec {
  // The Services benchmarks connect to: the first and last by index, and the first and last KUBE-SERVICES lists.
  const order = kubeServicesIndexes(services);
  const served = new Set([0, services - 1, order[0], order.at(-1)]);
  return {
    services,
    endpointsPerService: ENDPOINTS_PER_SERVICE,
    endpointsOf: (i) => {
      if (protocol === 'UDP') return i === services + 1 ? SERVER_ENDPOINTS_NEXT_PORT : SERVER_ENDPOINTS;
      return served.has(i) ? SERVER_ENDPOINTS : undefined;
    },
    protocol,
  };
}

/** N TCP Services and the two UDP ones, as one JSON List in the manifest folder. */
export async function writeServices(lab: Lab, services: number): Promise<void> {
  const tcp = clusterSpec(services, 'TCP');
  const udp = clusterSpec(services, 'UDP');
  const items: object[] = [];
  for (let i = 0; i < services; i++) items.push(service(i, tcp), endpointSlice(i, tcp));
  for (const i of [services, services + 1]) items.push(service(i, udp), endpointSlice(i, udp));
  // `origin` is what the manifest source adds when it reads a file, not part of the object.
  const objects = items.map((item) => Object.fromEntries(Object.entries(item).filter(([key]) => key !== 'origin')));
  await writeFile(join(lab.manifestsDir, 'services.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
}

/**
 * Removes whatever the previous agent installed (pins, links, the node's
 * iptables rules), then runs the agent in `mode` until its first sync has
 * reached the kernel and stops it: the dataplane keeps serving, and an idle
 * agent's periodic resync cannot land in a measurement. Returns the seconds
 * from starting the agent to that sync.
 */
export async function installServices(bed: ServiceLab, mode: Mode): Promise<number> {
  const { lab } = bed;
  const cleanup = await lab.exec('node', kpxArgv(['--log-level', 'warn', 'cleanup', '--bpffs', lab.bpffsPath, '--cgroup', lab.cgroupPath]));
  if (cleanup.code !== 0) throw new Error(`kpx cleanup: ${cleanup.stderr}`);
  const started = performance.now();
  const agent = await startAgent(lab, mode);
  const seconds = (performance.now() - started) / 1000;
  await agent.close();
  return seconds;
}

/** startLabAgent, with room for a slow first sync at 10,000 Services. */
async function startAgent(lab: Lab, mode: Mode): Promise<LabProcess> {
  const node = lab.nodes[0]!;
  const agent = lab.spawn(
    node.host,
    kpxArgv([
      '--log-level', 'info', 'run', '--manifests', lab.manifestsDir, '--cgroup', node.cgroupPath, '--bpffs', node.bpffsPath,
      '--node-name', node.name, '--interfaces', 'none', '--mode', mode,
    ]),
  );
  try {
    await agent.waitFor(/"msg":"synced"/, SYNC_TIMEOUT_MS);
  } catch (err) {
    await agent.close();
    throw err;
  }
  return agent;
}

async function runClient(bed: ServiceLab, args: string[], seconds: number): Promise<unknown> {
  const argv = ['taskset', '-c', String(BENCH_CPU), bed.clientBinary, ...args, String(seconds)];
  // In the lab's cgroup: the socket programs see the client's connect() and sendmsg().
  const r = await bed.lab.exec('client', argv, { inCgroup: true, timeoutMs: seconds * 1000 + 15_000 });
  if (r.code !== 0) throw new Error(`${args.join(' ')}: exit ${r.code}${r.timedOut ? ' (timed out)' : ''}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout);
}

const destinationArg = (to: Destination) => `${to.addresses.join(',')}:${to.port}`;

/**
 * One client run over several destinations, taken in turn connection by
 * connection (bench/native/connect-loop.c); one TcpRun per destination, in
 * order, its seconds being the time its own connections took.
 */
export async function runTcpInterleaved(bed: ServiceLab, to: Destination[], seconds: number): Promise<TcpRun[]> {
  const out = (await runClient(bed, ['tcp', ...to.map(destinationArg)], seconds)) as { destinations: TcpRun[] };
  return out.destinations;
}

export async function runTcp(bed: ServiceLab, to: Destination, seconds: number): Promise<TcpRun> {
  return (await runTcpInterleaved(bed, [to], seconds))[0]!;
}

export function runUdp(bed: ServiceLab, to: Destination, seconds: number): Promise<UdpRun> {
  return runClient(bed, ['udp', destinationArg(to)], seconds) as Promise<UdpRun>;
}

/** The server pod's TCP counters that say whether fresh 4-tuples really were fresh. */
export async function serverTcpCounters(lab: Lab): Promise<Record<string, number>> {
  const names = ['TcpExtTW', 'TcpExtPAWSTimewait', 'TcpExtTCPTimeWaitOverflow'];
  // Absolute values, history file untouched: nstat's history is per user, not per namespace.
  const r = await lab.exec(SERVER_POD.name, ['nstat', '-asz', ...names]);
  if (r.code !== 0) throw new Error(`nstat: ${r.stderr}`);
  const counters: Record<string, number> = {};
  for (const [name, value] of r.stdout.split('\n').map((l) => l.split(/\s+/))) if (name && names.includes(name)) counters[name] = Number(value);
  return counters;
}

/** The ClusterIPs that KUBE-SERVICES in the node's nat table jumps on, in the order a packet meets them (iptables mode). */
export async function kubeServicesOrder(lab: Lab): Promise<string[]> {
  const r = await lab.exec('node', ['iptables', '-w', '-t', 'nat', '-S', 'KUBE-SERVICES']);
  if (r.code !== 0) throw new Error(`iptables -S KUBE-SERVICES: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('-A KUBE-SERVICES ') && l.includes('cluster IP'))
    .map((l) => / -d ([0-9.]+)\/32 /.exec(l)?.[1] ?? '');
}
