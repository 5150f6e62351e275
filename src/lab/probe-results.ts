// Shapes of what `probe` prints, plus small helpers for tests and the demo.

/** `at`: when the attempt started, in ms since the epoch (Date.now()). */
export type ProbeResult =
  | { ok: true; body: string; peer: string; at: number }
  | { ok: false; error: string; at: number };

export interface ProbeOutput {
  results: ProbeResult[];
}

/** Parses the single JSON line printed by probe.js. */
export function parseProbeOutput(stdout: string): ProbeOutput {
  const line = stdout.trim().split('\n').pop() ?? '';
  const parsed = JSON.parse(line) as ProbeOutput;
  if (!Array.isArray(parsed.results)) throw new Error(`not probe output: ${line}`);
  return parsed;
}

/**
 * Counts answers per body; failed attempts are counted under `error:<code>`,
 * e.g. { 'pod-a': 3, 'pod-b': 2, 'error:ECONNREFUSED': 1 }.
 */
export function countBodies(results: readonly ProbeResult[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of results) {
    const key = r.ok ? r.body : `error:${r.error}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

/** Counts successful answers per peer address ("addr:port"). */
export function countPeers(results: readonly ProbeResult[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of results) {
    if (r.ok) counts[r.peer] = (counts[r.peer] ?? 0) + 1;
  }
  return counts;
}
