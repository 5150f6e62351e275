// Issue 2, section 3, proven with real traffic: a lab of network namespaces,
// the real agent (the CLI) on a manifest folder, clients inside the lab's
// cgroup whose connect()/sendmsg() the kernel hands to kpx's programs (ebpf
// mode) or whose packets the node's iptables rules translate (iptables mode).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ListedServicePort } from '../../src/inspect/listing.js';
import { kpxArgv, startLabAgent } from '../../src/lab/agent.js';
import { createLab, PROBE_SCRIPT, type Lab, type LabProcess } from '../../src/lab/lab.js';
import { countBodies, countPeers, parseProbeOutput, type ProbeResult } from '../../src/lab/probe-results.js';
import { allocateClusterIPs } from '../../src/model/cluster-ip.js';
import { kernelHasFunc } from '../../src/datapath/libbpf.js';
import { parseConntrackList } from '../../src/datapath/udp-flows.js';
import { programmedServicePorts } from '../fixtures/programmed.js';
import { missingKernelPrerequisite } from '../fixtures/tools.js';

const skip = missingKernelPrerequisite();

const PODS = [
  { name: 'pod-a', address: '10.244.0.11' },
  { name: 'pod-b', address: '10.244.0.12' },
  { name: 'pod-c', address: '10.244.0.13' },
];

const slice = (service: string, name: string, port: number, endpoints: Array<[string, boolean?]>, protocol = 'TCP') => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
  addressType: 'IPv4',
  ports: [{ name: 'p', port, protocol }],
  endpoints: endpoints.map(([ip, ready]) => ({ addresses: [ip], conditions: ready === undefined ? {} : { ready } })),
});

const service = (name: string, clusterIP: string | undefined, ports: object[], extra: object = {}) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default', ...extra },
  spec: { ...(clusterIP && { clusterIP }), ports },
});

const BASE_MANIFESTS: Record<string, unknown[]> = {
  'web.json': [
    service('web', '10.96.0.80', [{ name: 'p', port: 8222, targetPort: 80 }]),
    slice('web', 'web-1', 80, [['10.244.0.11'], ['10.244.0.12', true], ['10.244.0.13', true]]),
  ],
  'dns.json': [
    service('dns', '10.96.0.53', [{ name: 'p', port: 53, protocol: 'UDP', targetPort: 5353 }]),
    slice('dns', 'dns-1', 5353, [['10.244.0.11'], ['10.244.0.12']], 'UDP'),
  ],
  'external-db.json': [
    service('external-db', '10.96.0.81', [
      { name: 'client', port: 7064 },
      { name: 'admin', port: 7164 },
    ]),
    {
      apiVersion: 'v1',
      kind: 'Endpoints',
      metadata: { name: 'external-db', namespace: 'default' },
      subsets: [{ addresses: [{ ip: '192.0.2.10' }], ports: [{ name: 'client', port: 31496 }, { name: 'admin', port: 31337 }] }],
    },
  ],
};

async function stillRunning(p: LabProcess): Promise<boolean> {
  let exited = false;
  void p.exited.then(() => (exited = true));
  await new Promise((r) => setTimeout(r, 20));
  return !exited;
}

function asList(items: unknown[]): string {
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items }, null, 1);
}

for (const mode of ['ebpf', 'iptables'] as const) describe(`ClusterIP from pods (${mode})`, { skip }, () => {
  let lab: Lab;
  let agent: LabProcess;

  const startAgent = () => startLabAgent(lab, { extraArgs: ['--mode', mode] });
  const writeManifest = (file: string, items: unknown[]) => writeFile(join(lab.manifestsDir, file), asList(items));
  const listed = (): ListedServicePort[] => programmedServicePorts(mode, lab.bpffsPath, lab.netnsPath('node'));
  const find = (name: string, portName = 'p') => listed().find((s) => s.name === name && s.portName === portName);

  async function probe(args: string[]): Promise<ProbeResult[]> {
    const r = await lab.exec('client', [process.execPath, PROBE_SCRIPT, ...args], { inCgroup: true });
    assert.equal(r.code, 0, `probe ${args.join(' ')}: ${r.stderr}`);
    return parseProbeOutput(r.stdout).results;
  }

  /** Polls the pinned maps until predicate holds; returns how long the kernel took. */
  async function kernelReflects(what: string, predicate: () => boolean, timeoutMs = 3000): Promise<number> {
    const start = performance.now();
    while (!predicate()) {
      if (performance.now() - start > timeoutMs) assert.fail(`kernel did not reflect ${what} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 2));
    }
    return performance.now() - start;
  }

  /** iptables mode: polls the node's conntrack table until no UDP flow to `to` has its replies from `endpoint`. */
  async function untilNoFlowFrom(endpoint: string, to: string, timeoutMs = 3000): Promise<void> {
    const start = performance.now();
    for (;;) {
      const listed = await lab.exec('node', ['conntrack', '-L', '-p', 'udp', '--orig-dst', to]);
      if (listed.code === 0 && parseConntrackList(listed.stdout).every((f) => f.replySrc !== endpoint)) return;
      if (performance.now() - start > timeoutMs) assert.fail(`a UDP flow to ${to} from ${endpoint} was still tracked after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  before(async () => {
    lab = await createLab({ pods: PODS, externalHosts: [{ name: 'db', address: '192.0.2.10' }] });
    await lab.startNameServers([
      ...PODS.map((p) => ({ host: p.name, tcp: [80], udp: [5353] })),
      { host: 'db', name: 'db-31496', tcp: [31496] },
      { host: 'db', name: 'db-31337', tcp: [31337] },
    ]);
    for (const [file, items] of Object.entries(BASE_MANIFESTS)) await writeManifest(file, items);
    agent = await startAgent();
  });

  after(async () => {
    await lab?.close();
  });

  test('TCP connect to clusterIP:port spreads over the ready backends with equal weight', async () => {
    const results = await probe(['http', '10.96.0.80', '8222', '--count', '300']);
    const counts = countBodies(results);
    assert.deepEqual(Object.keys(counts).sort(), ['pod-a', 'pod-b', 'pod-c'], JSON.stringify(counts));
    for (const [pod, n] of Object.entries(counts)) {
      assert.ok(n >= 60 && n <= 141, `${pod} got ${n} of 300 connections (expected 20-47%)`);
    }
  });

  test('getpeername() on a translated TCP socket returns clusterIP:port', async () => {
    const results = await probe(['http', '10.96.0.80', '8222', '--count', '5']);
    assert.deepEqual(countPeers(results), { '10.96.0.80:8222': 5 });
  });

  test('UDP sendto() from one socket reaches one backend, as one kube-proxy conntrack flow does; replies come from clusterIP:port', async () => {
    const results = await probe(['udp', '10.96.0.53', '53', '--count', '40']);
    assert.ok(results.every((r) => r.ok), JSON.stringify(countBodies(results)));
    assert.equal(Object.keys(countBodies(results)).length, 1, JSON.stringify(countBodies(results)));
    assert.deepEqual(countPeers(results), { '10.96.0.53:53': 40 });
  });

  test('UDP sendto() from a new socket each time spreads over the backends', async () => {
    const results = await probe(['udp', '10.96.0.53', '53', '--count', '40', '--fresh']);
    assert.ok(results.every((r) => r.ok), JSON.stringify(countBodies(results)));
    assert.deepEqual(Object.keys(countBodies(results)).sort(), ['pod-a', 'pod-b']);
    assert.deepEqual(countPeers(results), { '10.96.0.53:53': 40 });
  });

  test('connected UDP (connect() then send()) is translated too', async () => {
    const results = await probe(['udp', '10.96.0.53', '53', '--count', '20', '--connected', '--fresh']);
    assert.ok(results.every((r) => r.ok), JSON.stringify(countBodies(results)));
    assert.deepEqual(countPeers(results), { '10.96.0.53:53': 20 });
  });

  test('multi-port selectorless Service with manual Endpoints: ports matched by name', async () => {
    assert.deepEqual(countBodies(await probe(['http', '10.96.0.81', '7064', '--count', '3'])), { 'db-31496': 3 });
    assert.deepEqual(countBodies(await probe(['http', '10.96.0.81', '7164', '--count', '3'])), { 'db-31337': 3 });
  });

  test('EndpointSlices win over legacy Endpoints for the same Service', async () => {
    const endpoints = {
      apiVersion: 'v1',
      kind: 'Endpoints',
      metadata: { name: 'both', namespace: 'default' },
      subsets: [{ addresses: [{ ip: '10.244.0.13' }], ports: [{ name: 'p', port: 80 }] }],
    };
    await writeManifest('both.json', [service('both', '10.96.0.90', [{ name: 'p', port: 80 }]), endpoints]);
    await kernelReflects('Service both from Endpoints', () => find('both')?.backends.length === 1);
    assert.deepEqual(countBodies(await probe(['http', '10.96.0.90', '80', '--count', '4'])), { 'pod-c': 4 });

    await writeManifest('both-slice.json', [slice('both', 'both-1', 80, [['10.244.0.11']])]);
    await kernelReflects('the slice replacing the Endpoints', () => find('both')?.backends[0]?.address === '10.244.0.11');
    assert.deepEqual(countBodies(await probe(['http', '10.96.0.90', '80', '--count', '4'])), { 'pod-a': 4 });
  });

  test('only ready endpoints receive traffic', async () => {
    await writeManifest('ready.json', [
      service('ready', '10.96.0.91', [{ name: 'p', port: 80 }]),
      slice('ready', 'ready-1', 80, [['10.244.0.11', false], ['10.244.0.12', true], ['10.244.0.13', false]]),
    ]);
    await kernelReflects('Service ready', () => find('ready') !== undefined);
    assert.deepEqual(countBodies(await probe(['http', '10.96.0.91', '80', '--count', '20'])), { 'pod-b': 20 });
  });

  test('a Service without ready endpoints refuses connect() at once (ECONNREFUSED)', async () => {
    await writeManifest('empty.json', [
      service('empty', '10.96.0.92', [{ name: 'p', port: 80 }]),
      slice('empty', 'empty-1', 80, [['10.244.0.11', false]]),
    ]);
    await kernelReflects('Service empty', () => find('empty') !== undefined);
    const started = performance.now();
    const results = await probe(['http', '10.96.0.92', '80', '--count', '3', '--timeout', '5000']);
    assert.deepEqual(countBodies(results), { 'error:ECONNREFUSED': 3 });
    assert.ok(performance.now() - started < 4000, 'refused, not timed out');
    const udp = await probe(['udp', '10.96.0.92', '80', '--count', '1']);
    assert.equal(udp[0]?.ok, false);
  });

  test('ExternalName, headless and service-proxy-name Services are not programmed, and list says why', {
    skip: mode === 'iptables' && 'iptables mode keeps no record of the Services it leaves alone',
  }, async () => {
    await writeManifest('ignored.json', [
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'ext', namespace: 'default' }, spec: { type: 'ExternalName', externalName: 'example.org' } },
      service('headless', 'None', [{ name: 'p', port: 80 }]),
      service('other-proxy', '10.96.0.93', [{ name: 'p', port: 80 }], { labels: { 'service.kubernetes.io/service-proxy-name': 'other' } }),
    ]);
    await kernelReflects('ignored Services', () => listed().filter((s) => s.ignored).length === 3);
    const ignored = Object.fromEntries(listed().filter((s) => s.ignored).map((s) => [s.name, s.ignored]));
    assert.deepEqual(ignored, { ext: 'ExternalName', headless: 'headless', 'other-proxy': 'service-proxy-name' });
    assert.ok(listed().filter((s) => s.ignored).every((s) => s.frontends.length === 0));
    const text = await lab.exec('node', kpxArgv(['list', '--bpffs', lab.bpffsPath]));
    assert.match(text.stdout, /other-proxy .*not programmed: service-proxy-name/);
  });

  test('a Service without spec.clusterIP gets one allocated from the service range, as an API server would', async () => {
    await writeManifest('alloc.json', [
      service('alloc', undefined, [{ name: 'p', port: 80 }]),
      slice('alloc', 'alloc-1', 80, [['10.244.0.12']]),
    ]);
    await kernelReflects('Service alloc', () => find('alloc') !== undefined);
    const address = find('alloc')!.frontends[0]!.address;
    const explicit = listed().flatMap((s) => (s.name === 'alloc' ? [] : s.frontends.map((f) => f.address)));
    const expected = allocateClusterIPs('10.96.0.0/12', ['default/alloc'], explicit);
    assert.equal(address, expected.allocated.get('default/alloc'));
    assert.deepEqual(countBodies(await probe(['http', address, '80', '--count', '3'])), { 'pod-b': 3 });
  });

  for (const connected of [false, true]) {
    // ebpf mode gave a connected socket its backend at connect(), and no program runs on its send()s: the agent
    // aborts such a socket (bpf/kpx_iter.c), as Cilium does, and the client connects again. iptables mode, as
    // kube-proxy, clears the flow and the same socket goes on.
    const aborts = connected && mode === 'ebpf';
    test(`a UDP client that keeps sending${connected ? ' on a connected socket' : ''} moves to a new endpoint when its own is dropped${aborts ? ': its socket is aborted, and it connects again' : ", as kube-proxy's conntrack cleanup makes it"}`, {
      skip: aborts && !kernelHasFunc('bpf_sock_destroy') && 'the kernel has no bpf_sock_destroy: a connected UDP socket keeps its backend',
    }, async () => {
      const file = `udp-move-${connected ? 'connected' : 'sendto'}.json`;
      const address = connected ? '10.96.0.55' : '10.96.0.54';
      // With a UDP NodePort Service that keeps its endpoint: its clients connected to 127.0.0.1:nodePort stay.
      const nodePortService = { ...service('udp-np', '10.96.0.57', [{ name: 'p', port: 53, protocol: 'UDP', targetPort: 5353, nodePort: 30057 }]) };
      nodePortService.spec = { ...nodePortService.spec, type: 'NodePort' } as typeof nodePortService.spec;
      const manifest = (...endpoints: string[]) => [
        service('udp-move', address, [{ name: 'p', port: 53, protocol: 'UDP', targetPort: 5353 }]),
        slice('udp-move', 'm', 5353, endpoints.map((e) => [e]), 'UDP'),
        nodePortService,
        slice('udp-np', 'n', 5353, [['10.244.0.13']], 'UDP'),
      ];
      await writeManifest(file, manifest('10.244.0.11'));
      await kernelReflects('the UDP Service on pod-a', () => find('udp-move')?.backends[0]?.address === '10.244.0.11');
      try {
        // Every 50 ms for 3 s from one socket; pod-a stays up and would answer whatever still reaches it.
        const sending = probe(['udp', address, '53', '--count', '60', '--interval', '50', ...(connected ? ['--connected', '--reconnect'] : [])]);
        // Clients of other UDP Services, which keep their endpoints, are left alone: through a ClusterIP, and (ebpf
        // mode: a pod's own 127.0.0.1 is no NodePort in iptables mode) through a NodePort's wildcard key.
        const others = [['10.96.0.53', '53'], ...(mode === 'ebpf' ? [['127.0.0.1', '30057']] : [])];
        const bystanders = connected ? others.map(([to, port]) => probe(['udp', to!, port!, '--count', '60', '--interval', '50', '--connected'])) : [];
        await new Promise((r) => setTimeout(r, connected ? 400 : 700));
        if (connected) {
          // An endpoint that sorts first moves pod-a to another slot: its connected socket stays where it is.
          await writeManifest(file, manifest('10.244.0.9', '10.244.0.11'));
          await kernelReflects('a second endpoint', () => find('udp-move')?.backends.length === 2);
          await new Promise((r) => setTimeout(r, 300));
        }
        const moved = Date.now();
        await writeManifest(file, manifest('10.244.0.12'));
        await kernelReflects('the UDP Service moved to pod-b', () => find('udp-move')?.backends[0]?.address === '10.244.0.12');
        // The kernel has the change; give the conntrack cleanup (iptables mode) or the socket sweep (ebpf) a moment after it.
        const settled = Date.now() + 300;
        const results = await sending;
        const failed = results.filter((r) => !r.ok);
        for (const bystander of bystanders) {
          const kept = await bystander;
          assert.ok(kept.every((r) => r.ok) && new Set(kept.map((r) => r.ok && r.body)).size === 1, `a bystander kept its socket and backend: ${JSON.stringify(countBodies(kept))}`);
        }
        if (aborts) {
          // The aborted socket's pending receive or next send fails, once; the new socket reaches pod-b.
          assert.ok(failed.length >= 1 && failed.length <= 2, `the socket was aborted once: ${JSON.stringify(countBodies(results))}`);
          for (const r of failed) assert.ok(!r.ok && ['ECONNABORTED', 'EDESTADDRREQ'].includes(r.error), JSON.stringify(r));
        } else {
          assert.deepEqual(failed, [], JSON.stringify(countBodies(results)));
        }
        const before = results.filter((r) => r.at < moved);
        assert.deepEqual(countBodies(before), { 'pod-a': before.length }, `the flow stayed on pod-a until its endpoint went: ${JSON.stringify(countBodies(results))}`);
        const after = results.filter((r) => r.at > settled);
        assert.ok(after.length >= 5, `datagrams after the change settled: ${after.length}`);
        assert.deepEqual(countBodies(after), { 'pod-b': after.length }, `after the change went to pod-b; all: ${JSON.stringify(countBodies(results))}`);
      } finally {
        await rm(join(lab.manifestsDir, file));
      }
    });
  }

  for (const connected of [false, true]) {
    const aborts = connected && mode === 'ebpf';
    test(`a UDP client${connected ? ' on a connected socket' : ''} stays on its endpoint while that terminates but still serves (kube-proxy leaves the flows of a serving endpoint), and moves once it stops serving`, {
      skip: aborts && !kernelHasFunc('bpf_sock_destroy') && 'the kernel has no bpf_sock_destroy: a connected UDP socket keeps its backend',
    }, async () => {
      const file = `udp-drain-${connected ? 'connected' : 'sendto'}.json`;
      const address = connected ? '10.96.0.59' : '10.96.0.58';
      const podA = (conditions: object) => ({ addresses: ['10.244.0.11'], conditions });
      const podB = { addresses: ['10.244.0.12'], conditions: { ready: true } };
      const manifest = (...endpoints: object[]) => [
        service('udp-drain', address, [{ name: 'p', port: 53, protocol: 'UDP', targetPort: 5353 }]),
        { ...slice('udp-drain', 'd', 5353, [], 'UDP'), endpoints },
      ];
      await writeManifest(file, manifest(podA({ ready: true })));
      await kernelReflects('the UDP Service on pod-a', () => find('udp-drain')?.backends[0]?.address === '10.244.0.11');
      try {
        const sending = probe(['udp', address, '53', '--count', '70', '--interval', '50', ...(connected ? ['--connected', '--reconnect'] : [])]);
        await new Promise((r) => setTimeout(r, 500));
        // pod-a terminates, still serving; pod-b is ready and takes the new flows.
        await writeManifest(file, manifest(podA({ ready: false, serving: true, terminating: true }), podB));
        await kernelReflects('new flows to pod-b', () => find('udp-drain')?.backends.map((b) => b.address).join() === '10.244.0.12');
        await new Promise((r) => setTimeout(r, 1000));
        const stopped = Date.now();
        await writeManifest(file, manifest(podA({ ready: false, serving: false, terminating: true }), podB));
        if (mode === 'ebpf') await kernelReflects('pod-a no longer draining', () => find('udp-drain')?.draining === undefined);
        else await untilNoFlowFrom('10.244.0.11', address);
        const settled = Date.now() + 300;
        const results = await sending;
        const failed = results.filter((r) => !r.ok);
        if (aborts) {
          assert.ok(failed.length >= 1 && failed.length <= 2, `the socket was aborted once, when pod-a stopped serving: ${JSON.stringify(countBodies(results))}`);
          for (const r of failed) assert.ok(!r.ok && r.at > stopped && ['ECONNABORTED', 'EDESTADDRREQ'].includes(r.error), JSON.stringify(r));
        } else {
          assert.deepEqual(failed, [], JSON.stringify(countBodies(results)));
        }
        const serving = results.filter((r) => r.at < stopped);
        assert.ok(serving.length >= 20, `datagrams while pod-a served: ${serving.length}`);
        assert.deepEqual(countBodies(serving), { 'pod-a': serving.length }, `the flow stayed on pod-a while it served; all: ${JSON.stringify(countBodies(results))}`);
        const after = results.filter((r) => r.at > settled);
        assert.ok(after.length >= 5, `datagrams after pod-a stopped serving: ${after.length}`);
        assert.deepEqual(countBodies(after), { 'pod-b': after.length }, `then it moved to pod-b; all: ${JSON.stringify(countBodies(results))}`);
      } finally {
        await rm(join(lab.manifestsDir, file));
      }
    });
  }

  test('files added, changed and removed reach the kernel quickly', async (t) => {
    const add = performance.now();
    await writeManifest('churn.json', [service('churn', '10.96.0.95', [{ name: 'p', port: 80 }]), slice('churn', 'c', 80, [['10.244.0.11']])]);
    const added = await kernelReflects('added file', () => find('churn') !== undefined);
    await writeManifest('churn.json', [service('churn', '10.96.0.95', [{ name: 'p', port: 80 }]), slice('churn', 'c', 80, [['10.244.0.13']])]);
    const changed = await kernelReflects('changed file', () => find('churn')?.backends[0]?.address === '10.244.0.13');
    assert.deepEqual(countBodies(await probe(['http', '10.96.0.95', '80', '--count', '3'])), { 'pod-c': 3 });
    await rm(join(lab.manifestsDir, 'churn.json'));
    const removed = await kernelReflects('removed file', () => find('churn') === undefined);
    t.diagnostic(`file to kernel: added ${added.toFixed(1)} ms, changed ${changed.toFixed(1)} ms, removed ${removed.toFixed(1)} ms (from ${add.toFixed(0)})`);
  });

  test('bad input is logged once with file, object and reason, skipped, and everything else keeps working', async () => {
    await writeFile(join(lab.manifestsDir, 'broken.yaml'), 'kind: Service\nmetadata: [unclosed\n');
    await writeManifest('bad.json', [
      { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web', namespace: 'default' } },
      service('bad-ip', '10.96.0.999', [{ name: 'p', port: 80 }]),
      service('bad-port', '10.96.0.96', [{ name: 'p', port: 70000 }]),
      {
        apiVersion: 'v1',
        kind: 'Endpoints',
        metadata: { name: 'orphan', namespace: 'default' },
        subsets: [{ addresses: [{ ip: '10.244.0.11' }], ports: [{ port: 80 }] }],
      },
    ]);
    const expectations: Array<[string, RegExp]> = [
      ['broken.yaml', /broken\.yaml/],
      ['Deployment', /Deployment/],
      ['bad-ip', /bad-ip/],
      ['bad-port', /bad-port/],
      ['orphan', /orphan/],
    ];
    const warnings = () =>
      agent
        .stdout()
        .split('\n')
        .filter((l) => l.includes('"level":40'));
    const start = performance.now();
    while (!expectations.every(([, re]) => warnings().some((l) => re.test(l)))) {
      if (performance.now() - start > 3000) assert.fail(`missing warnings; got:\n${warnings().join('\n')}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    // A later, unrelated change must not repeat them.
    await writeManifest('later.json', [service('later', '10.96.0.97', [{ name: 'p', port: 80 }])]);
    await kernelReflects('Service later', () => find('later') !== undefined);
    for (const [name, re] of expectations) {
      assert.equal(warnings().filter((l) => re.test(l)).length, 1, `${name} logged once`);
    }
    assert.equal(await stillRunning(agent), true, 'agent still running');
    assert.deepEqual(countBodies(await probe(['http', '10.96.0.80', '8222', '--count', '6'])).error, undefined);
    assert.equal(find('bad-port'), undefined);
  });

  test('SIGTERM leaves the dataplane serving; a new agent adopts it without a failed connection; cleanup removes it', async () => {
    const loop = probe(['http', '10.96.0.80', '8222', '--count', '400']);
    await new Promise((r) => setTimeout(r, 100));
    await agent.close();
    const listedAfterStop = await lab.exec('node', kpxArgv(['list', '--json', '--bpffs', lab.bpffsPath]));
    assert.ok((JSON.parse(listedAfterStop.stdout) as ListedServicePort[]).some((s) => s.name === 'web'));
    agent = await startAgent();
    if (mode === 'ebpf') assert.match(agent.stdout(), /adopted pinned maps/);
    const results = await loop;
    assert.deepEqual(Object.keys(countBodies(results)).sort(), ['pod-a', 'pod-b', 'pod-c'], 'no failed connection during restart');

    await agent.close();
    const cleanup = await lab.exec('node', kpxArgv(['cleanup', '--bpffs', lab.bpffsPath, '--cgroup', lab.cgroupPath]));
    assert.equal(cleanup.code, 0, cleanup.stderr);
    const rules = await lab.exec('node', ['iptables-save']);
    // KUBE-FIREWALL is kubelet's chain (kpx fills it for 127.0.0.1 NodePorts): cleanup leaves it.
    const left = rules.stdout.split('\n').filter((l) => l.includes('KUBE-') && !l.includes('KUBE-FIREWALL'));
    assert.deepEqual(left, [], 'no kpx chain or jump left');
    assert.ok(!existsSync(join(lab.bpffsPath, 'kpx_frontends')), 'maps unpinned');
    const attached = execFileSync('bpftool', ['-j', 'cgroup', 'show', lab.cgroupPath], { encoding: 'utf8' });
    assert.deepEqual(JSON.parse(attached.trim() || '[]'), [], 'no program left on the cgroup');
  });
});
