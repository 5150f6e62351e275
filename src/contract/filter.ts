/**
 * The value of kpx_filter (bpf/include/kpx_types.h), kept in step with the
 * frontends and local backends the kernel holds: per bit, how many of them
 * set it. The datapath counts an entry in when it writes it and out when it
 * deletes it; a bit is set before its first entry is written and cleared
 * only after its last one is gone, so traffic the filter turns away never
 * has an entry to find. Pure.
 */
import { endianness } from 'node:os';
import { BACKEND_FLAGS, FILTER_ADDR_MUL, FILTER_WORDS, filterValue, readHostU32 } from './codecs.js';
import type { PackedTable } from './packed.js';

const BITS_PER_SET = FILTER_WORDS * 64;
/** Where each set's bits start, in the order of the struct's members. */
const SET = { addr: 0, nodePort: BITS_PER_SET, localBackend: 2 * BITS_PER_SET } as const;
/** kpx_backend's flags byte. */
const BACKEND_FLAGS_OFFSET = 7;
const LITTLE = endianness() === 'LE';

/** kpx_filter_addr_bit: addr is a __be32 as the program loads it (a host-order read of its bytes). */
export function filterAddrBit(addr: number): number {
  return Math.imul(addr, FILTER_ADDR_MUL) >>> 16;
}

/** The bit of a kpx_frontends key (addr, port, proto at 0, 4, 6): the address's, or the port's for a NodePort (address 0). */
function frontendBit(keys: Buffer, offset: number): number {
  const addr = readHostU32(keys, offset);
  return addr === 0 ? SET.nodePort + keys.readUInt16BE(offset + 4) : SET.addr + filterAddrBit(addr);
}

/** The bit of a kpx_backends value (addr at 0) if the backend is on this node. */
function localBackendBit(values: Buffer, offset: number): number | undefined {
  if (!(values[offset + BACKEND_FLAGS_OFFSET]! & BACKEND_FLAGS.local)) return undefined;
  return SET.localBackend + filterAddrBit(readHostU32(values, offset));
}

export class TrafficFilter {
  /** Entries per bit, every set's bits one after the other. */
  private readonly counts = new Uint32Array(3 * BITS_PER_SET);
  /** The map value: every bit with a count, and those that lost theirs until settle(). */
  readonly value = Buffer.alloc(filterValue.size);
  private readonly emptied: number[] = [];

  /** The filter of every entry of the tables (the kernel's, as read back). */
  static of(frontends: PackedTable, backends: PackedTable): TrafficFilter {
    const filter = new TrafficFilter();
    for (const slot of frontends.slots()) filter.addFrontend(frontends.keys, slot * frontends.keySize);
    for (const slot of backends.slots()) filter.addBackend(backends.values, slot * backends.valueSize);
    return filter;
  }

  /** Counts in the frontend whose key is at offset; true when that set a bit the value lacked. */
  addFrontend(keys: Buffer, offset: number): boolean {
    return this.add(frontendBit(keys, offset));
  }

  /** Counts out the frontend whose key is at offset; its bit stays set until settle(). */
  removeFrontend(keys: Buffer, offset: number): void {
    this.remove(frontendBit(keys, offset));
  }

  /** Counts in the backend whose value is at offset, if it is on this node; true when that set a bit the value lacked. */
  addBackend(values: Buffer, offset: number): boolean {
    const bit = localBackendBit(values, offset);
    return bit !== undefined && this.add(bit);
  }

  /** Counts out the backend whose value is at offset, if it was on this node. */
  removeBackend(values: Buffer, offset: number): void {
    const bit = localBackendBit(values, offset);
    if (bit !== undefined) this.remove(bit);
  }

  /** Clears the bits no entry sets any more (call once the deletes have landed); true when the value changed. */
  settle(): boolean {
    let changed = false;
    for (const bit of this.emptied.splice(0)) {
      if (this.counts[bit] !== 0) continue;
      const [at, mask] = position(bit);
      changed ||= (this.value[at]! & mask) !== 0;
      this.value[at] = this.value[at]! & ~mask;
    }
    return changed;
  }

  private add(bit: number): boolean {
    if (this.counts[bit]++ > 0) return false;
    const [at, mask] = position(bit);
    const had = (this.value[at]! & mask) !== 0;
    this.value[at] = this.value[at]! | mask;
    return !had;
  }

  private remove(bit: number): void {
    if (this.counts[bit] === 0) throw new Error(`kpx_filter: bit ${bit} counted out more often than in`);
    if (--this.counts[bit]! === 0) this.emptied.push(bit);
  }
}

/** Byte and mask of a bit in the value: __u64 words in host order. */
function position(bit: number): [at: number, mask: number] {
  const inWord = bit & 63;
  const byteInWord = LITTLE ? inWord >> 3 : 7 - (inWord >> 3);
  return [(bit >> 6) * 8 + byteInWord, 1 << (bit & 7)];
}
