import { test } from 'node:test';
import assert from 'node:assert/strict';
import { endianness } from 'node:os';
import { FILTER_ADDR_WORDS, filterValue, frontendKey, frontendValue, IPPROTO, KIND } from '../../src/contract/codecs.js';
import { filterAddrBit, FrontendFilter } from '../../src/contract/filter.js';
import { PackedTable } from '../../src/contract/packed.js';
import { TABLES } from '../../src/contract/tables.js';

const key = (addr: string, port: number, proto: number = IPPROTO.TCP) => frontendKey.encode({ addr, port, proto });
/** addr_bits' bytes; nodeport_bits follow. */
const ADDR_BYTES = FILTER_ADDR_WORDS * 8;

/** Bit b of a set of __u64 words, read the way a little-endian CPU does (byte b / 8); the test machines are little-endian. */
function bitSet(bits: Buffer, b: number): boolean {
  return (bits[b >> 3]! & (1 << (b & 7))) !== 0;
}

/** kpx_filter_has_addr's bit in 64-bit integers: the low 32 bits of addr × 2654435761, shifted right by 12. */
function referenceAddrBit(addrBytes: Buffer): number {
  const addr = BigInt(addrBytes.readUInt32LE(0));
  return Number(((addr * 2654435761n) & 0xffffffffn) >> 12n);
}

test('filterAddrBit is the C multiply-shift over the address as it lies in memory', { skip: endianness() !== 'LE' && 'the reference reads little-endian' }, () => {
  for (const addr of ['10.96.0.1', '10.96.0.10', '192.168.1.10', '255.255.255.255', '1.2.3.4', '10.244.7.200']) {
    const bytes = key(addr, 80);
    assert.equal(filterAddrBit(bytes.readUInt32LE(0)), referenceAddrBit(bytes), addr);
  }
  // Neighbouring ClusterIPs land on different bits.
  const bits = new Set(Array.from({ length: 256 }, (_, i) => filterAddrBit(key(`10.96.0.${i}`, 80).readUInt32LE(0))));
  assert.equal(bits.size, 256);
});

test('a frontend with an address sets its address bit; a NodePort (address 0) its port bit', { skip: endianness() !== 'LE' && 'bitSet reads little-endian' }, () => {
  const filter = new FrontendFilter();
  const cluster = key('10.96.0.10', 53, IPPROTO.UDP);
  assert.equal(filter.add(cluster, 0), true);
  assert.equal(filter.add(key('0.0.0.0', 30080), 0), true);
  const addrBits = filter.value.subarray(0, ADDR_BYTES);
  const portBits = filter.value.subarray(ADDR_BYTES);
  assert.ok(bitSet(addrBits, referenceAddrBit(cluster)));
  assert.ok(bitSet(portBits, 30080));
  const setBits = (bits: Buffer) => [...bits].reduce((n, byte) => n + [...byte.toString(2)].filter((c) => c === '1').length, 0);
  assert.equal(setBits(addrBits), 1);
  assert.equal(setBits(portBits), 1);
  // Another port or protocol of the same address shares the bit: nothing new to write.
  assert.equal(filter.add(key('10.96.0.10', 53, IPPROTO.TCP), 0), false);
});

test('a bit stays set while any frontend counts on it, and is cleared only by settle()', () => {
  const filter = new FrontendFilter();
  const dnsUdp = key('10.96.0.10', 53, IPPROTO.UDP);
  const dnsTcp = key('10.96.0.10', 53, IPPROTO.TCP);
  filter.add(dnsUdp, 0);
  filter.add(dnsTcp, 0);
  const withBoth = Buffer.from(filter.value);
  filter.remove(dnsUdp, 0);
  assert.equal(filter.settle(), false, 'the TCP frontend still sets the bit');
  assert.deepEqual(filter.value, withBoth);
  filter.remove(dnsTcp, 0);
  assert.deepEqual(filter.value, withBoth, 'deletes land before the bit goes');
  assert.equal(filter.settle(), true);
  assert.deepEqual(filter.value, Buffer.alloc(filterValue.size));
  assert.equal(filter.settle(), false);
});

test('a frontend deleted and added again within one sync keeps its bit, with nothing to write', () => {
  const filter = new FrontendFilter();
  const lb = key('203.0.113.7', 443);
  filter.add(lb, 0);
  filter.remove(lb, 0);
  assert.equal(filter.add(lb, 0), false, 'the bit never left the value');
  assert.equal(filter.settle(), false);
  assert.notDeepEqual(filter.value, Buffer.alloc(filterValue.size));
});

test('counting out a frontend that was never counted in is an error, not a silent clear', () => {
  const filter = new FrontendFilter();
  assert.throws(() => filter.remove(key('10.96.0.1', 443), 0), /counted out more often than in/);
});

test('FrontendFilter.of counts every frontend of a table, at its slot', () => {
  const table = new PackedTable('frontends');
  const value = frontendValue.encode({ service_id: 1, backend_count: 1, kind: KIND.ClusterIP });
  const keys = [key('10.96.0.1', 443), key('10.96.0.2', 80), key('0.0.0.0', 31000, IPPROTO.UDP)];
  for (const k of keys) table.set(k, value);
  table.delete(TABLES.frontends.keyId(keys[1]!, 0));
  const fromTable = FrontendFilter.of(table);
  const byHand = new FrontendFilter();
  byHand.add(keys[0]!, 0);
  byHand.add(keys[2]!, 0);
  assert.deepEqual(fromTable.value, byHand.value);
});
