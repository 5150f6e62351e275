import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentMetrics } from '../../src/metrics/agent-metrics.js';

/** The sample lines of one metric family in the exposition text. */
function samples(text: string, name: string): string[] {
  return text.split('\n').filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
}

test("AgentMetrics: kube-proxy's sync, queue, programming and health metrics under kube-proxy's names and buckets", async () => {
  const metrics = new AgentMetrics();
  metrics.queued(1_765_000_000_000, 'endpoints');
  metrics.queued(1_765_000_000_000, 'service');
  metrics.queued(1_765_000_000_000, 'endpoints');
  metrics.queued(1_765_000_000_000, undefined);
  let text = await metrics.registry.metrics();
  assert.deepEqual(samples(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), ['kubeproxy_sync_proxy_rules_endpoint_changes_pending 2']);
  assert.deepEqual(samples(text, 'kubeproxy_sync_proxy_rules_service_changes_pending'), ['kubeproxy_sync_proxy_rules_service_changes_pending 1']);
  metrics.synced(1_765_000_000_500, 0.003, true);
  metrics.synced(1_765_000_001_000, 0.0004, false);
  metrics.programmed([0.3, 2.5]);
  metrics.healthAnswered('/healthz', 200);
  metrics.healthAnswered('/healthz', 503);
  metrics.healthAnswered('/livez', 200);
  text = await metrics.registry.metrics();
  assert.deepEqual(samples(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), ['kubeproxy_sync_proxy_rules_endpoint_changes_pending 0'], 'a sync takes them all');
  assert.deepEqual(samples(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_total'), ['kubeproxy_sync_proxy_rules_endpoint_changes_total 2']);
  assert.deepEqual(samples(text, 'kubeproxy_sync_proxy_rules_service_changes_total'), ['kubeproxy_sync_proxy_rules_service_changes_total 1']);
  assert.deepEqual(samples(text, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds'), ['kubeproxy_sync_proxy_rules_last_timestamp_seconds 1765000001']);
  assert.deepEqual(samples(text, 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds'), ['kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds 1765000000']);
  assert.deepEqual(samples(text, 'kubeproxy_sync_proxy_rules_duration_seconds_count'), ['kubeproxy_sync_proxy_rules_duration_seconds_count 2']);
  assert.deepEqual(samples(text, 'kubeproxy_sync_full_proxy_rules_duration_seconds_count'), ['kubeproxy_sync_full_proxy_rules_duration_seconds_count 1']);
  assert.deepEqual(samples(text, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count'), ['kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1']);
  // 1 ms doubling: the 0.4 ms sync in the first bucket, the 3 ms one by 4 ms.
  const buckets = samples(text, 'kubeproxy_sync_proxy_rules_duration_seconds_bucket');
  assert.equal(buckets.length, 16, '15 bounds and +Inf');
  assert.ok(buckets.includes('kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.001"} 1'), buckets.join('\n'));
  assert.ok(buckets.includes('kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.004"} 2'), buckets.join('\n'));
  assert.ok(buckets.includes('kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="16.384"} 2'), buckets.join('\n'));
  const programming = samples(text, 'kubeproxy_network_programming_duration_seconds_bucket');
  assert.equal(programming.length, 2 + 59 + 12 + 7 + 1);
  assert.ok(programming.includes('kubeproxy_network_programming_duration_seconds_bucket{le="0.5"} 1'));
  assert.ok(programming.includes('kubeproxy_network_programming_duration_seconds_bucket{le="3"} 2'));
  assert.deepEqual(samples(text, 'kubeproxy_proxy_healthz_total'), ['kubeproxy_proxy_healthz_total{code="200"} 1', 'kubeproxy_proxy_healthz_total{code="503"} 1']);
  assert.deepEqual(samples(text, 'kubeproxy_proxy_livez_total'), ['kubeproxy_proxy_livez_total{code="200"} 1']);
  assert.ok(samples(text, 'process_resident_memory_bytes').length === 1, 'process metrics too, as kube-proxy has');
  assert.deepEqual(samples(text, 'kpx_packets_total'), [], 'no packet counters without packet programs');
});

test('AgentMetrics: kpx_packets_total reads the packet counters at every scrape', async () => {
  let newFlow = 5n;
  const metrics = new AgentMetrics({ packetCounts: () => ({ newFlow, forward: 7n, reply: 6n, localReply: 0n, drop: 1n }) });
  assert.deepEqual(samples(await metrics.registry.metrics(), 'kpx_packets_total'), [
    'kpx_packets_total{path="new_flow"} 5',
    'kpx_packets_total{path="forward"} 7',
    'kpx_packets_total{path="reply"} 6',
    'kpx_packets_total{path="local_reply"} 0',
    'kpx_packets_total{path="drop"} 1',
  ]);
  newFlow = 9n;
  assert.ok(samples(await metrics.registry.metrics(), 'kpx_packets_total').includes('kpx_packets_total{path="new_flow"} 9'));
});
