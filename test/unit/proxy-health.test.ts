import { test } from 'node:test';
import assert from 'node:assert/strict';
import { healthzAnswer, livezAnswer, nodeEligible, ProxyHealth, serviceHealthAnswer, TO_BE_DELETED_TAINT } from '../../src/health/proxy-health.js';

const T0 = Date.parse('2026-12-06T12:00:00Z');

test('ProxyHealth: healthy while starting up and while a change waits less than the timeout; late after that; a sync mends it', () => {
  const health = new ProxyHealth(T0, 60_000);
  assert.equal(health.healthy(T0 + 59_999), true, 'starting up, not late yet');
  assert.equal(health.healthy(T0 + 60_000), false, 'the first sync is late');
  health.updated(T0 + 61_000);
  assert.equal(health.healthy(T0 + 500_000), true, 'nothing waits: healthy however long ago the last sync was');
  health.queued(T0 + 600_000);
  health.queued(T0 + 650_000);
  assert.equal(health.healthy(T0 + 659_999), true);
  assert.equal(health.healthy(T0 + 660_000), false, 'the oldest waiting change counts, not the newest');
  assert.equal(health.lastUpdated(T0 + 660_000), T0 + 61_000, 'a late proxy reports its last sync');
  assert.equal(health.lastUpdated(T0 + 659_000), T0 + 659_000, 'a healthy one reports now, as kube-proxy does');
});

test('nodeEligible: not while the Node is being deleted or carries the autoscaler\'s removal taint', () => {
  assert.equal(nodeEligible(undefined), true, 'no Node object known (a manifest folder)');
  assert.equal(nodeEligible({ spec: { taints: [{ key: 'node.kubernetes.io/unschedulable' }] } }), true);
  assert.equal(nodeEligible({ spec: { taints: [{ key: TO_BE_DELETED_TAINT }] } }), false);
  assert.equal(nodeEligible({ metadata: { deletionTimestamp: '2026-12-06T12:00:00Z' } }), false);
});

test('healthzAnswer and livezAnswer: kube-proxy\'s status codes and JSON fields', () => {
  const health = new ProxyHealth(T0, 60_000);
  health.updated(T0);
  const now = T0 + 5000;
  assert.deepEqual(healthzAnswer(health, now, undefined), {
    status: 200,
    headers: { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' },
    body: '{"lastUpdated":"2026-12-06T12:00:05.000Z","currentTime":"2026-12-06T12:00:05.000Z","nodeEligible":true}',
  });
  const going = { metadata: { deletionTimestamp: '2026-12-06T12:00:00Z' } };
  assert.equal(healthzAnswer(health, now, going).status, 503);
  assert.match(healthzAnswer(health, now, going).body, /"nodeEligible":false/);
  assert.deepEqual(livezAnswer(health, now), {
    status: 200,
    headers: { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' },
    body: '{"lastUpdated":"2026-12-06T12:00:05.000Z","currentTime":"2026-12-06T12:00:05.000Z"}',
  });
  health.queued(now);
  assert.equal(livezAnswer(health, now + 60_000).status, 503);
  assert.equal(healthzAnswer(health, now + 60_000, undefined).status, 503);
});

test('serviceHealthAnswer: 200 only with a local endpoint and a healthy proxy; the count in a header and the body', () => {
  const check = { namespace: 'default', name: 'lb', port: 32000, localEndpoints: 2 };
  assert.deepEqual(serviceHealthAnswer(check, true), {
    status: 200,
    headers: { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff', 'X-Load-Balancing-Endpoints': '2' },
    body: '{"service":{"namespace":"default","name":"lb"},"localEndpoints":2,"serviceProxyHealthy":true}',
  });
  assert.equal(serviceHealthAnswer(check, false).status, 503);
  assert.equal(serviceHealthAnswer({ ...check, localEndpoints: 0 }, true).status, 503);
});
