/**
 * IPv4 helpers and deterministic ClusterIP allocation for manifest mode.
 * Pure: no I/O, no randomness; the same inputs always give the same addresses.
 */

/**
 * Parses a dotted-quad IPv4 address (no leading zeros, as Go's net.ParseIP)
 * into an unsigned 32-bit integer, or returns null. Digits by hand: a full
 * sync parses a few hundred thousand addresses, and a regular expression
 * plus split() cost several times as much.
 */
export function parseIPv4(s: unknown): number | null {
  if (typeof s !== 'string') return null;
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || ++dots > 3) return null;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57 && digits < 3 && !(digits === 1 && octet === 0)) {
      octet = octet * 10 + (c - 48);
      if (octet > 255) return null;
      digits++;
    } else {
      return null;
    }
  }
  if (digits === 0 || dots !== 3) return null;
  return value * 256 + octet;
}

/** A rough IPv6 recogniser, only used to give a better reason than "invalid". */
export function looksLikeIPv6(s: unknown): boolean {
  return typeof s === 'string' && s.includes(':') && /^[0-9a-fA-F:.]+$/.test(s);
}

export function formatIPv4(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** The dotted quads among addresses, sorted numerically, without duplicates; anything else is left out. */
export function sortedIPv4s(addresses: Iterable<string>): string[] {
  const valid = new Map<string, number>();
  for (const a of addresses) {
    const n = parseIPv4(a);
    if (n !== null) valid.set(a, n);
  }
  return [...valid].sort(([, a], [, b]) => a - b).map(([a]) => a);
}

export interface IPv4CIDR {
  /** Network address (host bits cleared). */
  base: number;
  prefix: number;
  /** Number of addresses in the range, 2^(32-prefix). */
  size: number;
}

/** Parses "a.b.c.d/n" (IPv4 only); host bits are masked off like Go's net.ParseCIDR. */
export function parseIPv4CIDR(s: unknown): IPv4CIDR | null {
  if (typeof s !== 'string') return null;
  const m = /^([^/]+)\/(3[0-2]|[12]?[0-9])$/.exec(s);
  if (!m) return null;
  const ip = parseIPv4(m[1]);
  if (ip === null) return null;
  const prefix = Number(m[2]);
  const size = 2 ** (32 - prefix);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { base: (ip & mask) >>> 0, prefix, size };
}

/** FNV-1a, 32 bit, over the UTF-8 bytes of s. */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(s)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export interface AllocationResult {
  /** "namespace/name" → allocated address. */
  allocated: Map<string, string>;
  /** "namespace/name" → why no address could be given. */
  failed: Map<string, string>;
}

/**
 * Allocates one address per key ("namespace/name") from cidr.
 *
 * Candidate = base + 2 + (fnv1a32(key) mod (size - 3)): the network address,
 * the first host (reserved for the `kubernetes` Service) and the broadcast
 * address are never handed out. A candidate already in `reserved` (explicit
 * ClusterIPs) or given to an earlier key is skipped by linear probing,
 * wrapping inside the usable range. Keys are processed sorted, so the result
 * does not depend on their order.
 */
export function allocateClusterIPs(cidr: string, keys: Iterable<string>, reserved: Iterable<string>): AllocationResult {
  const allocated = new Map<string, string>();
  const failed = new Map<string, string>();
  const sorted = [...new Set(keys)].sort(compareStrings);
  const range = parseIPv4CIDR(cidr);
  if (range === null) {
    for (const k of sorted) failed.set(k, `cannot allocate a ClusterIP: invalid service ClusterIP range ${JSON.stringify(cidr)}`);
    return { allocated, failed };
  }
  const usable = range.size - 3;
  if (usable <= 0) {
    for (const k of sorted) failed.set(k, `cannot allocate a ClusterIP: service ClusterIP range ${cidr} is too small`);
    return { allocated, failed };
  }
  const taken = new Set<number>();
  for (const r of reserved) {
    const n = parseIPv4(r);
    if (n !== null) taken.add(n);
  }
  const first = 2;
  const last = range.size - 2;
  for (const key of sorted) {
    let offset = first + (fnv1a32(key) % usable);
    let found: number | null = null;
    for (let tries = 0; tries < usable; tries++) {
      const candidate = (range.base + offset) >>> 0;
      if (!taken.has(candidate)) {
        found = candidate;
        break;
      }
      offset = offset === last ? first : offset + 1;
    }
    if (found === null) {
      failed.set(key, `cannot allocate a ClusterIP: service ClusterIP range ${cidr} is full`);
      continue;
    }
    taken.add(found);
    allocated.set(key, formatIPv4(found));
  }
  return { allocated, failed };
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
