import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ObjectSnapshot } from '../../src/k8s/types.js';
import { buildModel } from '../../src/model/build.js';
import { ModelCache } from '../../src/model/incremental.js';
import type { ModelOptions } from '../../src/model/types.js';

const KUBE: ModelOptions = {
  serviceClusterIPRange: '10.96.0.0/12',
  allocateClusterIPs: false,
  nodeName: 'node-a',
  serviceNodePortRange: { min: 30000, max: 32767 },
  allocateNodePorts: false,
  nodePortAddresses: ['192.168.1.10', '127.0.0.1'],
};

/* eslint-disable @typescript-eslint/no-explicit-any */
function service(name: string, clusterIP: string | undefined, spec: any = {}): any {
  return { kind: 'Service', metadata: { name, namespace: 'default' }, spec: { clusterIP, ports: [{ port: 80 }], ...spec }, origin: `${name}.yaml` };
}

function slice(service: string, endpoints: Array<[string, string?]>): any {
  return {
    kind: 'EndpointSlice',
    metadata: { name: `${service}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    endpoints: endpoints.map(([ip, nodeName]) => ({ addresses: [ip], ...(nodeName ? { nodeName } : {}) })),
    ports: [{ port: 8080 }],
    origin: `${service}-slice.yaml`,
  };
}

/** NodePort Services (two on the same nodePort), a ClusterIP one, a NodePort one without its nodePort; local and remote endpoints. */
function snapshot(): ObjectSnapshot {
  return {
    services: [
      service('alpha', '10.96.0.1', { type: 'NodePort', ports: [{ port: 80, nodePort: 30080 }] }),
      service('beta', '10.96.0.2', { type: 'NodePort', ports: [{ port: 80, nodePort: 30080 }] }),
      service('gamma', '10.96.0.3'),
      service('delta', '10.96.0.4', { type: 'NodePort' }),
      service('epsilon', undefined, { type: 'NodePort' }),
    ],
    endpointSlices: [slice('alpha', [['10.244.0.1', 'node-a'], ['10.244.1.1', 'node-b']]), slice('gamma', [['10.244.0.2', 'node-a'], ['10.244.0.3']])],
    endpoints: [],
  };
}

test('ModelCache gives what buildModel gives: NodePorts, their conflicts and rejections, local backends, node addresses', () => {
  const snap = snapshot();
  const cache = new ModelCache();
  const expected = buildModel(snap, KUBE);
  assert.deepEqual(expected.nodeAddresses, ['127.0.0.1', '192.168.1.10']);
  assert.ok(expected.rejected.some((r) => r.name === 'beta' && /NodePort \*:30080\/TCP is already served by Service default\/alpha/.test(r.reason)));
  assert.ok(expected.rejected.some((r) => r.name === 'delta' && r.reason === 'spec.ports[0]: nodePort is missing'));
  const got = cache.build(snap, KUBE);
  assert.deepEqual(got.servicePorts, expected.servicePorts);
  assert.deepEqual(got.nodeAddresses, expected.nodeAddresses);
  assert.deepEqual(new Set(got.rejected), new Set(expected.rejected));
});

test('ModelCache: unchanged objects give the same service port objects; a new node name or node addresses do not go stale', () => {
  const snap = snapshot();
  const cache = new ModelCache();
  const first = cache.build(snap, KUBE);
  const again = cache.build(snap, { ...KUBE, nodePortAddresses: ['172.18.0.2'] });
  const alpha = (m: typeof first) => m.servicePorts.find((sp) => sp.ref.name === 'alpha')!;
  assert.equal(alpha(again), alpha(first), 'memoised on object identity');
  assert.deepEqual(again.nodeAddresses, ['172.18.0.2']);

  const elsewhere = cache.build(snap, { ...KUBE, nodeName: 'node-b' });
  assert.deepEqual(elsewhere.servicePorts, buildModel(snap, { ...KUBE, nodeName: 'node-b' }).servicePorts);
  assert.deepEqual(alpha(elsewhere).backends.map((b) => [b.address, b.local]), [
    ['10.244.0.1', false],
    ['10.244.1.1', true],
  ]);
});

test('ModelCache with nodePort allocation on builds everything, as allocation spans Services', () => {
  const snap = snapshot();
  const manifest: ModelOptions = { ...KUBE, allocateClusterIPs: true, allocateNodePorts: true };
  const got = new ModelCache().build(snap, manifest);
  assert.deepEqual(got, buildModel(snap, manifest));
  const delta = got.servicePorts.find((sp) => sp.ref.name === 'delta')!;
  assert.equal(delta.frontends.filter((f) => f.kind === 'NodePort').length, 1, 'allocated');
  const epsilon = got.servicePorts.find((sp) => sp.ref.name === 'epsilon')!;
  assert.deepEqual(epsilon.frontends.map((f) => f.kind), ['ClusterIP', 'NodePort']);
});
