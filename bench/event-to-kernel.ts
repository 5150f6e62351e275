/**
 * Event → map write latency (issue 3): a single EndpointSlice change on the
 * API server, through the real client library and the real agent, until the
 * kernel map holds it. The fake API server is the test fixture; the agent is
 * the CLI in a lab (own cgroup and bpffs, no traffic needed).
 *
 *   node dist/bench/event-to-kernel.js [--services N] [--samples N]
 */
import { closeSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cpus, release } from 'node:os';
import { frontendKey, frontendValue, slotKey, slotValue, u32Key, backendValue } from '../src/contract/codecs.js';
import { mapLookup, objGet } from '../src/datapath/libbpf.js';
import { startLabAgent } from '../src/lab/agent.js';
import { createLab } from '../src/lab/lab.js';
import { startFakeApiServer } from '../test/fixtures/fake-apiserver.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
const SERVICES = arg('services', 1000);
const SAMPLES = arg('samples', 50);
const ENDPOINTS = 10;

const clusterIP = (i: number) => `10.96.${(i >> 8) & 255}.${i & 255}`;
/** Endpoint j (1..9) of Service i. Endpoint 0, the one the benchmark changes, sorts first: slot 0. */
const endpointIP = (i: number, j: number) => `10.${128 + j}.${(i >> 8) & 255}.${i & 255}`;
const generationIP = (g: number) => `10.1.${(g >> 8) & 255}.${g & 255}`;

function slice(i: number, generation: number) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `svc-${i}-1`, namespace: 'bench', labels: { 'kubernetes.io/service-name': `svc-${i}` } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: Array.from({ length: ENDPOINTS }, (_, j) => ({
      // Endpoint 0 carries the generation in its address, so each update is a real change.
      addresses: [j === 0 ? generationIP(generation) : endpointIP(i, j)],
      conditions: { ready: true },
    })),
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const lab = await createLab({ pods: [] });
try {
  const api = await startFakeApiServer();
  lab.trackCleanup(() => api.close());
  for (let i = 0; i < SERVICES; i++) {
    api.create('services', {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: `svc-${i}`, namespace: 'bench' },
      spec: { clusterIP: clusterIP(i + 10), ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
    });
    api.create('endpointslices', slice(i, 0));
  }
  const kubeconfig = join(lab.manifestsDir, 'kubeconfig');
  await api.writeKubeconfig(kubeconfig);
  const startedAt = performance.now();
  const agent = await startLabAgent(lab, { kubeconfig, logLevel: 'info' });
  const initialSyncMs = performance.now() - startedAt;

  // The probe reads the kernel directly: the slot 0 backend of the last Service.
  const fds = ['kpx_frontends', 'kpx_slots', 'kpx_backends'].map((m) => objGet(join(lab.bpffsPath, m)));
  const [feFd, slotFd, beFd] = fds as [number, number, number];
  const target = SERVICES - 1;
  const fe = mapLookup(feFd, frontendKey.encode({ addr: clusterIP(target + 10), port: 80, proto: 6 }), 8)!;
  const serviceId = frontendValue.decode(fe).service_id;
  const slot0 = slotKey.encode({ service_id: serviceId, slot: 0 });
  const backendOfSlot0 = (): string | undefined => {
    const s = mapLookup(slotFd, slot0, 8);
    if (!s) return undefined;
    const b = mapLookup(beFd, u32Key.encode({ id: slotValue.decode(s).backend_id }), 8);
    return b && backendValue.decode(b).addr;
  };

  const latencies: number[] = [];
  for (let g = 1; g <= SAMPLES; g++) {
    await new Promise((r) => setTimeout(r, 150)); // a quiet period: each change is a single change
    const want = generationIP(g);
    const t0 = performance.now();
    api.update('endpointslices', slice(target, g));
    while (backendOfSlot0() !== want) {
      if (performance.now() - t0 > 5000) throw new Error(`change ${g} did not reach the kernel`);
      await new Promise((r) => setImmediate(r));
    }
    latencies.push(performance.now() - t0);
  }
  for (const fd of fds) closeSync(fd);
  await agent.close();

  latencies.sort((a, b) => a - b);
  const result = {
    benchmark: 'event-to-kernel',
    machine: { cores: cpus().length, cpu: cpus()[0]?.model, kernel: release() },
    services: SERVICES,
    endpointsPerService: ENDPOINTS,
    samples: SAMPLES,
    initialSyncMs: +initialSyncMs.toFixed(1),
    eventToKernelMs: {
      p50: +percentile(latencies, 50).toFixed(2),
      p90: +percentile(latencies, 90).toFixed(2),
      p99: +percentile(latencies, 99).toFixed(2),
      min: +latencies[0]!.toFixed(2),
      max: +latencies[latencies.length - 1]!.toFixed(2),
    },
    target: 'p50 < 10 ms',
  };
  process.stdout.write(
    `event → kernel, ${SERVICES} Services × ${ENDPOINTS} endpoints, ${SAMPLES} single changes\n` +
      `  agent start to first sync: ${result.initialSyncMs} ms\n` +
      `  p50 ${result.eventToKernelMs.p50} ms  p90 ${result.eventToKernelMs.p90} ms  p99 ${result.eventToKernelMs.p99} ms  ` +
      `min ${result.eventToKernelMs.min} ms  max ${result.eventToKernelMs.max} ms  (target: under 10 ms)\n`,
  );
  await writeFile(new URL(`./results/event-to-kernel-${SERVICES}.json`, import.meta.url.replace('/dist/bench/', '/bench/')), JSON.stringify(result, null, 2) + '\n');
} finally {
  await lab.close();
}
