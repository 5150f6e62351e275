/**
 * Scenario 6, agent memory and CPU: the real agent (the CLI, ebpf mode)
 * watching a fake API server that holds N Services × 10 endpoints. Measured:
 * time from start to the first sync, RSS and CPU time after it, then during a
 * steady 100 EndpointSlice changes per second: RSS, peak RSS, CPU as a share
 * of one core, and event → kernel latency of a sample of those changes (from
 * the API server's write until the pinned map holds the new backend).
 *
 * The agent runs in the root netns with --interfaces none (see
 * src/lab/agent.ts: its API server is on loopback here); it sends no traffic
 * and attaches only to the lab's cgroup.
 *
 *   node dist/bench/agent-footprint.js [--quick]
 */
import { closeSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { backendValue, frontendKey, frontendValue, IPPROTO, slotKey, slotValue, u32Key } from '../src/contract/codecs.js';
import { mapLookup, objGet } from '../src/datapath/libbpf.js';
import { startLabAgent } from '../src/lab/agent.js';
import { createLab } from '../src/lab/lab.js';
import { startFakeApiServer, type KubeObject } from '../test/fixtures/fake-apiserver.js';
import { clusterIP, endpointSlice, service, SERVICE_PORT, type ClusterSpec } from './lib/cluster.js';
import { newResult, percentile, runIfMain, type Row, type Scenario } from './lib/report.js';

const ENDPOINTS_PER_SERVICE = 10;
const CHANGES_PER_SECOND = 100;
/** One change in SAMPLE_EVERY is followed into the kernel; polling every change would cost the agent CPU it is being measured on. */
const SAMPLE_EVERY = 10;
/** A sampled change not in the kernel by then counts as lost. */
const SAMPLE_TIMEOUT_MS = 5000;
const RSS_TARGET_MB = 150;

interface Size {
  services: number;
  steadySeconds: number;
  singleChanges: number;
}
/** The target is stated at 10,000 Services; 1,000 gives the curve its slope. */
const FULL: Size[] = [
  { services: 1_000, steadySeconds: 10, singleChanges: 20 },
  { services: 10_000, steadySeconds: 30, singleChanges: 20 },
];
const QUICK: Size[] = [{ services: 1_000, steadySeconds: 5, singleChanges: 10 }];
/** Longer than --min-sync-period (100 ms): a lone change finds the agent idle. */
const QUIET_MS = 150;
/**
 * From the first sync to the first RSS sample. The agent collects its
 * garbage right after a sync (src/heap.ts) and V8 hands the freed pages
 * back from a background thread some milliseconds later: sampled at once,
 * RSS at 10,000 Services read 165-185 MB where 50 ms later and from then
 * on it was 150. That moment is the sync's peak, which VmHWM reports.
 */
const SETTLE_MS = 1000;

const CLOCK_TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

interface Usage {
  rssKB: number;
  /** VmHWM: the peak RSS since the process started. */
  peakKB: number;
  /** User plus system CPU time since the process started. */
  cpuMs: number;
}

function usage(pid: number): Usage {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kB = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  // Fields after the command name, which may itself hold spaces and parentheses: utime and stime are fields 14 and 15.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return { rssKB: kB('VmRSS'), peakKB: kB('VmHWM'), cpuMs: (ticks * 1000) / CLOCK_TICKS_PER_SECOND };
}

/** Decimal megabytes, as the target states them. */
const mb = (kB: number) => +((kB * 1024) / 1e6).toFixed(1);
const round = (v: number, digits = 1) => +v.toFixed(digits);

/** The API server's copy of a benchmark object: cluster.ts's `origin` is the manifest source's, not Kubernetes'. */
function apiObject<T extends { origin?: string }>(obj: T): KubeObject {
  const { origin: _origin, ...rest } = obj;
  return rest as KubeObject;
}

/** Changes followed into the kernel: event → kernel latencies, and how many never arrived. */
interface Followed {
  latenciesMs: number[];
  lost: number;
}

interface Measurement {
  services: number;
  firstSyncMs: number;
  afterSync: Usage;
  changesPerSecond: number;
  steadyMs: number;
  steadyCpuMs: number;
  atEnd: Usage;
  /** The highest RSS seen after the first sync: sampled each second, and at the end. */
  maxRssKB: number;
  /** The sampled changes at the steady rate. */
  steady: Followed;
  /** Lone changes, each after a quiet spell. */
  single: Followed;
}

async function measure({ services, steadySeconds, singleChanges }: Size): Promise<Measurement> {
  const spec: ClusterSpec = { services, endpointsPerService: ENDPOINTS_PER_SERVICE };
  const lab = await createLab({ pods: [] });
  try {
    const api = await startFakeApiServer();
    lab.trackCleanup(() => api.close());
    for (let i = 0; i < services; i++) {
      api.create('services', apiObject(service(i, spec)));
      api.create('endpointslices', apiObject(endpointSlice(i, spec)));
    }
    const kubeconfig = join(lab.manifestsDir, 'kubeconfig');
    await api.writeKubeconfig(kubeconfig);

    const startedAt = performance.now();
    const agent = await startLabAgent(lab, { kubeconfig, logLevel: 'info' });
    const firstSyncMs = performance.now() - startedAt;
    await sleep(SETTLE_MS);
    const afterSync = usage(agent.pid);

    // The probe reads the kernel directly: slot 0 of a Service is its endpoint 0, the
    // one each change moves (its new address, 10.1.x.x, sorts before every other).
    const [frontendsFd, slotsFd, backendsFd] = ['kpx_frontends', 'kpx_slots', 'kpx_backends'].map((m) => objGet(join(lab.bpffsPath, m))) as [number, number, number];
    lab.trackCleanup(() => [frontendsFd, slotsFd, backendsFd].forEach((fd) => closeSync(fd)));
    const serviceIdOf = (i: number): number => {
      const fe = mapLookup(frontendsFd, frontendKey.encode({ addr: clusterIP(i), port: SERVICE_PORT, proto: IPPROTO.TCP }), frontendValue.size);
      if (!fe) throw new Error(`Service ${i} has no frontend in the kernel`);
      return frontendValue.decode(fe).service_id;
    };
    const backendOfSlot0 = (serviceId: number): string | undefined => {
      const slot = mapLookup(slotsFd, slotKey.encode({ service_id: serviceId, slot: 0 }), slotValue.size);
      if (!slot) return undefined;
      const backend = mapLookup(backendsFd, u32Key.encode({ id: slotValue.decode(slot).backend_id }), backendValue.size);
      return backend && backendValue.decode(backend).addr;
    };

    /** Sampled changes on their way to the kernel; each is counted in the phase it belongs to. */
    const pending: Array<{ serviceId: number; want: string; at: number; into: Followed }> = [];
    const check = () => {
      const now = performance.now();
      for (let k = pending.length - 1; k >= 0; k--) {
        const p = pending[k]!;
        if (backendOfSlot0(p.serviceId) === p.want) p.into.latenciesMs.push(now - p.at);
        else if (now - p.at > SAMPLE_TIMEOUT_MS) p.into.lost++;
        else continue;
        pending.splice(k, 1);
      }
    };
    const drain = async () => {
      const until = performance.now() + SAMPLE_TIMEOUT_MS + 100;
      while (pending.length > 0 && performance.now() < until) await sleep(1);
      check();
      for (const p of pending.splice(0)) p.into.lost++;
    };
    /** Moves endpoint 0 of Service i to the generation's address; with `into`, follows it to the kernel. */
    const change = (i: number, generation: number, into?: Followed) => {
      const slice = endpointSlice(i, spec, generation);
      const serviceId = into ? serviceIdOf(i) : 0;
      const at = performance.now();
      api.update('endpointslices', apiObject(slice));
      if (into) pending.push({ serviceId, want: slice.endpoints?.[0]?.addresses?.[0] ?? '', at, into });
    };

    let maxRssKB = afterSync.rssKB;
    const poller = setInterval(check, 1);
    const rssSampler = setInterval(() => { maxRssKB = Math.max(maxRssKB, usage(agent.pid).rssKB); }, 1000);
    try {
      // Paced against the clock, not by sleeping a fixed interval after each change: a late change
      // is followed at once by the next one due, so the rate over the period is really 100/s.
      const steady: Followed = { latenciesMs: [], lost: 0 };
      const intervalMs = 1000 / CHANGES_PER_SECOND;
      const changes = steadySeconds * CHANGES_PER_SECOND;
      const cpuBefore = usage(agent.pid).cpuMs;
      const steadyStart = performance.now();
      for (let k = 0; k < changes; k++) {
        const wait = steadyStart + k * intervalMs - performance.now();
        if (wait > 0) await sleep(wait);
        change(k % services, k + 1, k % SAMPLE_EVERY === 0 ? steady : undefined);
      }
      const periodEnd = steadyStart + changes * intervalMs;
      if (periodEnd > performance.now()) await sleep(periodEnd - performance.now());
      const steadyMs = performance.now() - steadyStart;
      const atEnd = usage(agent.pid);
      maxRssKB = Math.max(maxRssKB, atEnd.rssKB);
      await drain();

      // Then single changes, each after a quiet spell, to the last Service: the latency of a lone event.
      const single: Followed = { latenciesMs: [], lost: 0 };
      for (let g = 1; g <= singleChanges; g++) {
        await sleep(QUIET_MS);
        change(services - 1, changes + g, single);
        await drain();
      }
      await agent.close();
      return {
        services,
        firstSyncMs,
        afterSync,
        changesPerSecond: (changes * 1000) / steadyMs,
        steadyMs,
        steadyCpuMs: atEnd.cpuMs - cpuBefore,
        atEnd,
        maxRssKB,
        steady,
        single,
      };
    } finally {
      clearInterval(poller);
      clearInterval(rssSampler);
    }
  } finally {
    await lab.close();
  }
}

export const scenario: Scenario = async (quick) => {
  const sizes = quick ? QUICK : FULL;
  const result = newResult('agent-footprint', 'Agent memory and CPU (scenario 6)', quick, {
    services: sizes.map((s) => s.services),
    endpointsPerService: ENDPOINTS_PER_SERVICE,
    changesPerSecond: CHANGES_PER_SECOND,
    steadySeconds: sizes.map((s) => s.steadySeconds),
    latencySampledEvery: SAMPLE_EVERY,
    singleChanges: sizes.map((s) => s.singleChanges),
    runsPerSize: 1,
    agent: 'kpx run --kubeconfig --mode ebpf --interfaces none --log-level info (defaults otherwise, e.g. --min-sync-period 100ms)',
  });
  const measured: Measurement[] = [];
  for (const size of sizes) measured.push(await measure(size));

  const latency = (f: Followed, p: number) => round(percentile([...f.latenciesMs].sort((a, b) => a - b), p));
  /** Event → kernel columns: the sample size and its spread. */
  const latencyColumns = (f: Followed): Row => ({
    'e→k samples': f.latenciesMs.length,
    'e→k p50 ms': latency(f, 50),
    'e→k p99 ms': latency(f, 99),
    'e→k max ms': latency(f, 100),
    'e→k lost': f.lost,
  });
  for (const m of measured) {
    result.rows.push(
      {
        services: m.services,
        phase: 'first sync',
        'time ms': Math.round(m.firstSyncMs),
        'RSS MB': mb(m.afterSync.rssKB),
        'peak RSS MB': mb(m.afterSync.peakKB),
        'CPU ms': Math.round(m.afterSync.cpuMs),
      },
      {
        services: m.services,
        phase: `${CHANGES_PER_SECOND} changes/s`,
        'time ms': Math.round(m.steadyMs),
        'RSS MB': mb(m.atEnd.rssKB),
        'peak RSS MB': mb(m.atEnd.peakKB),
        'CPU ms': Math.round(m.steadyCpuMs),
        'CPU % of a core': round((m.steadyCpuMs / m.steadyMs) * 100),
        'changes/s': round(m.changesPerSecond),
        ...latencyColumns(m.steady),
      },
      { services: m.services, phase: 'single changes', ...latencyColumns(m.single) },
    );
  }

  const largest = measured[measured.length - 1]!;
  result.targets.push({
    what: `agent RSS after sync and during ${CHANGES_PER_SECOND} changes/s (highest seen), ${largest.services.toLocaleString('en-US')} Services × ${ENDPOINTS_PER_SERVICE} endpoints${quick ? ' (quick; the target is stated at 10,000)' : ''}`,
    target: `<= ${RSS_TARGET_MB} MB`,
    measured: mb(largest.maxRssKB),
    met: mb(largest.maxRssKB) <= RSS_TARGET_MB,
  });
  result.notes.push(
    `RSS is VmRSS from /proc/<pid>/status, sampled ${SETTLE_MS / 1000} s after the first sync (once the agent has collected its garbage and V8 has returned the pages), then each second; peak RSS is VmHWM (the highest since start, the first sync included). CPU is utime+stime from /proc/<pid>/stat. MB = 10^6 bytes.`,
    `Event → kernel (e→k): from the API server's write until kpx_slots/kpx_backends hold the new backend (polled every millisecond). At ${CHANGES_PER_SECOND} changes/s one change in ${SAMPLE_EVERY} is followed, and the figure includes the agent's --min-sync-period coalescing; single changes come each after ${QUIET_MS} ms of quiet.`,
  );
  if (mb(largest.atEnd.peakKB) > RSS_TARGET_MB) result.notes.push(`Peak RSS (VmHWM) at ${largest.services.toLocaleString('en-US')} Services is ${mb(largest.atEnd.peakKB)} MB, above ${RSS_TARGET_MB} MB.`);

  const x = (m: Measurement) => m.services;
  result.panels.push(
    {
      title: 'Agent memory vs Services',
      xLabel: 'Services (× 10 endpoints)',
      yLabel: 'MB',
      logX: true,
      series: [
        { name: 'RSS after the first sync', points: measured.map((m) => [x(m), mb(m.afterSync.rssKB)]) },
        { name: `RSS, highest during ${CHANGES_PER_SECOND} changes/s`, points: measured.map((m) => [x(m), mb(m.maxRssKB)]) },
        { name: 'peak RSS (VmHWM)', points: measured.map((m) => [x(m), mb(m.atEnd.peakKB)]) },
        { name: `target (${RSS_TARGET_MB} MB)`, points: measured.map((m) => [x(m), RSS_TARGET_MB]) },
      ],
    },
    {
      title: 'Event → kernel latency',
      xLabel: 'Services (× 10 endpoints)',
      yLabel: 'ms',
      logX: true,
      series: [
        { name: `p50 at ${CHANGES_PER_SECOND} changes/s`, points: measured.map((m) => [x(m), latency(m.steady, 50)]) },
        { name: `p99 at ${CHANGES_PER_SECOND} changes/s`, points: measured.map((m) => [x(m), latency(m.steady, 99)]) },
        { name: 'p50 of single changes', points: measured.map((m) => [x(m), latency(m.single, 50)]) },
        { name: 'p99 of single changes', points: measured.map((m) => [x(m), latency(m.single, 99)]) },
      ],
    },
  );
  return result;
};

await runIfMain(import.meta.url, scenario);
