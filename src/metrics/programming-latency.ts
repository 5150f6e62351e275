/**
 * kube-proxy's network programming latency: for every EndpointSlice change a
 * sync applied, the time from the change that triggered it (the slice's
 * endpoints.kubernetes.io/last-change-trigger-time) to the moment the
 * dataplane held it. Pure; the metrics work exports these as
 * kubeproxy_network_programming_duration_seconds.
 */
export function networkProgrammingLatencies(triggerTimesMs: readonly number[], appliedAtMs: number): number[] {
  // A trigger time in the future is clock skew between nodes: kube-proxy drops those too.
  return triggerTimesMs.filter((t) => t <= appliedAtMs).map((t) => (appliedAtMs - t) / 1000);
}
