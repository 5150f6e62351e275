/**
 * The value of kpx_filter (bpf/include/kpx_types.h), kept in step with the
 * frontends the kernel holds: per bit, how many frontends set it. The
 * datapath counts a key in when it writes a new frontend and out when it
 * deletes one; a bit is set before its first frontend is written and
 * cleared only after its last one is gone, so a destination the filter
 * turns away never has a frontend. Pure.
 */
import { endianness } from 'node:os';
import { FILTER_ADDR_MUL, FILTER_ADDR_SHIFT, FILTER_ADDR_WORDS, filterValue, readHostU32 } from './codecs.js';
import type { PackedTable } from './packed.js';

/** Where nodeport_bits' bits start, after addr_bits'. */
const NODE_PORT_BITS = FILTER_ADDR_WORDS * 64;
const LITTLE = endianness() === 'LE';

/** The address bit kpx_filter_has_addr tests: addr is the key's __be32 as the program loads it (a host-order read of its bytes). */
export function filterAddrBit(addr: number): number {
  return Math.imul(addr, FILTER_ADDR_MUL) >>> FILTER_ADDR_SHIFT;
}

/** The bit of a kpx_frontends key (addr, port, proto at 0, 4, 6): the address's, or the port's for a NodePort (address 0). */
function frontendBit(keys: Buffer, offset: number): number {
  const addr = readHostU32(keys, offset);
  return addr === 0 ? NODE_PORT_BITS + keys.readUInt16BE(offset + 4) : filterAddrBit(addr);
}

export class FrontendFilter {
  /** Frontends per set bit (addr_bits' bits, then nodeport_bits'): a Map, as few of the million bits are set. */
  private readonly counts = new Map<number, number>();
  /** The map value: every bit with a count, and those that lost theirs until settle(). */
  readonly value = Buffer.alloc(filterValue.size);
  private readonly emptied: number[] = [];

  /** The filter of every frontend in a table (the kernel's, as read back). */
  static of(frontends: PackedTable): FrontendFilter {
    const filter = new FrontendFilter();
    for (const slot of frontends.slots()) filter.add(frontends.keys, slot * frontends.keySize);
    return filter;
  }

  /** Counts in the frontend whose key is at offset; true when that set a bit the value lacked. */
  add(keys: Buffer, offset: number): boolean {
    const bit = frontendBit(keys, offset);
    const count = this.counts.get(bit) ?? 0;
    this.counts.set(bit, count + 1);
    if (count > 0) return false;
    const [at, mask] = position(bit);
    const had = (this.value[at]! & mask) !== 0;
    this.value[at] = this.value[at]! | mask;
    return !had;
  }

  /** Counts out the frontend whose key is at offset; its bit stays set until settle(). */
  remove(keys: Buffer, offset: number): void {
    const bit = frontendBit(keys, offset);
    const count = this.counts.get(bit);
    if (count === undefined) throw new Error(`kpx_filter: bit ${bit} counted out more often than in`);
    if (count > 1) {
      this.counts.set(bit, count - 1);
      return;
    }
    this.counts.delete(bit);
    this.emptied.push(bit);
  }

  /** Clears the bits no frontend sets any more (call once the deletes have landed); true when the value changed. */
  settle(): boolean {
    let changed = false;
    for (const bit of this.emptied.splice(0)) {
      if (this.counts.has(bit)) continue;
      const [at, mask] = position(bit);
      changed ||= (this.value[at]! & mask) !== 0;
      this.value[at] = this.value[at]! & ~mask;
    }
    return changed;
  }
}

/** Byte and mask of a bit in the value: __u64 words in host order. */
function position(bit: number): [at: number, mask: number] {
  const inWord = bit & 63;
  const byteInWord = LITTLE ? inWord >> 3 : 7 - (inWord >> 3);
  return [(bit >> 6) * 8 + byteInWord, 1 << (bit & 7)];
}
