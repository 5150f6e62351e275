import { test } from 'node:test';
import assert from 'node:assert/strict';
import { endianness } from 'node:os';
import { BACKEND_FLAGS, backendValue, filterValue, frontendKey, frontendValue, IPPROTO, KIND, u32Key } from '../../src/contract/codecs.js';
import { filterAddrBit, TrafficFilter } from '../../src/contract/filter.js';
import { PackedTable } from '../../src/contract/packed.js';
import { TABLES } from '../../src/contract/tables.js';

const key = (addr: string, port: number, proto: number = IPPROTO.TCP) => frontendKey.encode({ addr, port, proto });
const backend = (addr: string, local: boolean) => backendValue.encode({ addr, port: 8080, proto: IPPROTO.TCP, flags: local ? BACKEND_FLAGS.local : 0 });
const SET_BYTES = filterValue.size / 3;
const LE = endianness() === 'LE';

/** Bit b of a set of __u64 words, read the way a little-endian CPU does (byte b / 8). */
function bitSet(bits: Buffer, b: number): boolean {
  return (bits[b >> 3]! & (1 << (b & 7))) !== 0;
}

function countSetBits(bits: Buffer): number {
  let n = 0;
  for (const byte of bits) for (let b = byte; b; b &= b - 1) n++;
  return n;
}

/** kpx_filter_addr_bit in 64-bit integers: the low 32 bits of addr × 2654435761, shifted right by 16. */
function referenceAddrBit(addrBytes: Buffer): number {
  const addr = BigInt(addrBytes.readUInt32LE(0));
  return Number(((addr * 2654435761n) & 0xffffffffn) >> 16n);
}

const sets = (filter: TrafficFilter) => ({
  addr: filter.value.subarray(0, SET_BYTES),
  nodePort: filter.value.subarray(SET_BYTES, 2 * SET_BYTES),
  localBackend: filter.value.subarray(2 * SET_BYTES),
});

test('filterAddrBit is the C multiply-shift over the address as it lies in memory', { skip: !LE && 'the reference reads little-endian' }, () => {
  for (const addr of ['10.96.0.1', '10.96.0.10', '192.168.1.10', '255.255.255.255', '1.2.3.4', '10.244.7.200']) {
    const bytes = key(addr, 80);
    assert.equal(filterAddrBit(bytes.readUInt32LE(0)), referenceAddrBit(bytes), addr);
  }
  // Neighbouring ClusterIPs land on different bits.
  const bits = new Set(Array.from({ length: 256 }, (_, i) => filterAddrBit(key(`10.96.0.${i}`, 80).readUInt32LE(0))));
  assert.equal(bits.size, 256);
});

test('a frontend with an address sets its address bit, a NodePort (address 0) its port bit, a local backend its address bit', { skip: !LE && 'bitSet reads little-endian' }, () => {
  const filter = new TrafficFilter();
  const cluster = key('10.96.0.10', 53, IPPROTO.UDP);
  assert.equal(filter.addFrontend(cluster, 0), true);
  assert.equal(filter.addFrontend(key('0.0.0.0', 30080), 0), true);
  assert.equal(filter.addBackend(backend('10.244.1.5', true), 0), true);
  assert.equal(filter.addBackend(backend('10.244.2.5', false), 0), false, 'a backend on another node sets nothing');
  const { addr, nodePort, localBackend } = sets(filter);
  assert.ok(bitSet(addr, referenceAddrBit(cluster)));
  assert.ok(bitSet(nodePort, 30080));
  assert.ok(bitSet(localBackend, referenceAddrBit(backend('10.244.1.5', true))));
  assert.deepEqual([countSetBits(addr), countSetBits(nodePort), countSetBits(localBackend)], [1, 1, 1]);
  // Another port or protocol of the same address shares the bit: nothing new to write.
  assert.equal(filter.addFrontend(key('10.96.0.10', 53, IPPROTO.TCP), 0), false);
});

test('a bit stays set while any entry counts on it, and is cleared only by settle()', () => {
  const filter = new TrafficFilter();
  const dnsUdp = key('10.96.0.10', 53, IPPROTO.UDP);
  const dnsTcp = key('10.96.0.10', 53, IPPROTO.TCP);
  filter.addFrontend(dnsUdp, 0);
  filter.addFrontend(dnsTcp, 0);
  const withBoth = Buffer.from(filter.value);
  filter.removeFrontend(dnsUdp, 0);
  assert.equal(filter.settle(), false, 'the TCP frontend still sets the bit');
  assert.deepEqual(filter.value, withBoth);
  filter.removeFrontend(dnsTcp, 0);
  assert.deepEqual(filter.value, withBoth, 'deletes land before the bit goes');
  assert.equal(filter.settle(), true);
  assert.deepEqual(filter.value, Buffer.alloc(filterValue.size));
  assert.equal(filter.settle(), false);

  const pod = backend('10.244.1.5', true);
  filter.addBackend(pod, 0);
  filter.removeBackend(backend('10.244.1.5', false), 0);
  assert.equal(filter.settle(), false, 'a backend counted out as remote was never counted in');
  filter.removeBackend(pod, 0);
  assert.equal(filter.settle(), true);
  assert.deepEqual(filter.value, Buffer.alloc(filterValue.size));
});

test('an entry deleted and added again within one sync keeps its bit, with nothing to write', () => {
  const filter = new TrafficFilter();
  const lb = key('203.0.113.7', 443);
  filter.addFrontend(lb, 0);
  filter.removeFrontend(lb, 0);
  assert.equal(filter.addFrontend(lb, 0), false, 'the bit never left the value');
  assert.equal(filter.settle(), false);
  assert.notDeepEqual(filter.value, Buffer.alloc(filterValue.size));
});

test('counting out an entry that was never counted in is an error, not a silent clear', () => {
  const filter = new TrafficFilter();
  assert.throws(() => filter.removeFrontend(key('10.96.0.1', 443), 0), /counted out more often than in/);
  assert.throws(() => filter.removeBackend(backend('10.244.1.5', true), 0), /counted out more often than in/);
});

test('TrafficFilter.of counts every frontend and local backend of the tables, at their slots', () => {
  const frontends = new PackedTable('frontends');
  const value = frontendValue.encode({ service_id: 1, backend_count: 1, kind: KIND.ClusterIP });
  const keys = [key('10.96.0.1', 443), key('10.96.0.2', 80), key('0.0.0.0', 31000, IPPROTO.UDP)];
  for (const k of keys) frontends.set(k, value);
  frontends.delete(TABLES.frontends.keyId(keys[1]!, 0));
  const backends = new PackedTable('backends');
  const pods = [backend('10.244.1.5', true), backend('10.244.2.5', false), backend('10.244.1.6', true)];
  pods.forEach((pod, i) => backends.set(u32Key.encode({ id: i + 1 }), pod));
  const fromTables = TrafficFilter.of(frontends, backends);
  const byHand = new TrafficFilter();
  byHand.addFrontend(keys[0]!, 0);
  byHand.addFrontend(keys[2]!, 0);
  byHand.addBackend(pods[0]!, 0);
  byHand.addBackend(pods[2]!, 0);
  assert.deepEqual(fromTables.value, byHand.value);
});
