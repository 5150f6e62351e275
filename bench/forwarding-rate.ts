/**
 * NodePort forwarding rate (issue 6, scenario 5): a generator on the wire
 * floods a node's NodePort with UDP, the node forwards to the backend, and
 * the backend counts what arrives. In kpx's XDP and tc modes and in iptables
 * mode, against the same path with no translation (the generator sending to
 * the backend's own address, the node only routing, no agent).
 *
 *   gen ──▶ node-a eth0 ──▶ br0 ──▶ backend                  (local: DNAT only)
 *                 └──▶ wire bridge ──▶ node-b ──▶ backend-b   (remote: DNAT + SNAT, back out eth0)
 *
 *   node dist/bench/forwarding-rate.js [--quick]
 *
 * pktgen is not in this kernel: the generator (workers/forwarding-generator)
 * transmits with BPF_PROG_TEST_RUN live frames, which an XDP redirect on the
 * wire (workers/forwarding-wire) hands to node-a's eth0 as frames, as a NIC
 * would. Some VM kernels refuse live frames (EPERM, whatever the
 * capabilities); there an AF_PACKET sender (native/frame-sender.c) sends the
 * same frame instead, which costs the generator more per frame, and the
 * result says which generator ran and why. The backend is a UDP socket that
 * is never read (workers/forwarding-sink), so delivery costs it little. node-a's eth0 has
 * GRO (so NAPI) on in every mode, as a NIC has.
 *
 * Two rates: packets/s by the wall clock, which other load on the machine
 * lowers, and packets per second of CPU time (the generator's, which
 * includes the softirqs that do the whole path, plus ksoftirqd's): what one
 * CPU would forward, steady under load. Each mode has its own lab, all up at once, and the runs of
 * every mode take turns.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startLabAgent } from '../src/lab/agent.js';
import { createLab, NETNS_DIR, type ClusterLab, type LabProcess } from '../src/lab/lab.js';
import { udpFrame } from '../test/fixtures/packets.js';
import { buildNative } from './lib/native.js';
import { newResult, runIfMain, spread, type BenchResult, type Scenario } from './lib/report.js';

const GENERATOR_SCRIPT = fileURLToPath(new URL('./workers/forwarding-generator.js', import.meta.url));
const SINK_SCRIPT = fileURLToPath(new URL('./workers/forwarding-sink.js', import.meta.url));
const WIRE_SCRIPT = fileURLToPath(new URL('./workers/forwarding-wire.js', import.meta.url));
const execFileAsync = promisify(execFile);

const GEN = { name: 'gen', address: '172.18.0.100' };
const NODE_A_ADDRESS = '172.18.0.2';
const BACKENDS = {
  local: { name: 'backend', address: '10.244.1.10', nodeName: 'node-a', nodePort: 30500 },
  remote: { name: 'backend-b', address: '10.244.2.10', nodeName: 'node-b', nodePort: 30501 },
} as const;
type Path = keyof typeof BACKENDS;
const PATHS: Path[] = ['local', 'remote'];
const BACKEND_PORT = 5001;
const GEN_SPORT = 40000;
const PARK_DEVICE = 'park0';
/** The smallest Ethernet frame (60 bytes without FCS): the per-packet cost, not bandwidth. */
const FRAME_BYTES = 60;
const ETH_IP_UDP_HEADERS = 14 + 20 + 8;
/** Packets still in rings when the generator returns are counted once they land. */
const SETTLE_MS = 100;
/** Long enough to resolve neighbours and create the flow's conntrack entries. */
const WARMUP_SECONDS = 0.05;

type Mode = 'none' | 'xdp' | 'tc' | 'iptables';
const MODES: Array<{ mode: Mode; label: string; agentArgs?: string[] }> = [
  { mode: 'none', label: 'no agent' },
  { mode: 'xdp', label: 'kpx XDP', agentArgs: ['--mode', 'ebpf', '--xdp'] },
  { mode: 'tc', label: 'kpx tc', agentArgs: ['--mode', 'ebpf'] },
  { mode: 'iptables', label: 'iptables', agentArgs: ['--mode', 'iptables'] },
];
/** Where the generator sends: the NodePort (translated) or the backend itself (routed only). */
type Target = 'nodePort' | 'direct';

/** How frames are made: BPF_PROG_TEST_RUN live frames, or an AF_PACKET socket where the kernel refuses those. */
type Generator = { kind: 'live frames' } | { kind: 'AF_PACKET'; binary: string; liveFramesRefusal: string };

interface Sizes {
  runs: number;
  seconds: number;
  /** Also send straight to the backend with the agent running: what the datapath costs traffic it does not translate. */
  directWithAgent: boolean;
}
const FULL: Sizes = { runs: 5, seconds: 2, directWithAgent: true };
const QUICK: Sizes = { runs: 1, seconds: 1, directWithAgent: false };

function manifest(path: Path): unknown[] {
  const b = BACKENDS[path];
  const name = `fwd-${path}`;
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'default' },
      spec: { type: 'NodePort', ports: [{ name: 'p', protocol: 'UDP', port: BACKEND_PORT, targetPort: BACKEND_PORT, nodePort: b.nodePort }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'p', port: BACKEND_PORT, protocol: 'UDP' }],
      endpoints: [{ addresses: [b.address], conditions: { ready: true }, nodeName: b.nodeName }],
    },
  ];
}

/** Idle and total CPU time of the whole machine (/proc/stat "cpu" line, in ticks). */
interface MachineTicks {
  idle: number;
  total: number;
}

function machineTicks(): MachineTicks {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [, , , idle = 0, iowait = 0] = fields;
  return { idle: idle + iowait, total: fields.reduce((a, b) => a + b, 0) };
}

/** The ksoftirqd threads: softirq work they do instead of the generator is not in the generator's CPU time. */
function ksoftirqdPids(): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('ksoftirqd/');
      } catch {
        return false; // exited while listing
      }
    })
    .map(Number);
}

/** Nanoseconds the threads have run (first field of /proc/PID/schedstat). */
function runtimeNs(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]), 0);
}

async function rxPackets(lab: ClusterLab, host: string, device: string): Promise<number> {
  const r = await lab.exec(host, ['ip', '-s', '-j', 'link', 'show', device]);
  if (r.code !== 0) throw new Error(`ip -s link show ${device} on ${host}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as Array<{ stats64: { rx: { packets: number } } }>)[0]!.stats64.rx.packets;
}

interface Link {
  address: string;
  /** A veth's peer's ifindex, in the peer's netns. */
  link_index: number;
}

async function linkOf(lab: ClusterLab, host: string, device: string): Promise<Link> {
  const r = await lab.exec(host, ['ip', '-j', 'link', 'show', device]);
  if (r.code !== 0) throw new Error(`ip link show ${device} on ${host}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as Link[])[0]!;
}

/**
 * Hands the generator's frames from its wire port straight to node-a's
 * (workers/forwarding-wire says why). The wire's netns is named
 * <runId>-wire (src/lab/lab.ts); the ports are the peers of eth0 there.
 */
async function wireGeneratorToNode(lab: ClusterLab, gen: Link, node: Link): Promise<void> {
  await execFileAsync('nsenter', [
    `--net=${NETNS_DIR}/${lab.runId}-wire`, '--', process.execPath, WIRE_SCRIPT, String(gen.link_index), String(node.link_index),
  ]);
}

async function mustExec(lab: ClusterLab, host: string, argv: string[]): Promise<string> {
  const r = await lab.exec(host, argv);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} on ${host}: ${r.stderr}`);
  return r.stdout;
}

interface RunSample {
  sent: number;
  seconds: number;
  /** The generator's CPU time, forwarding work done in its softirqs included. */
  genCpuSeconds: number;
  /** Frames the backend's eth0 received. */
  delivered: number;
  /** CPU seconds the ksoftirqd threads ran (any lab's or host's softirq work). */
  ksoftirqdSeconds: number;
  machine: MachineTicks;
}

/** One mode's lab: both backends listening, node-a's agent (if any) synced. */
interface Bed {
  mode: Mode;
  lab: ClusterLab;
  genMac: string;
  nodeMac: string;
}

/** Asks the kernel, from a generator's netns, whether it runs live frames; the AF_PACKET sender if not. */
async function chooseGenerator(bed: Bed): Promise<Generator> {
  const probe = JSON.parse(await mustExec(bed.lab, GEN.name, [process.execPath, GENERATOR_SCRIPT, '--probe'])) as {
    liveFrames: boolean;
    refusal?: string;
  };
  if (probe.liveFrames) return { kind: 'live frames' };
  return { kind: 'AF_PACKET', binary: buildNative('frame-sender'), liveFramesRefusal: probe.refusal ?? 'refused' };
}

const liveFramesRefused = (g: Extract<Generator, { kind: 'AF_PACKET' }>): string =>
  `this kernel refuses BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (${g.liveFramesRefusal})`;

/** Where the live-frames generator parks its XDP program (workers/forwarding-generator says why): a veth pair left down. */
async function addParkDevice(bed: Bed): Promise<void> {
  await mustExec(bed.lab, GEN.name, ['ip', 'link', 'add', PARK_DEVICE, 'type', 'veth', 'peer', 'name', `${PARK_DEVICE}p`]);
}

async function createBed(mode: Mode, agentArgs: string[] | undefined): Promise<Bed> {
  const lab = await createLab({
    nodes: [
      { name: 'node-a', pods: [{ name: BACKENDS.local.name, address: BACKENDS.local.address }] },
      { name: 'node-b', pods: [{ name: BACKENDS.remote.name, address: BACKENDS.remote.address }] },
    ],
    externalHosts: [GEN],
  });
  try {
    for (const path of PATHS) {
      await writeFile(join(lab.manifestsDir, `fwd-${path}.json`), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: manifest(path) }));
      const sink: LabProcess = lab.spawn(BACKENDS[path].name, [process.execPath, SINK_SCRIPT, String(BACKEND_PORT)]);
      await sink.waitFor(/^listening/);
    }
    // NAPI and GRO on node-a's eth0 in every mode, as a real NIC has: without
    // an XDP program a veth would hand packets to the CPU backlog instead, and
    // XDP mode would differ from the others by more than its program.
    await mustExec(lab, 'node-a', ['ethtool', '-K', 'eth0', 'gro', 'on']);
    // Only node-a translates; node-b just routes to its pod, the same in every mode.
    if (agentArgs) await startLabAgent(lab, { node: 'node-a', extraArgs: agentArgs, logLevel: 'info' });
    const gen = await linkOf(lab, GEN.name, 'eth0');
    const node = await linkOf(lab, 'node-a', 'eth0');
    await wireGeneratorToNode(lab, gen, node);
    return { mode, lab, genMac: gen.address, nodeMac: node.address };
  } catch (err) {
    await lab.close();
    throw err;
  }
}

function generatorArgv(generator: Generator, bed: Bed, dst: string, dport: number, seconds: number): string[] {
  if (generator.kind === 'live frames') {
    return [
      process.execPath, GENERATOR_SCRIPT,
      '--device', 'eth0', '--park', PARK_DEVICE, '--src-mac', bed.genMac, '--dst-mac', bed.nodeMac,
      '--src', GEN.address, '--dst', dst, '--sport', String(GEN_SPORT), '--dport', String(dport),
      '--size', String(FRAME_BYTES), '--seconds', String(seconds),
    ];
  }
  const frame = udpFrame({
    ethSrc: bed.genMac,
    ethDst: bed.nodeMac,
    src: GEN.address,
    dst,
    sport: GEN_SPORT,
    dport,
    payload: Buffer.alloc(FRAME_BYTES - ETH_IP_UDP_HEADERS),
  });
  return [generator.binary, 'eth0', frame.toString('hex'), String(seconds)];
}

async function runOnce(
  generator: Generator, bed: Bed, path: Path, target: Target, seconds: number, ksoftirqd: readonly number[],
): Promise<RunSample> {
  const { lab } = bed;
  const backend = BACKENDS[path];
  const [dst, dport] = target === 'nodePort' ? [NODE_A_ADDRESS, backend.nodePort] : [backend.address, BACKEND_PORT];
  const deliveredBefore = await rxPackets(lab, backend.name, 'eth0');
  const machineBefore = machineTicks();
  const ksoftirqdBefore = runtimeNs(ksoftirqd);
  const out = await mustExec(lab, GEN.name, generatorArgv(generator, bed, dst, dport, seconds));
  const ksoftirqdNs = runtimeNs(ksoftirqd) - ksoftirqdBefore;
  const machineAfter = machineTicks();
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const generated = JSON.parse(out) as { sent: number; seconds: number; cpuSeconds: number };
  return {
    sent: generated.sent,
    seconds: generated.seconds,
    genCpuSeconds: generated.cpuSeconds,
    delivered: (await rxPackets(lab, backend.name, 'eth0')) - deliveredBefore,
    ksoftirqdSeconds: ksoftirqdNs / 1e9,
    machine: { idle: machineAfter.idle - machineBefore.idle, total: machineAfter.total - machineBefore.total },
  };
}

interface Condition {
  bed: Bed;
  path: Path;
  target: Target;
  samples: RunSample[];
}

/** Packets/s delivered, by the wall clock. */
const rate = (s: RunSample): number => s.delivered / s.seconds;
/**
 * Packets delivered per second of CPU time: what one CPU doing nothing else
 * would forward. The kernel does the whole path in the softirqs the
 * generator's sends raise, charged to the generator; what it leaves to
 * ksoftirqd under load is added (any other softirq work there is too, so
 * this errs low), so the figure holds when other load takes CPU from the
 * generator, where packets/s does not.
 */
const ratePerCpu = (s: RunSample): number => s.delivered / (s.genCpuSeconds + s.ksoftirqdSeconds);
const sumOf = (samples: readonly RunSample[], f: (s: RunSample) => number): number => samples.reduce((n, s) => n + f(s), 0);

export const scenario: Scenario = async (quick) => {
  const sizes = quick ? QUICK : FULL;
  const result = newResult('forwarding-rate', 'NodePort forwarding rate: UDP packets/s delivered to the backend', quick, {
    ...sizes,
    frameBytes: FRAME_BYTES,
    flows: 1,
    modes: MODES.map((m) => m.label),
  });

  // Every mode's lab is up at once and the runs take turns, so a change in
  // the machine's background load lands on every mode alike.
  const beds: Bed[] = [];
  try {
    const created = await Promise.allSettled(MODES.map(({ mode, agentArgs }) => createBed(mode, agentArgs)));
    for (const c of created) if (c.status === 'fulfilled') beds.push(c.value);
    const failed = created.find((c) => c.status === 'rejected');
    if (failed) throw failed.reason;
    const generator = await chooseGenerator(beds[0]!);
    if (generator.kind === 'live frames') for (const bed of beds) await addParkDevice(bed);
    else process.stdout.write(`forwarding-rate: live-frames generator skipped: ${liveFramesRefused(generator)}; AF_PACKET sends instead\n`);
    const conditions: Condition[] = beds.flatMap((bed) =>
      PATHS.flatMap((path) => {
        const targets: Target[] = bed.mode === 'none' ? ['direct'] : sizes.directWithAgent ? ['nodePort', 'direct'] : ['nodePort'];
        return targets.map((target) => ({ bed, path, target, samples: [] as RunSample[] }));
      }),
    );
    const ksoftirqd = ksoftirqdPids();
    for (const c of conditions) await runOnce(generator, c.bed, c.path, c.target, WARMUP_SECONDS, ksoftirqd);
    for (let round = 0; round < sizes.runs; round++) {
      for (let i = 0; i < conditions.length; i++) {
        const c = conditions[(i + round) % conditions.length]!;
        c.samples.push(await runOnce(generator, c.bed, c.path, c.target, sizes.seconds, ksoftirqd));
      }
    }
    report(result, conditions, generator);
  } finally {
    for (const bed of beds) await bed.lab.close();
  }
  return result;
};

function report(result: BenchResult, conditions: readonly Condition[], generator: Generator): void {
  const labelOf = (mode: Mode) => MODES.find((m) => m.mode === mode)!.label;
  const median = (c: Condition, f: (s: RunSample) => number) => spread(c.samples.map(f), 0).median;
  for (const path of PATHS) {
    const baseline = conditions.find((c) => c.path === path && c.bed.mode === 'none')!;
    for (const c of conditions.filter((c) => c.path === path)) {
      const pps = spread(c.samples.map(rate), 0);
      const perCpu = spread(c.samples.map(ratePerCpu), 0);
      const sum = (f: (s: RunSample) => number) => sumOf(c.samples, f);
      result.rows.push({
        backend: path,
        mode: labelOf(c.bed.mode),
        to: c.target === 'nodePort' ? `nodePort ${BACKENDS[path].nodePort}` : 'pod IP (routed)',
        'packets/s': pps.median,
        min: pps.min,
        max: pps.max,
        'vs untranslated': +(pps.median / median(baseline, rate)).toFixed(3),
        'per CPU-s': perCpu.median,
        // Half the range between the fastest and slowest run, relative to the median.
        'per CPU ±%': +((50 * (perCpu.max - perCpu.min)) / perCpu.median).toFixed(1),
        'per CPU vs untr.': +(perCpu.median / median(baseline, ratePerCpu)).toFixed(3),
        'delivered/sent': +(sum((s) => s.delivered) / sum((s) => s.sent)).toFixed(3),
        'gen CPU %': +((100 * sum((s) => s.genCpuSeconds)) / sum((s) => s.seconds)).toFixed(0),
      });
    }
  }

  const modeIndex = (mode: Mode) => MODES.findIndex((m) => m.mode === mode);
  // x is the mode's index: the untranslated path (no agent, pod IP) at 0, then each mode's NodePort.
  const pointsOf = (path: Path, f: (s: RunSample) => number): Array<[number, number]> =>
    conditions
      .filter((c) => c.path === path && (c.target === 'nodePort' || c.bed.mode === 'none'))
      .map((c): [number, number] => [modeIndex(c.bed.mode), median(c, f)]);
  const xLabel = MODES.map((m, i) => `${i} ${m.mode === 'none' ? 'untranslated' : m.label}`).join(', ');
  result.panels.push(
    {
      title: 'NodePort forwarding rate, wall clock (UDP, 60-byte frames, one flow)',
      xLabel,
      yLabel: 'packets/s delivered to the backend',
      logX: false,
      series: PATHS.map((path) => ({ name: `${path} backend`, points: pointsOf(path, rate) })),
    },
    {
      title: 'NodePort forwarding rate per CPU (packets per CPU-second: generator and ksoftirqd, the whole path included)',
      xLabel,
      yLabel: 'packets per CPU-second',
      logX: false,
      series: PATHS.map((path) => ({ name: `${path} backend`, points: pointsOf(path, ratePerCpu) })),
    },
  );

  const all = conditions.flatMap((c) => c.samples);
  const idle = sumOf(all, (s) => s.machine.idle) / sumOf(all, (s) => s.machine.total);
  const ksoftirqd = sumOf(all, (s) => s.ksoftirqdSeconds) / sumOf(all, (s) => s.genCpuSeconds);
  result.parameters.machineIdleDuringRuns = +idle.toFixed(3);
  result.parameters.ksoftirqdPerGeneratorCpu = +ksoftirqd.toFixed(4);
  result.parameters.generator = generator.kind;
  result.notes.push(
    generator.kind === 'live frames'
      ? 'generator: BPF_PROG_TEST_RUN live frames (XDP_TX out of its eth0)'
      : `generator: an AF_PACKET socket (sendmmsg) out of its eth0, because ${liveFramesRefused(generator)}; it costs more CPU per frame than live frames, so per CPU-s and the ratios are lower than with live frames and compare with runs of the same generator only`,
    `${result.machine.cores} cores shared by everything: the generator's sends do the whole path (generator, node-a, wire and node-b for the remote backend, the backend's socket) in their own softirqs on one CPU; ksoftirqd ran ${(100 * ksoftirqd).toFixed(1)}% as long as the generator; the machine was ${(100 * idle).toFixed(0)}% idle during the runs`,
    "packets/s is by the wall clock and falls with any other load on the machine (gen CPU % < 100: the generator did not get a whole CPU); per CPU-s divides by CPU time instead (the generator's, whose softirqs do the path, plus ksoftirqd's) and is the steadier comparison; delivered/sent < 1: softirq work fell behind (deferred to ksoftirqd while the generator kept sending) and frames were dropped on the way",
    'the path outside node-a (generator, wire, node-b, backend socket) is the same in every mode and is in the CPU time too, so the ratios understate the difference node-a makes',
    'local backend: kpx translates with DNAT only; iptables (kube-proxy rules) also masquerades NodePort traffic (externalTrafficPolicy Cluster). kpx XDP passes local-backend packets to tc, which translates (two lookups)',
    'pod IP (routed) rows with an agent: traffic to the pod address that no rule translates, to show what the datapath costs traffic it leaves alone (iptables: conntrack on every packet)',
  );
}

await runIfMain(import.meta.url, scenario);
