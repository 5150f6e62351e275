// Issue 3: the agent follows an API server. The fake API server (test
// fixture, real HTTP list/watch protocol) is the only fake: the real client
// library talks to it and the real agent programs the real kernel in a lab.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { readPinnedTables } from '../../src/datapath/ebpf.js';
import { listServicePorts } from '../../src/inspect/listing.js';
import { startLabAgent } from '../../src/lab/agent.js';
import { createLab, PROBE_SCRIPT, type Lab, type LabProcess } from '../../src/lab/lab.js';
import { countBodies, parseProbeOutput } from '../../src/lab/probe-results.js';
import { startFakeApiServer, type FakeApiServer } from '../fixtures/fake-apiserver.js';

const skip = process.getuid?.() !== 0 ? 'needs root (CAP_BPF, CAP_NET_ADMIN)' : !readFileSync('/proc/filesystems', 'utf8').includes('bpf') ? 'needs the bpf filesystem' : undefined;

const PODS = [
  { name: 'pod-a', address: '10.244.0.11' },
  { name: 'pod-b', address: '10.244.0.12' },
  { name: 'pod-c', address: '10.244.0.13' },
];

const service = (name: string, clusterIP: string, labels: Record<string, string> = {}) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default', labels },
  spec: { clusterIP, ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
});

const slice = (svc: string, name: string, ips: string[], extra: { ready?: boolean[]; trigger?: string } = {}) => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: {
    name,
    namespace: 'default',
    labels: { 'kubernetes.io/service-name': svc },
    ...(extra.trigger && { annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': extra.trigger } }),
  },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
  endpoints: ips.map((ip, i) => ({ addresses: [ip], conditions: { ready: extra.ready?.[i] ?? true } })),
});

/** The agent's 'synced' log lines, parsed. */
function syncs(agent: LabProcess): Array<{ written: number; removed: number }> {
  return agent
    .stdout()
    .split('\n')
    .filter((l) => l.includes('"msg":"synced"'))
    .map((l) => JSON.parse(l) as { written: number; removed: number });
}
const writingSyncs = (agent: LabProcess) => syncs(agent).filter((s) => s.written + s.removed > 0).length;

/** Waits until the agent has logged nothing for a while, so counts of its log lines are final. */
async function quietLog(agent: LabProcess, quietMs = 200): Promise<void> {
  let seen = agent.stdout().length;
  for (;;) {
    await new Promise((r) => setTimeout(r, quietMs));
    if (agent.stdout().length === seen) return;
    seen = agent.stdout().length;
  }
}

async function waitUntil(what: string, predicate: () => boolean, timeoutMs = 5000): Promise<number> {
  const start = performance.now();
  while (!predicate()) {
    if (performance.now() - start > timeoutMs) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  return performance.now() - start;
}

const execFileAsync = promisify(execFile);

async function waitUntilAsync(what: string, predicate: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const start = performance.now();
  while (!(await predicate())) {
    if (performance.now() - start > timeoutMs) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('kube source (ebpf)', { skip }, () => {
  let lab: Lab;
  let api: FakeApiServer;
  let agent: LabProcess;

  const find = (name: string) => listServicePorts(readPinnedTables(lab.bpffsPath)).find((s) => s.name === name);
  const backendsOf = (name: string) => find(name)?.backends.map((b) => b.address) ?? [];
  async function bodies(address: string, count: number): Promise<Record<string, number>> {
    const r = await lab.exec('client', [process.execPath, PROBE_SCRIPT, 'http', address, '80', '--count', String(count)], { inCgroup: true });
    assert.equal(r.code, 0, r.stderr);
    return countBodies(parseProbeOutput(r.stdout).results);
  }

  before(async () => {
    lab = await createLab({ pods: PODS });
    await lab.startNameServers(PODS.map((p) => ({ host: p.name, tcp: [80] })));
    api = await startFakeApiServer();
    lab.trackCleanup(() => api.close());
    api.create('nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a', namespace: '' } });
    api.create('services', service('web', '10.96.0.80'));
    api.create('endpointslices', slice('web', 'web-1', ['10.244.0.11', '10.244.0.12']));
    api.create('endpointslices', slice('web', 'web-2', ['10.244.0.13']));
    api.create('services', service('elsewhere', '10.96.0.81', { 'service.kubernetes.io/service-proxy-name': 'other-proxy' }));
    api.create('endpointslices', slice('elsewhere', 'elsewhere-1', ['10.244.0.11']));
    const kubeconfig = join(lab.manifestsDir, 'kubeconfig');
    await api.writeKubeconfig(kubeconfig);
    agent = await startLabAgent(lab, { kubeconfig });
  });

  after(async () => {
    await lab?.close();
  });

  test('the first sync waits for every informer: Service and all its slices land together', async () => {
    assert.equal(writingSyncs(agent), 1, 'one writing sync at start');
    assert.deepEqual(backendsOf('web'), ['10.244.0.11', '10.244.0.12', '10.244.0.13']);
    assert.deepEqual(Object.keys(await bodies('10.96.0.80', 60)).sort(), ['pod-a', 'pod-b', 'pod-c']);
    assert.deepEqual(api.requests.filter((r) => r.resource === 'nodes' && r.verb === 'list').map((r) => r.query.fieldSelector), ['metadata.name=node-a']);
  });

  test('/healthz fails while the Node is being deleted or marked for removal by the autoscaler; /livez does not', async () => {
    // This agent runs in the root netns, with the fake API server: its health is on a loopback port its log names.
    const address = /"address":"(127\.0\.0\.1:\d+)","msg":"serving \/healthz and \/livez"/.exec(agent.stdout())?.[1];
    assert.ok(address, 'the agent says where it serves /healthz');
    const status = async (path: string) => (await execFileAsync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://${address}${path}`])).stdout;
    const node = (extra: object) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a', namespace: '' }, ...extra });
    assert.deepEqual([await status('/healthz'), await status('/livez')], ['200', '200']);
    try {
      for (const going of [
        node({ spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', value: '1700000000', effect: 'NoSchedule' }] } }),
        node({ metadata: { name: 'node-a', namespace: '', deletionTimestamp: '2026-01-01T00:00:00Z', finalizers: ['example.com/hold'] } }),
      ]) {
        api.update('nodes', going);
        await waitUntilAsync('/healthz 503', async () => (await status('/healthz')) === '503');
        assert.equal(await status('/livez'), '200', 'the agent itself is fine');
        api.update('nodes', node({}));
        await waitUntilAsync('/healthz 200 again', async () => (await status('/healthz')) === '200');
      }
      // The autoscaler taints a node, then deletes its Node object, then stops it: the node stays ineligible.
      api.update('nodes', node({ spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', value: '1700000000', effect: 'NoSchedule' }] } }));
      await waitUntilAsync('/healthz 503', async () => (await status('/healthz')) === '503');
      api.remove('nodes', '', 'node-a');
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await status('/healthz'), '503', 'a deleted Node keeps its last state');
      api.create('nodes', node({}));
      await waitUntilAsync('/healthz 200 once the Node is back', async () => (await status('/healthz')) === '200');
    } finally {
      if (api.objects('nodes').length) api.update('nodes', node({}));
      else api.create('nodes', node({}));
    }
  });

  test("kube-proxy's change counters: each Service and EndpointSlice event counts, and a sync takes the pending ones", async () => {
    const address = /"address":"(127\.0\.0\.1:\d+)","msg":"serving \/metrics and \/proxyMode"/.exec(agent.stdout())?.[1];
    assert.ok(address, 'the agent says where it serves /metrics');
    const counters = async () => {
      const text = (await execFileAsync('curl', ['-s', '--max-time', '2', `http://${address}/metrics`])).stdout;
      const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
      return {
        endpoints: value('kubeproxy_sync_proxy_rules_endpoint_changes_total'),
        services: value('kubeproxy_sync_proxy_rules_service_changes_total'),
        pending: value('kubeproxy_sync_proxy_rules_endpoint_changes_pending') + value('kubeproxy_sync_proxy_rules_service_changes_pending'),
      };
    };
    const before = await counters();
    api.create('services', service('counted', '10.96.0.95'));
    api.create('endpointslices', slice('counted', 'counted-1', ['10.244.0.11']));
    api.update('endpointslices', slice('counted', 'counted-1', ['10.244.0.12']));
    await waitUntil('counted programmed', () => backendsOf('counted')[0] === '10.244.0.12');
    await waitUntilAsync('the sync taken as landed', async () => (await counters()).pending === 0);
    const after = await counters();
    assert.deepEqual({ endpoints: after.endpoints - before.endpoints, services: after.services - before.services }, { endpoints: 2, services: 1 });
    api.remove('endpointslices', 'default', 'counted-1');
    api.remove('services', 'default', 'counted');
    await waitUntil('counted gone', () => find('counted') === undefined);
  });

  test("kube-proxy's label filters: another proxy's Service is not programmed", () => {
    assert.equal(find('elsewhere'), undefined);
    const selectors = api.requests.filter((r) => r.resource === 'services').map((r) => r.query.labelSelector);
    assert.ok(selectors.length > 0 && selectors.every((s) => s === '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless'));
  });

  test('Service and slice add, update and delete reach traffic', async () => {
    api.create('services', service('api', '10.96.0.90'));
    api.create('endpointslices', slice('api', 'api-1', ['10.244.0.12']));
    await waitUntil('api programmed', () => backendsOf('api').length === 1);
    assert.deepEqual(await bodies('10.96.0.90', 3), { 'pod-b': 3 });

    api.update('endpointslices', slice('api', 'api-1', ['10.244.0.12', '10.244.0.13'], { ready: [false, true] }));
    await waitUntil('api slice update', () => backendsOf('api')[0] === '10.244.0.13');
    assert.deepEqual(await bodies('10.96.0.90', 3), { 'pod-c': 3 });

    api.remove('endpointslices', 'default', 'api-1');
    await waitUntil('api slice delete', () => find('api')?.backends.length === 0);
    assert.deepEqual(await bodies('10.96.0.90', 1), { 'error:ECONNREFUSED': 1 });

    api.remove('services', 'default', 'api');
    await waitUntil('api delete', () => find('api') === undefined);
  });

  test('a dropped watch is resumed without a relist and later changes still arrive', async () => {
    const lists = api.countLists('endpointslices');
    api.dropWatches();
    api.update('endpointslices', slice('web', 'web-2', ['10.244.0.13'], { ready: [false] }));
    await waitUntil('change after drop', () => backendsOf('web').length === 2);
    assert.equal(api.countLists('endpointslices'), lists, 'resumed from its resourceVersion');
    api.update('endpointslices', slice('web', 'web-2', ['10.244.0.13']));
    await waitUntil('web back to 3', () => backendsOf('web').length === 3);
  });

  test('410 Gone leads to a fresh list, and a relist of the same objects writes nothing to the kernel', async () => {
    await api.waitForWatches('endpointslices');
    // The kernel can show a change before the agent's log line about it has reached us.
    await quietLog(agent);
    const lists = api.countLists('endpointslices');
    const writesBefore = writingSyncs(agent);
    // Cut the watches, move the store on (with a change the agent filters out)
    // and compact it: the agent's resourceVersion is now too old, as after a
    // long disconnect.
    api.dropWatches();
    api.update('services', service('elsewhere', '10.96.0.81', { 'service.kubernetes.io/service-proxy-name': 'still-other' }));
    api.compact();
    await waitUntil('relist', () => api.countLists('endpointslices') > lists && api.countLists('services') > 0);
    await api.waitForWatches('endpointslices');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(writingSyncs(agent), writesBefore, 'no kernel write after relisting the same objects');
  });

  test('while the API server is unreachable the last good state keeps serving', async () => {
    api.setUnavailable(true);
    api.dropWatches();
    await waitUntil('agent notices', () => agent.stdout().includes('watch failed; serving the last known state'));
    assert.deepEqual(Object.keys(await bodies('10.96.0.80', 30)).sort(), ['pod-a', 'pod-b', 'pod-c']);
    api.setUnavailable(false);
    api.update('endpointslices', slice('web', 'web-2', ['10.244.0.13'], { ready: [false] }));
    await waitUntil('change after recovery', () => backendsOf('web').length === 2, 15000);
    api.update('endpointslices', slice('web', 'web-2', ['10.244.0.13']));
    await waitUntil('web back to 3', () => backendsOf('web').length === 3);
  });

  test('a burst of 1,000 endpoint changes is folded into a handful of kernel writes', async (t) => {
    await api.waitForWatches('endpointslices');
    const ips = Array.from({ length: 100 }, (_, i) => `10.244.1.${i + 1}`);
    api.create('services', service('burst', '10.96.0.99'));
    api.create('endpointslices', slice('burst', 'burst-1', ips));
    await waitUntil('burst programmed', () => backendsOf('burst').length === 100);
    await quietLog(agent);
    const before = writingSyncs(agent);
    // 1,000 updates over ~1 s, each flipping one endpoint's readiness.
    for (let round = 0; round < 10; round++) {
      api.applyBurst(
        'endpointslices',
        Array.from({ length: 100 }, (_, i) => slice('burst', 'burst-1', ips, { ready: ips.map((_, j) => j !== (round * 7 + i) % 100) })),
      );
      await new Promise((r) => setTimeout(r, 100));
    }
    api.update('endpointslices', slice('burst', 'burst-1', ips));
    await waitUntil('burst settled', () => backendsOf('burst').length === 100);
    await new Promise((r) => setTimeout(r, 250));
    const writes = writingSyncs(agent) - before;
    t.diagnostic(`1,001 slice updates → ${writes} kernel-writing syncs`);
    assert.ok(writes >= 1 && writes <= 20, `${writes} writing syncs`);
  });

  test('network programming latency is computed from the slice trigger time', async () => {
    const trigger = new Date(Date.now() - 1500).toISOString();
    api.update('endpointslices', slice('web', 'web-2', ['10.244.0.13'], { trigger }));
    await waitUntil('latency logged', () => agent.stdout().includes('network programming latency'));
    const line = agent.stdout().split('\n').find((l) => l.includes('network programming latency'))!;
    const [seconds] = (JSON.parse(line) as { networkProgrammingSeconds: number[] }).networkProgrammingSeconds;
    assert.ok(seconds! >= 1.4 && seconds! < 10, `latency ${seconds}`);
  });
});

describe('kube source without EndpointSlices (ebpf)', { skip }, () => {
  test('a server that does not serve discovery.k8s.io/v1 is followed through core/v1 Endpoints', async () => {
    const lab = await createLab({ pods: PODS.slice(0, 1) });
    try {
      await lab.startNameServers([{ host: 'pod-a', tcp: [80] }]);
      const api = await startFakeApiServer({ servesEndpointSlices: false });
      lab.trackCleanup(() => api.close());
      api.create('services', service('legacy', '10.96.0.70'));
      api.create('endpoints', {
        apiVersion: 'v1',
        kind: 'Endpoints',
        metadata: { name: 'legacy', namespace: 'default' },
        subsets: [{ addresses: [{ ip: '10.244.0.11' }], ports: [{ name: 'http', port: 80 }] }],
      } as never);
      const kubeconfig = join(lab.manifestsDir, 'kubeconfig');
      await api.writeKubeconfig(kubeconfig);
      const agent = await startLabAgent(lab, { kubeconfig });
      assert.match(agent.stdout(), /"endpoints":"endpoints"/);
      const r = await lab.exec('client', [process.execPath, PROBE_SCRIPT, 'http', '10.96.0.70', '80', '--count', '3'], { inCgroup: true });
      assert.deepEqual(countBodies(parseProbeOutput(r.stdout).results), { 'pod-a': 3 });
    } finally {
      await lab.close();
    }
  });
});
