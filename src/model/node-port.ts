/**
 * Deterministic nodePort allocation for manifest mode, where kpx stands in
 * for the API server's allocator. Pure: the same inputs always give the same
 * ports.
 */
import { fnv1a32 } from './cluster-ip.js';
import type { PortRange } from './types.js';

function formatPortRange(range: PortRange): string {
  return `${range.min}-${range.max}`;
}

/** 1 <= min <= max <= 65535, integers. */
export function isValidPortRange(r: PortRange): boolean {
  return Number.isInteger(r.min) && Number.isInteger(r.max) && r.min >= 1 && r.min <= r.max && r.max <= 65535;
}

export interface NodePortAllocation {
  /** key → allocated nodePort. */
  allocated: Map<string, number>;
  /** key → why no nodePort could be given. */
  failed: Map<string, string>;
}

/**
 * Allocates one nodePort per key from range.
 *
 * Candidate = min + (fnv1a32(key) mod size). A candidate in `reserved` (the
 * nodePorts Services ask for explicitly) or given to an earlier key is
 * skipped by linear probing, wrapping inside the range. Keys are processed
 * sorted, so the result does not depend on their order, and a key keeps its
 * port when others come and go unless one of them lands on it first.
 */
export function allocateNodePorts(range: PortRange, keys: Iterable<string>, reserved: Iterable<number>): NodePortAllocation {
  const allocated = new Map<string, number>();
  const failed = new Map<string, string>();
  const sorted = [...new Set(keys)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (!isValidPortRange(range)) {
    for (const k of sorted) failed.set(k, `cannot allocate a nodePort: invalid service NodePort range ${formatPortRange(range)}`);
    return { allocated, failed };
  }
  const size = range.max - range.min + 1;
  const taken = new Set(reserved);
  for (const key of sorted) {
    let offset = fnv1a32(key) % size;
    let found: number | null = null;
    for (let tries = 0; tries < size; tries++) {
      const candidate = range.min + offset;
      if (!taken.has(candidate)) {
        found = candidate;
        break;
      }
      offset = (offset + 1) % size;
    }
    if (found === null) {
      failed.set(key, `cannot allocate a nodePort: service NodePort range ${formatPortRange(range)} is full`);
      continue;
    }
    taken.add(found);
    allocated.set(key, found);
  }
  return { allocated, failed };
}
