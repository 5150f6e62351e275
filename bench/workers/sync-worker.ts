/**
 * Runs inside a lab node's network namespace (bench/sync-scale.ts starts
 * it there, with the agent's Node flags): the agent's own pipeline, in
 * process, from objects in memory to entries in the kernel. Prints one JSON
 * line with the timings.
 *
 *   node sync-worker.js ebpf|iptables SERVICES CHANGES BPFFS
 */
import { pino } from 'pino';
import { EbpfDatapath } from '../../src/datapath/ebpf.js';
import { IptablesDatapath } from '../../src/datapath/iptables.js';
import { collectAfterSync } from '../../src/heap.js';
import type { Datapath } from '../../src/datapath/types.js';
import { ServiceGroups } from '../../src/model/groups.js';
import { ModelCache } from '../../src/model/incremental.js';
import { apiServerModelOptions, endpointSlice, service, type ClusterSpec } from '../lib/cluster.js';

const [mode, servicesArg, changesArg, bpffs] = process.argv.slice(2);
const services = Number(servicesArg);
const changes = Number(changesArg);
const spec: ClusterSpec = { services, endpointsPerService: 10 };
const log = pino({ level: 'silent' });
const options = apiServerModelOptions('bench-node');

/** Room for the largest size (30,000 × 10 endpoints) and the Services added on top. */
const MAP_SIZES = { kpx_slots: 524288, kpx_backends: 524288, kpx_frontends: 65536, kpx_services: 65536 };

const datapath: Datapath =
  mode === 'ebpf' ? EbpfDatapath.open({ bpffs: bpffs!, mapSizes: MAP_SIZES, log }) : new IptablesDatapath({ log });
const groups = new ServiceGroups();
const models = new ModelCache();

/** Wall and CPU milliseconds of one step, from the change being known to the kernel holding it. */
function timed(step: () => void): { wallMs: number; cpuMs: number } {
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  step();
  const wallMs = performance.now() - t0;
  const used = process.cpuUsage(cpu);
  return { wallMs, cpuMs: (used.user + used.system) / 1000 };
}

const sync = () => void datapath.sync(models.update(groups, options));
/**
 * What the agent does once a sync has landed, between events (src/heap.ts):
 * not part of a change's latency, but timed and reported.
 */
const youngCollections: number[] = [];
let fullCollectionMs = 0;
const afterSync = (full: boolean) => {
  const t0 = performance.now();
  const collected = collectAfterSync(full);
  const ms = performance.now() - t0;
  if (full) fullCollectionMs = ms;
  else if (collected) youngCollections.push(ms);
};

try {
  for (let i = 0; i < services; i++) {
    groups.set('services', service(i, spec));
    groups.set('endpointSlices', endpointSlice(i, spec));
  }
  const full = timed(sync);
  afterSync(true);
  // Each sample is one event as an informer would file it, then one sync.
  const endpointChanged: number[] = [];
  for (let g = 1; g <= changes; g++) {
    const i = (g * 7919) % services;
    groups.set('endpointSlices', endpointSlice(i, spec, g));
    endpointChanged.push(timed(sync).wallMs);
    afterSync(false);
  }
  const serviceAdded: number[] = [];
  for (let k = 0; k < changes; k++) {
    const i = services + k;
    groups.set('services', service(i, spec));
    groups.set('endpointSlices', endpointSlice(i, spec));
    serviceAdded.push(timed(sync).wallMs);
    afterSync(false);
  }
  process.stdout.write(JSON.stringify({ full, endpointChanged, serviceAdded, fullCollectionMs, youngCollections, rssMB: process.memoryUsage().rss / 2 ** 20 }) + '\n');
} finally {
  datapath.close();
}
