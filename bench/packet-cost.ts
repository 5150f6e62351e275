/**
 * Per-packet cost of the tc and XDP programs (issue 6, scenario 4): the
 * kernel's own timing of BPF_PROG_TEST_RUN on kpx_net.o's programs, with
 * the maps holding 1,000 / 10,000 / 100,000 Services, minus the timing of
 * a program that returns at once. Paths: a new flow (TCP SYN, UDP), an
 * established flow, the reply of a remote backend, and the local-backend
 * paths. Every figure is checked: the verdict of every call, and kpx_stats,
 * whose counter for the path must rise by the number of program runs while
 * no other moves (a figure whose check fails is reported as invalid).
 *
 * The maps are filled through the real path (ModelCache, Compiler, diff,
 * EbpfDatapath.sync) in a test bed of its own (test/fixtures/bpf-test-bed.ts:
 * network namespace, bpffs, cleanup); the programs run in a worker process
 * inside that namespace (bench/workers/packet-cost-worker.ts), since their
 * FIB lookups happen in the caller's namespace.
 *
 *   node dist/bench/packet-cost.js [--quick]
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ModelCache } from '../src/model/incremental.js';
import { bpfTestBedUnavailable, createBpfTestBed, type NetProgram } from '../test/fixtures/bpf-test-bed.js';
import { formatNumber, newResult, runIfMain, spread, type BenchResult, type Scenario, type Series } from './lib/report.js';
import { BENCH_SYSCTLS, BENCH_TOPOLOGY, CASES, benchCluster, type CaseResult, type WorkerInput, type WorkerOutput } from './workers/packet-cost-plan.js';

const WORKER = fileURLToPath(new URL('./workers/packet-cost-worker.js', import.meta.url));
const TARGET_NS = 100;
/** How far apart the smallest and the largest size may be and still count as flat. */
const FLAT_NS = 10;
const ENDPOINTS_PER_SERVICE = 2;
/**
 * The same map sizes at every Service count, big enough for the largest:
 * a hash map's bucket count follows max_entries, so sizing to each count
 * would change the lookups being compared.
 */
const MAP_SIZES = { kpx_frontends: 262144, kpx_services: 131072, kpx_slots: 262144, kpx_backends: 262144 };

type Settings = Pick<WorkerInput, 'runs' | 'repeat' | 'calls' | 'newFlows'> & { sizes: number[] };

const FULL: Settings = { sizes: [1_000, 10_000, 100_000], runs: 7, repeat: 254, calls: { tc: 200, xdp: 10 }, newFlows: 500 };
const QUICK: Settings = { sizes: [1_000, 10_000], runs: 3, repeat: 254, calls: { tc: 40, xdp: 4 }, newFlows: 200 };

async function measureSize(services: number, settings: Settings): Promise<{ output: WorkerOutput; servicesInMaps: number }> {
  const cluster = benchCluster(services, ENDPOINTS_PER_SERVICE);
  const model = new ModelCache().build(cluster.snapshot, cluster.options);
  if (model.rejected.length > 0) throw new Error(`the bench cluster has rejected objects: ${model.rejected[0]!.reason}`);
  const bed = await createBpfTestBed({ ip: BENCH_TOPOLOGY, sysctls: BENCH_SYSCTLS, mapSizes: MAP_SIZES });
  try {
    bed.sync(model);
    const programIds = {} as Record<NetProgram, number>;
    for (const program of ['kpx_tc_ingress', 'kpx_tc_egress', 'kpx_xdp'] as const) programIds[program] = bed.programId(program);
    const input: WorkerInput = {
      bpffs: bed.bpffs,
      programIds,
      ifindex: bed.ifindex('eth0'),
      tcpNodePorts: cluster.tcpNodePorts,
      tcpNodePort: cluster.tcpNodePort,
      runs: settings.runs,
      repeat: settings.repeat,
      calls: settings.calls,
      newFlows: settings.newFlows,
    };
    const stdout = execFileSync('nsenter', [`--net=${bed.netnsPath}`, '--', process.execPath, WORKER, JSON.stringify(input)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 16 << 20,
    });
    return { output: JSON.parse(stdout) as WorkerOutput, servicesInMaps: cluster.servicesInMaps };
  } finally {
    bed.close();
  }
}

const label = (c: { program: NetProgram; path: string }) => `${c.program} ${c.path}`;

export const scenario: Scenario = async (quick) => {
  const unavailable = bpfTestBedUnavailable();
  if (unavailable) throw new Error(`packet-cost: ${unavailable}`);
  const settings = quick ? QUICK : FULL;
  const result: BenchResult = newResult('packet-cost', 'Per-packet cost of the tc/XDP programs, ns above an empty program', quick, {
    ...settings,
    endpointsPerService: ENDPOINTS_PER_SERVICE,
    mapSizes: MAP_SIZES,
  });
  /** ns above empty, median of the runs, by case and Service count; undefined when invalid. */
  const above = new Map<string, Map<number, number | undefined>>();
  for (const services of settings.sizes) {
    const { output, servicesInMaps } = await measureSize(services, settings);
    for (const c of output.cases) {
      const cell = summarize(c);
      above.set(label(c), (above.get(label(c)) ?? new Map()).set(services, cell?.above.median));
      result.rows.push({
        program: c.program,
        path: c.path,
        services,
        'in maps': servicesInMaps,
        'ns/packet': cell?.ns.median ?? null,
        'empty ns': cell?.empty.median ?? null,
        'ns above empty': cell?.above.median ?? null,
        'above min': cell?.above.min ?? null,
        'above max': cell?.above.max ?? null,
        'one ct insert above empty': cell?.floor?.median ?? null,
        runs: c.runs.length,
        check: c.invalid ? `INVALID: ${c.invalid}` : 'ok',
      });
    }
  }

  const series: Series[] = [];
  for (const c of CASES) {
    const bySize = above.get(label(c)) ?? new Map<number, number | undefined>();
    const values = settings.sizes.map((n) => bySize.get(n));
    const valid = values.every((v): v is number => v !== undefined);
    series.push({ name: label(c), points: settings.sizes.flatMap((n, i) => (values[i] === undefined ? [] : [[n, values[i]] as [number, number]])) });
    if (!valid) {
      result.targets.push({ what: `${label(c)}: ns above empty`, target: `<= ${TARGET_NS} ns, flat`, measured: 'invalid', met: false });
      continue;
    }
    const max = Math.max(...values);
    const delta = values[values.length - 1]! - values[0]!;
    result.targets.push({
      what: `${label(c)}: ns above empty, worst of ${settings.sizes.map((n) => n.toLocaleString('en-US')).join(' / ')} Services; change from fewest to most`,
      target: `<= ${TARGET_NS} ns, within ±${FLAT_NS} ns`,
      measured: `${formatNumber(max)} ns; ${delta >= 0 ? '+' : ''}${formatNumber(delta)} ns`,
      met: max <= TARGET_NS && Math.abs(delta) <= FLAT_NS,
    });
  }
  result.panels.push({ title: 'Per-packet cost above an empty program', xLabel: 'Services', yLabel: 'ns per packet above empty', logX: true, series });

  result.notes.push(
    `Kernel timing of BPF_PROG_TEST_RUN (its own clock around the program runs), minus an empty program of the same type ("r0 = TC_ACT_OK or XDP_PASS; exit") measured right after on the same frames; median, min and max over ${settings.runs} runs.`,
    `Established, reply and local paths: each figure is the median of ${settings.calls.tc} calls (XDP: ${settings.calls.xdp}, as each XDP call with a repeat count swaps the program in and out of the XDP dispatcher, tens of ms outside the timing) of ${settings.repeat} program runs, whose mean the kernel reports. The test run repeats on the frame the previous run rewrote, so each flow has a mirror kpx_ct entry (keyed by the rewritten tuple, rewriting back, with the flow's flags and a backend that passes the check): every run is a hit on the path. ${settings.repeat} is the most a TTL of 255 allows, as redirected frames lose one per run.`,
    `New flows: ${settings.newFlows} calls of one run each, every one a flow never seen (fresh source port), the median call; the empty program is timed the same way, so the timer's own cost cancels. The flows are removed after each run. "random Service": each SYN to a NodePort Service drawn at random, whose map entries are mostly out of the caches (and TLB) after the bench's own work between calls: a cold first packet. "one Service": every SYN to the same Service, all warm. UDP: one Service.`,
    `Services: that many TCP Services with a ClusterIP and ${ENDPOINTS_PER_SERVICE} endpoints each, the first 2,766 also with a NodePort (the default NodePort range holds no more), plus 5 helpers (a UDP NodePort, a NodePort with a local endpoint, 3 "pong" Services whose endpoint is the NodePort address, for the mirror entries). Map sizes are fixed for every count.`,
    'The NodePort address (172.18.0.50) is routed on eth0 but not assigned in the bench namespace, and the reply flows are written by hand with a non-local SNAT address (172.18.0.60): the mirror half of a flow does a FIB lookup towards those addresses, which a local address would answer with "not forwarded". The programs never ask whether they are local. Flows of remote and local backends are created by their first packet through the program.',
    '"one ct insert above empty" (new flows): kpx_floor.o\'s program of the same type, which parses the frame and inserts its kpx_ct entry and does nothing else, timed the same way on the same frames. A new flow inserts two entries (forward, and reply with BPF_NOEXIST to claim its SNAT port), and connection tracking is how kube-proxy keeps NodePort flows: this floor is the least a new flow can cost here, whatever the design.',
    'kpx_ct holds only the measured flows, so the established paths see a small conntrack table at every Service count.',
    'kpx_xdp "TCP established, local backend" is XDP finding the flow and passing the frame on to tc unchanged; tc then does the "kpx_tc_ingress TCP established, local backend" work.',
  );
  return result;
};

function summarize(c: CaseResult) {
  if (c.invalid || c.runs.length === 0) return undefined;
  return {
    ns: spread(c.runs.map((r) => r.ns), 1),
    empty: spread(c.runs.map((r) => r.emptyNs), 1),
    above: spread(c.runs.map((r) => r.ns - r.emptyNs), 1),
    floor: c.runs.every((r) => r.floorNs !== undefined) ? spread(c.runs.map((r) => r.floorNs! - r.emptyNs), 1) : undefined,
  };
}

await runIfMain(import.meta.url, scenario);
