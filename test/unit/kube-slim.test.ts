// What the watch keeps of an API object (src/source/slim.ts), and the list
// and watch that keeps it (src/source/list-watch.ts) against the fake API server.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { connectToApiServer } from '../../src/source/kube-connection.js';
import { ListWatch, type Named } from '../../src/source/list-watch.js';
import { slimEndpointSlice, slimService } from '../../src/source/slim.js';
import { startFakeApiServer } from '../fixtures/fake-apiserver.js';

test('a Service keeps the fields the model reads and only the labels kpx knows', () => {
  const raw = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: 'web',
      namespace: 'default',
      resourceVersion: '7',
      uid: 'u-1',
      labels: { app: 'web', 'service.kubernetes.io/headless': '' },
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"big":"blob"}' },
      managedFields: [{ manager: 'kubectl' }],
    },
    spec: { type: 'ClusterIP', clusterIP: '10.96.0.1', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'h2' }] },
    status: { loadBalancer: { ingress: [{ ip: '192.0.2.1', ports: [{ port: 80 }] }] }, conditions: [] },
  };
  assert.deepEqual(slimService(raw), {
    metadata: { name: 'web', namespace: 'default', resourceVersion: '7', labels: { 'service.kubernetes.io/headless': '' } },
    spec: { type: 'ClusterIP', clusterIP: '10.96.0.1', ports: [{ name: 'http', port: 80, targetPort: 'http' }] },
    status: { loadBalancer: { ingress: [{ ip: '192.0.2.1' }] } },
  });
});

test('values of the wrong type are kept as they are, for the model to reject', () => {
  assert.deepEqual(slimService({ metadata: { name: 'x' }, spec: { type: 7, ports: 'none' } }), { metadata: { name: 'x' }, spec: { type: 7, ports: 'none' } });
  assert.deepEqual(slimService({ metadata: { name: 'x' }, spec: 'nope' }), { metadata: { name: 'x' }, spec: 'nope' });
});

test("a slice keeps its trigger time, and equal endpoint conditions are one shared object", () => {
  const slice = (name: string) =>
    slimEndpointSlice({
      metadata: { name, annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': '2024-01-01T00:00:00Z', other: 'x' } },
      endpoints: [
        { addresses: ['10.0.0.1'], conditions: { ready: true, serving: true, terminating: false }, targetRef: { kind: 'Pod' } },
        { addresses: ['10.0.0.2'], conditions: { ready: false, serving: 'yes' } },
      ],
    });
  const a = slice('a');
  const b = slice('b');
  assert.deepEqual(a.metadata?.annotations, { 'endpoints.kubernetes.io/last-change-trigger-time': '2024-01-01T00:00:00Z' });
  assert.deepEqual(a.endpoints?.[0], { addresses: ['10.0.0.1'], conditions: { ready: true, serving: true, terminating: false } });
  assert.equal(a.endpoints?.[0]?.conditions, b.endpoints?.[0]?.conditions, 'shared');
  // A malformed value is not shared: it stays for the model to reject.
  assert.deepEqual(a.endpoints?.[1]?.conditions, { ready: false, serving: 'yes' });
  assert.notEqual(a.endpoints?.[1]?.conditions, b.endpoints?.[1]?.conditions);
});

test('a relist after 410 Gone deletes what is gone, leaves unchanged objects alone and reads current state', async () => {
  const api = await startFakeApiServer();
  const dir = await mkdtemp(join(tmpdir(), 'kpx-lw-'));
  const events: string[] = [];
  let lw: ListWatch<Named> | undefined;
  try {
    const kubeconfig = join(dir, 'kubeconfig');
    await api.writeKubeconfig(kubeconfig);
    const svc = (name: string, clusterIP: string) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' }, spec: { clusterIP } });
    api.create('services', svc('kept', '10.96.0.1'));
    api.create('services', svc('gone', '10.96.0.2'));
    lw = new ListWatch<Named>(await connectToApiServer({ kubeconfig }), {
      resource: 'services',
      path: '/api/v1/services',
      slim: slimService,
      onUpsert: (o) => events.push(`upsert ${o.metadata?.name}`),
      onDelete: (o) => events.push(`delete ${o.metadata?.name}`),
      log: pino({ level: 'silent' }),
      retryMinMs: 10,
      retryMaxMs: 100,
    });
    lw.start();
    await lw.firstList;
    await api.waitForWatches('services');
    const kept = [...lw.list()].find((o) => o.metadata?.name === 'kept');
    assert.deepEqual(events.sort(), ['upsert gone', 'upsert kept']);
    events.length = 0;

    // While no watch is open: a delete, then compaction, so resuming gets 410 Gone.
    api.dropWatches('services');
    api.remove('services', 'default', 'gone');
    api.compact();
    const deadline = Date.now() + 5000;
    while (events.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    await api.waitForWatches('services');
    assert.deepEqual(events, ['delete gone']);
    assert.equal(api.countLists('services'), 2, 'listed again');
    const lists = api.requests.filter((r) => r.resource === 'services' && r.verb === 'list').map((r) => r.query.resourceVersion);
    assert.deepEqual(lists, ['0', undefined], 'the first list reads the watch cache (as client-go), the relist after 410 does not go back in time');
    assert.equal([...lw.list()].find((o) => o.metadata?.name === 'kept'), kept, 'the unchanged object is the same reference');
  } finally {
    lw?.stop();
    await api.close();
    await rm(dir, { recursive: true, force: true });
  }
});
