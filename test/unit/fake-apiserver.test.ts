/**
 * Proves the fake API server against the real @kubernetes/client-node
 * (KubeConfig, generated APIs, Watch, makeInformer), so tests built on it
 * exercise the same protocol a real cluster would.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import {
  ApisApi,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  Watch,
  makeInformer,
  type Informer,
  type KubernetesObject,
  type ObjectCache,
  type V1EndpointSlice,
  type V1Service,
} from '@kubernetes/client-node';
import { startFakeApiServer, type FakeApiServer } from '../fixtures/fake-apiserver.js';

// The selector kube-proxy puts on its Service and EndpointSlice informers.
const PROXY_NAME = 'service.kubernetes.io/service-proxy-name';
const NOT_PROXIED_ELSEWHERE = `!${PROXY_NAME}`;

async function waitFor(what: string, cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A server and a KubeConfig pointing at it; both torn down after the test. */
async function setup(t: TestContext, opts?: { servesEndpointSlices?: boolean }): Promise<{ api: FakeApiServer; kc: KubeConfig }> {
  const api = await startFakeApiServer(opts);
  t.after(() => api.close());
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfigYaml());
  return { api, kc };
}

type Events<T> = { add: T[]; update: T[]; delete: T[]; error: unknown[]; connect: number };

/** An informer with every callback recorded; stopped after the test (before the server closes). */
function track<T extends KubernetesObject>(t: TestContext, informer: Informer<T> & ObjectCache<T>): Events<T> {
  const events: Events<T> = { add: [], update: [], delete: [], error: [], connect: 0 };
  informer.on('add', (o) => events.add.push(o));
  informer.on('update', (o) => events.update.push(o));
  informer.on('delete', (o) => events.delete.push(o));
  informer.on('error', (e) => events.error.push(e));
  informer.on('connect', () => events.connect++);
  t.after(() => informer.stop());
  return events;
}

function serviceInformer(t: TestContext, kc: KubeConfig, labelSelector?: string) {
  const core = kc.makeApiClient(CoreV1Api);
  const informer = makeInformer<V1Service>(
    kc,
    '/api/v1/services',
    () => core.listServiceForAllNamespaces(labelSelector !== undefined ? { labelSelector } : {}),
    labelSelector,
  );
  return { informer, events: track(t, informer) };
}

function sliceInformer(t: TestContext, kc: KubeConfig, labelSelector?: string) {
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  const informer = makeInformer<V1EndpointSlice>(
    kc,
    '/apis/discovery.k8s.io/v1/endpointslices',
    () => discovery.listEndpointSliceForAllNamespaces(labelSelector !== undefined ? { labelSelector } : {}),
    labelSelector,
  );
  return { informer, events: track(t, informer) };
}

function service(name: string, labels?: Record<string, string>, clusterIP = '10.96.0.10'): V1Service {
  return {
    metadata: { name, namespace: 'default', ...(labels ? { labels } : {}) },
    spec: { clusterIP, ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
  };
}

function slice(name: string, service: string, labels: Record<string, string> = {}): V1EndpointSlice {
  return {
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': service, ...labels } },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['10.244.1.2'], conditions: { ready: true } }],
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
}

const names = (objs: readonly KubernetesObject[]): string[] => objs.map((o) => o.metadata?.name ?? '?').sort();

test('the initial list delivers the stored objects', async (t) => {
  const { api, kc } = await setup(t);
  api.create('services', service('a'));
  api.create('services', service('b'));
  const { informer, events } = serviceInformer(t, kc);

  await informer.start();

  assert.deepEqual(names(informer.list()), ['a', 'b']);
  assert.deepEqual(names(events.add), ['a', 'b']);
  assert.equal(informer.get('a', 'default')?.spec?.clusterIP, '10.96.0.10');
  assert.equal(api.countLists('services'), 1);
  assert.equal(api.openWatchCount('services'), 1);
  // client-node sends watch=true and the list's resourceVersion, nothing else.
  const watchReq = api.requests.find((r) => r.verb === 'watch');
  assert.deepEqual(watchReq?.query, { watch: 'true', resourceVersion: api.resourceVersion() });
});

test('create, update and delete arrive as add, update and delete events', async (t) => {
  const { api, kc } = await setup(t);
  const { informer, events } = serviceInformer(t, kc);
  await informer.start();

  api.create('services', service('web'));
  await waitFor('add', () => events.add.length === 1);
  api.update('services', service('web', undefined, '10.96.0.99'));
  await waitFor('update', () => events.update.length === 1);
  assert.equal(events.update[0]?.spec?.clusterIP, '10.96.0.99');
  assert.equal(informer.get('web', 'default')?.spec?.clusterIP, '10.96.0.99');
  api.remove('services', 'default', 'web');
  await waitFor('delete', () => events.delete.length === 1);

  assert.deepEqual(informer.list(), []);
  assert.equal(events.error.length, 0);
  assert.equal(api.countLists('services'), 1);
});

test('nodes are cluster-scoped and served at /api/v1/nodes', async (t) => {
  const { api, kc } = await setup(t);
  api.create('nodes', { metadata: { name: 'node-1' } });
  const core = kc.makeApiClient(CoreV1Api);

  const list = await core.listNode();
  assert.deepEqual(names(list.items), ['node-1']);
  const node = await core.readNode({ name: 'node-1' });
  assert.equal(node.metadata?.resourceVersion, api.resourceVersion());
  const byName = await core.listNode({ fieldSelector: 'metadata.name=node-2' });
  assert.deepEqual(byName.items, []);
});

test('the label selector filters both the list and the watch', async (t) => {
  const { api, kc } = await setup(t);
  api.create('services', service('mine'));
  api.create('services', service('theirs', { [PROXY_NAME]: 'other-proxy' }));
  api.create('endpointslices', slice('mine-abc', 'mine'));
  api.create('endpointslices', slice('theirs-abc', 'theirs', { [PROXY_NAME]: 'other-proxy' }));
  const svc = serviceInformer(t, kc, NOT_PROXIED_ELSEWHERE);
  const eps = sliceInformer(t, kc, NOT_PROXIED_ELSEWHERE);
  await svc.informer.start();
  await eps.informer.start();

  assert.deepEqual(names(svc.informer.list()), ['mine']);
  assert.deepEqual(names(eps.informer.list()), ['mine-abc']);
  assert.equal(api.requests.find((r) => r.verb === 'watch')?.query.labelSelector, NOT_PROXIED_ELSEWHERE);

  // Live events for excluded objects never reach the informer...
  api.create('services', service('theirs-2', { [PROXY_NAME]: 'other-proxy' }));
  api.create('endpointslices', slice('theirs-2-abc', 'theirs-2', { [PROXY_NAME]: 'other-proxy' }));
  // ...and an object leaving the selector arrives as a delete, entering it as an add.
  api.update('services', service('mine', { [PROXY_NAME]: 'other-proxy' }));
  api.update('services', service('theirs'));
  api.create('endpointslices', slice('mine-def', 'mine'));

  await waitFor('service moves', () => svc.events.delete.length === 1 && svc.events.add.length === 2);
  await waitFor('new slice', () => eps.events.add.length === 2);
  assert.deepEqual(names(svc.informer.list()), ['theirs']);
  assert.deepEqual(names(svc.events.delete), ['mine']);
  assert.deepEqual(names(eps.informer.list()), ['mine-abc', 'mine-def']);
  assert.equal(svc.events.update.length, 0);
});

test('a dropped watch is an informer error; start() resumes from the last resourceVersion without a relist', async (t) => {
  const { api, kc } = await setup(t);
  api.create('services', service('a'));
  const { informer, events } = serviceInformer(t, kc);
  await informer.start();

  api.dropWatches('services');
  await waitFor('error event', () => events.error.length === 1);
  assert.equal(api.openWatchCount('services'), 0);

  // Changes made while disconnected are replayed from the event log.
  api.create('services', service('b'));
  api.remove('services', 'default', 'a');
  await informer.start();

  await waitFor('replayed events', () => events.add.length === 2 && events.delete.length === 1);
  assert.deepEqual(names(informer.list()), ['b']);
  assert.equal(api.countLists('services'), 1, 'no relist');
  assert.equal(api.countRequests((r) => r.verb === 'watch'), 2);
});

test('a cleanly ended watch is re-established by the informer itself, without error or relist', async (t) => {
  const { api, kc } = await setup(t);
  const { informer, events } = serviceInformer(t, kc);
  await informer.start();

  api.endWatches('services');
  await waitFor('second watch', () => api.countRequests((r) => r.verb === 'watch') === 2);
  await api.waitForWatches('services');
  api.create('services', service('after'));
  await waitFor('add', () => events.add.length === 1);

  assert.equal(events.error.length, 0);
  assert.equal(api.countLists('services'), 1);
});

test('after compaction a restarted watch gets 410 Expired and the informer relists', async (t) => {
  const { api, kc } = await setup(t);
  api.create('services', service('a'));
  api.create('services', service('b'));
  const { informer, events } = serviceInformer(t, kc);
  await informer.start();

  api.dropWatches('services');
  await waitFor('error event', () => events.error.length === 1);
  api.remove('services', 'default', 'a');
  api.create('services', service('c'));
  api.compact();
  await informer.start();

  // 410 in-stream, stream end, then a fresh list whose diff yields the missed delete and add.
  await waitFor('relist', () => api.countLists('services') === 2);
  await waitFor('diffed events', () => events.delete.length === 1 && events.add.length === 3);
  assert.deepEqual(names(informer.list()), ['b', 'c']);
  assert.deepEqual(names(events.delete), ['a']);
  assert.equal(events.error.length, 1, 'the 410 itself is not an error event');
  await api.waitForWatches('services');
});

test('Watch reports 410 as an ERROR event followed by a clean end', async (t) => {
  const { api, kc } = await setup(t);
  api.create('services', service('a'));
  const staleRv = api.resourceVersion();
  api.create('services', service('b'));
  api.compact();

  const seen: Array<{ type: string; object: any }> = [];
  const done = new Promise<unknown>((resolve) => {
    void new Watch(kc).watch('/api/v1/services', { resourceVersion: String(Number(staleRv) - 1) }, (type, object) => seen.push({ type, object }), resolve);
  });
  assert.equal(await done, null);
  assert.equal(seen.length, 1);
  assert.equal(seen[0]?.type, 'ERROR');
  assert.equal(seen[0]?.object.code, 410);
  assert.equal(seen[0]?.object.reason, 'Expired');
});

test('bookmarks carry the current resourceVersion; bursts arrive as separate events in order', async (t) => {
  const { api, kc } = await setup(t);
  const seen: Array<{ type: string; rv: string }> = [];
  const controller = await new Watch(kc).watch(
    '/api/v1/services',
    { resourceVersion: api.resourceVersion() },
    (type, object) => seen.push({ type, rv: object.metadata.resourceVersion }),
    () => {},
  );
  t.after(() => controller.abort());
  await api.waitForWatches('services');

  const burst = Array.from({ length: 50 }, (_, i) => service('burst', { gen: String(i) }));
  const stored = api.applyBurst('services', burst);
  api.sendBookmark('services');

  await waitFor('burst and bookmark', () => seen.length === 51);
  assert.deepEqual(
    seen.slice(0, 50).map((e) => e.type),
    ['ADDED', ...Array(49).fill('MODIFIED')],
  );
  assert.deepEqual(
    seen.slice(0, 50).map((e) => e.rv),
    stored.map((o) => o.metadata?.resourceVersion),
  );
  assert.deepEqual(seen[50], { type: 'BOOKMARK', rv: api.resourceVersion() });
});

test('an unavailable server fails the informer; it recovers once the server is back', async (t) => {
  const { api, kc } = await setup(t);
  api.create('services', service('a'));
  const { informer, events } = serviceInformer(t, kc);
  await informer.start();

  api.setUnavailable(true);
  await waitFor('error from dropped watch', () => events.error.length === 1);
  await informer.start(); // the relist-free rewatch is refused too
  await waitFor('error from refused watch', () => events.error.length === 2);

  api.setUnavailable(true, '503');
  await assert.rejects(kc.makeApiClient(CoreV1Api).listServiceForAllNamespaces(), (err: any) => err.code === 503);

  api.setUnavailable(false);
  await informer.start();
  await api.waitForWatches('services');
  api.create('services', service('b'));
  await waitFor('add after recovery', () => events.add.length === 2);
});

test('without EndpointSlices the discovery.k8s.io group is absent and its list is a 404', async (t) => {
  const { kc } = await setup(t, { servesEndpointSlices: false });

  await assert.rejects(kc.makeApiClient(DiscoveryV1Api).listEndpointSliceForAllNamespaces(), (err: any) => {
    assert.equal(err.code, 404);
    // ApiException carries the response body as raw text.
    const status = JSON.parse(err.body);
    assert.equal(status.kind, 'Status');
    assert.equal(status.reason, 'NotFound');
    return true;
  });
  await assert.rejects(kc.makeApiClient(DiscoveryV1Api).getAPIResources(), (err: any) => err.code === 404);
  const groups = await kc.makeApiClient(ApisApi).getAPIVersions();
  assert.deepEqual(groups.groups, []);
  // Endpoints (the fallback) still work.
  const endpoints = await kc.makeApiClient(CoreV1Api).listEndpointsForAllNamespaces();
  assert.deepEqual(endpoints.items, []);
});

test('with EndpointSlices discovery advertises the group and resource', async (t) => {
  const { kc } = await setup(t);
  const resources = await kc.makeApiClient(DiscoveryV1Api).getAPIResources();
  assert.equal(resources.groupVersion, 'discovery.k8s.io/v1');
  assert.deepEqual(resources.resources.map((r) => r.name), ['endpointslices']);
  const groups = await kc.makeApiClient(ApisApi).getAPIVersions();
  assert.deepEqual(groups.groups.map((g) => g.name), ['discovery.k8s.io']);
});
