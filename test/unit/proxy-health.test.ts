import { test } from 'node:test';
import assert from 'node:assert/strict';
import { healthzAnswer, livezAnswer, nodeEligible, ProxyHealth, serviceHealthAnswer, TO_BE_DELETED_TAINT, type HealthClock } from '../../src/health/proxy-health.js';

const T0 = Date.parse('2026-12-06T12:00:00Z');

/** A clock the test moves: monotonic and wall time advance together unless the wall clock is stepped. */
function fakeClock(): HealthClock & { advance(ms: number): void; stepWall(ms: number): void } {
  let mono = 1000;
  let wall = T0;
  return {
    monotonicMs: () => mono,
    wallMs: () => wall,
    advance(ms) {
      mono += ms;
      wall += ms;
    },
    stepWall(ms) {
      wall += ms;
    },
  };
}

test('ProxyHealth: healthy while starting up however long the source takes; then late once a change waits the timeout; a sync mends it', () => {
  const clock = fakeClock();
  const health = new ProxyHealth(clock, 60_000);
  clock.advance(600_000);
  assert.equal(health.healthy(), true, 'nothing waits before the source has its first view');
  health.queued();
  clock.advance(59_999);
  assert.equal(health.healthy(), true, 'the first sync is due, not late yet');
  clock.advance(1);
  assert.equal(health.healthy(), false, 'the first sync is late');
  health.updated();
  const syncedAt = clock.wallMs();
  clock.advance(500_000);
  assert.equal(health.healthy(), true, 'nothing waits: healthy however long ago the last sync was');
  health.queued();
  clock.advance(50_000);
  health.queued();
  clock.advance(9_999);
  assert.equal(health.healthy(), true);
  clock.advance(1);
  assert.equal(health.healthy(), false, 'the oldest waiting change counts, not the newest');
  assert.equal(health.times().lastUpdated, new Date(syncedAt).toISOString(), 'a late proxy reports its last sync');
  health.updated();
  health.queued();
  clock.stepWall(3_600_000);
  assert.equal(health.healthy(), true, 'a step of the wall clock makes no change late');
  assert.deepEqual(health.times(), { lastUpdated: new Date(clock.wallMs()).toISOString(), currentTime: new Date(clock.wallMs()).toISOString() }, 'a healthy one reports now, as kube-proxy does');
});

test("nodeEligible: not while the Node is being deleted or carries the autoscaler's removal taint", () => {
  assert.equal(nodeEligible(undefined), true, 'no Node object known (a manifest folder)');
  assert.equal(nodeEligible({ spec: { taints: [{ key: 'node.kubernetes.io/unschedulable' }] } }), true);
  assert.equal(nodeEligible({ spec: { taints: [{ key: TO_BE_DELETED_TAINT }] } }), false);
  assert.equal(nodeEligible({ metadata: { deletionTimestamp: '2026-12-06T12:00:00Z' } }), false);
});

test("healthzAnswer and livezAnswer: kube-proxy's status codes and JSON fields", () => {
  const clock = fakeClock();
  const health = new ProxyHealth(clock, 60_000);
  clock.advance(5000);
  const headers = { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' };
  assert.deepEqual(healthzAnswer(health, undefined), {
    status: 200,
    headers,
    body: '{"lastUpdated":"2026-12-06T12:00:05.000Z","currentTime":"2026-12-06T12:00:05.000Z","nodeEligible":true}',
  });
  const going = { metadata: { deletionTimestamp: '2026-12-06T12:00:00Z' } };
  assert.equal(healthzAnswer(health, going).status, 503);
  assert.match(healthzAnswer(health, going).body, /"nodeEligible":false/);
  assert.deepEqual(livezAnswer(health), { status: 200, headers, body: '{"lastUpdated":"2026-12-06T12:00:05.000Z","currentTime":"2026-12-06T12:00:05.000Z"}' });
  health.queued();
  clock.advance(60_000);
  assert.deepEqual(livezAnswer(health), { status: 503, headers, body: '{"lastUpdated":"2026-12-06T12:00:00.000Z","currentTime":"2026-12-06T12:01:05.000Z"}' });
  assert.equal(healthzAnswer(health, undefined).status, 503);
});

test('serviceHealthAnswer: 200 only with a local endpoint and a healthy proxy; the count in the body and in the weight header', () => {
  const check = { namespace: 'default', name: 'lb', port: 32000, localEndpoints: 2 };
  assert.deepEqual(serviceHealthAnswer(check, true), {
    status: 200,
    headers: { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff', 'X-Load-Balancing-Endpoint-Weight': '2' },
    body: '{"service":{"namespace":"default","name":"lb"},"localEndpoints":2,"serviceProxyHealthy":true}',
  });
  assert.equal(serviceHealthAnswer(check, false).status, 503);
  assert.equal(serviceHealthAnswer({ ...check, localEndpoints: 0 }, true).status, 503);
});
