import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeSnapshots, parseManifestFile } from '../../src/source/manifest-parse.js';
import { buildModel } from '../../src/model/build.js';

const MULTI = `# a typical manifest folder file
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: 10.96.0.10
  ports:
  - port: 8222
    targetPort: 80
---
# empty document below
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
endpoints:
- addresses: ["10.244.0.5"]
- addresses: ["10.244.0.6"]
  conditions: {ready: true}
ports:
- port: 80
---
apiVersion: v1
kind: Endpoints
metadata:
  name: legacy
subsets:
- addresses: [{ip: 10.0.0.1}]
  ports: [{name: http, port: 31496}]
---
kind: ConfigMap
apiVersion: v1
metadata: {name: cfg, namespace: shop}
`;

test('multi-document YAML: recognised kinds kept with origin, others rejected, empty docs skipped', () => {
  const { objects, rejected } = parseManifestFile('/m/app.yaml', MULTI);
  assert.equal(objects.services.length, 1);
  assert.equal(objects.endpointSlices.length, 1);
  assert.equal(objects.endpoints.length, 1);
  assert.equal(objects.services[0]!.origin, '/m/app.yaml');
  assert.equal(objects.endpointSlices[0]!.origin, '/m/app.yaml');
  assert.equal(objects.endpoints[0]!.origin, '/m/app.yaml');
  assert.deepEqual(objects.services[0]!.spec, { clusterIP: '10.96.0.10', ports: [{ port: 8222, targetPort: 80 }] });
  assert.deepEqual(rejected, [
    { kind: 'Deployment', namespace: 'shop', name: 'web', origin: '/m/app.yaml', reason: 'unsupported kind Deployment' },
    { kind: 'ConfigMap', namespace: 'shop', name: 'cfg', origin: '/m/app.yaml', reason: 'unsupported kind ConfigMap' },
  ]);
  // End to end through the model.
  const m = buildModel(objects, { serviceClusterIPRange: '10.96.0.0/12', allocateClusterIPs: true, allocateNodePorts: true, nodeName: 'node-a', serviceNodePortRange: { min: 30000, max: 32767 }, nodePortAddresses: [] });
  assert.deepEqual(m.servicePorts, [
    {
      ref: { namespace: 'shop', name: 'web', portName: '', protocol: 'TCP' },
      frontends: [{ kind: 'ClusterIP', address: '10.96.0.10', port: 8222 }],
      backends: [
        { address: '10.244.0.5', port: 80, state: 'ready', local: false },
        { address: '10.244.0.6', port: 80, state: 'ready', local: false },
      ],
    },
  ]);
  assert.deepEqual(m.rejected, [{ kind: 'Endpoints', namespace: 'default', name: 'legacy', origin: '/m/app.yaml', reason: 'no Service default/legacy' }]);
});

test('unparseable YAML: one File rejection with the parser message first line, no objects', () => {
  const { objects, rejected } = parseManifestFile('/m/bad.yml', 'apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n   bad: indent\n');
  assert.deepEqual(objects, { services: [], endpoints: [], endpointSlices: [] });
  assert.equal(rejected.length, 1);
  assert.equal(rejected[0]!.kind, 'File');
  assert.equal(rejected[0]!.name, '/m/bad.yml');
  assert.equal(rejected[0]!.origin, '/m/bad.yml');
  assert.equal(rejected[0]!.namespace, '');
  assert.equal(rejected[0]!.reason, 'bad indentation of a mapping entry (5:7)');
});

test('unparseable YAML later in a multi-doc file rejects the whole file', () => {
  const { objects, rejected } = parseManifestFile('/m/x.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nfoo: [1, 2\n');
  assert.equal(objects.services.length, 0);
  assert.equal(rejected.length, 1);
  assert.match(rejected[0]!.reason, /^unexpected end of the stream within a flow collection/);
  assert.ok(!rejected[0]!.reason.includes('\n'));
});

test('JSON: single object and kind List', () => {
  const single = parseManifestFile(
    '/m/svc.json',
    JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's' }, spec: { ports: [{ port: 80 }] } }),
  );
  assert.deepEqual(single.rejected, []);
  assert.deepEqual(single.objects.services, [
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 's' }, spec: { ports: [{ port: 80 }] }, origin: '/m/svc.json' },
  ]);
  const list = parseManifestFile(
    '/m/list.json',
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'List',
      items: [
        { apiVersion: 'v1', kind: 'Service', metadata: { name: 'a' } },
        { apiVersion: 'v1', kind: 'Endpoints', metadata: { name: 'a' } },
        { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'a-1' } },
        { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'x' } },
      ],
    }),
  );
  assert.equal(list.objects.services.length, 1);
  assert.equal(list.objects.endpoints.length, 1);
  assert.equal(list.objects.endpointSlices.length, 1);
  assert.deepEqual(list.rejected, [{ kind: 'Pod', namespace: 'x', name: 'p', origin: '/m/list.json', reason: 'unsupported kind Pod' }]);
});

test('YAML may hold a List too', () => {
  const { objects, rejected } = parseManifestFile(
    '/m/l.yaml',
    'apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: b}\n',
  );
  assert.deepEqual(rejected, []);
  assert.deepEqual(objects.services.map((s) => s.metadata?.name), ['a', 'b']);
});

test('bad JSON: one File rejection', () => {
  const { objects, rejected } = parseManifestFile('/m/bad.json', '{"kind": "Service",');
  assert.equal(objects.services.length, 0);
  assert.equal(rejected.length, 1);
  assert.equal(rejected[0]!.kind, 'File');
  assert.equal(rejected[0]!.name, '/m/bad.json');
  assert.ok(rejected[0]!.reason.length > 0);
});

test('wrong apiVersion, missing kind, non-object document are rejected', () => {
  const text = [
    'apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: s1, namespace: n}',
    'apiVersion: apps/v1\nkind: Service\nmetadata: {name: s2}',
    'apiVersion: v1\nkind: Endpoints\nmetadata: {name: e1}',
    'apiVersion: v1\nmetadata: {name: nokind}',
    '- just\n- a list',
    '42',
  ].join('\n---\n');
  const { objects, rejected } = parseManifestFile('/m/mixed.yaml', text);
  assert.equal(objects.endpoints.length, 1);
  assert.equal(objects.services.length, 0);
  assert.equal(objects.endpointSlices.length, 0);
  assert.deepEqual(rejected, [
    {
      kind: 'EndpointSlice',
      namespace: 'n',
      name: 's1',
      origin: '/m/mixed.yaml',
      reason: 'unsupported apiVersion discovery.k8s.io/v1beta1 for EndpointSlice (want discovery.k8s.io/v1)',
    },
    { kind: 'Service', namespace: '', name: 's2', origin: '/m/mixed.yaml', reason: 'unsupported apiVersion apps/v1 for Service (want v1)' },
    { kind: 'Unknown', namespace: '', name: 'nokind', origin: '/m/mixed.yaml', reason: 'document 4: missing kind' },
    { kind: 'File', namespace: '', name: '/m/mixed.yaml', origin: '/m/mixed.yaml', reason: 'document 5 is not an object' },
    { kind: 'File', namespace: '', name: '/m/mixed.yaml', origin: '/m/mixed.yaml', reason: 'document 6 is not an object' },
  ]);
});

test('empty files and comment-only files give nothing', () => {
  for (const [path, text] of [
    ['/m/e.yaml', ''],
    ['/m/c.yaml', '# nothing here\n---\n---\n'],
    ['/m/e.json', '  \n'],
  ] as const) {
    const r = parseManifestFile(path, text);
    assert.deepEqual(r, { objects: { services: [], endpoints: [], endpointSlices: [] }, rejected: [] }, path);
  }
});

test('unknown kind does not stop the other Services of the folder', () => {
  const a = parseManifestFile('/m/a.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {x: y}\n');
  const b = parseManifestFile('/m/b.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: 10.96.0.9, ports: [{port: 80}]}\n');
  const broken = parseManifestFile('/m/broken.yaml', 'kind: [');
  const merged = mergeSnapshots([a.objects, b.objects, broken.objects]);
  const m = buildModel(merged, { serviceClusterIPRange: '10.96.0.0/12', allocateClusterIPs: false, allocateNodePorts: false, nodeName: 'node-a', serviceNodePortRange: { min: 30000, max: 32767 }, nodePortAddresses: [] });
  assert.deepEqual(m.servicePorts.map((p) => `${p.ref.name} ${p.frontends[0]!.address}:${p.frontends[0]!.port}`), ['s 10.96.0.9:80']);
  assert.deepEqual([...a.rejected, ...broken.rejected].map((r) => r.kind), ['ConfigMap', 'File']);
});

test('mergeSnapshots concatenates in order', () => {
  const a = parseManifestFile('/a.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: a}\n').objects;
  const b = parseManifestFile('/b.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: b}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: b}\n').objects;
  const m = mergeSnapshots([a, b]);
  assert.deepEqual(m.services.map((s) => [s.metadata?.name, s.origin]), [
    ['a', '/a.yaml'],
    ['b', '/b.yaml'],
  ]);
  assert.deepEqual(m.endpoints.map((s) => s.origin), ['/b.yaml']);
  assert.deepEqual(m.endpointSlices, []);
  assert.deepEqual(mergeSnapshots([]), { services: [], endpoints: [], endpointSlices: [] });
});
