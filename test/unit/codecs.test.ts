import { test } from 'node:test';
import assert from 'node:assert/strict';
import { endianness } from 'node:os';
import {
  BACKEND_FLAGS,
  CONTRACT_STRUCTS,
  CT_FIB,
  CT_FLAGS,
  IPPROTO,
  KIND,
  NODE_ADDR_PRESENT,
  SKIP,
  STATE,
  backendValue,
  ctKey,
  ctValue,
  FILTER_ADDR_WORDS,
  FILTER_PORT_WORDS,
  filterValue,
  frontendKey,
  frontendValue,
  nodeAddrKey,
  serviceValue,
  slotKey,
  slotValue,
  sockRevnatKey,
  sockRevnatValue,
  u32Key,
  u32Value,
  writeBe16,
  writeBeU32,
  writeHostU16,
  writeHostU32,
  type StructCodec,
} from '../../src/contract/codecs.js';

const LE = endianness() === 'LE';

/** Host-order unsigned integer bytes, as the kernel stores map memory. */
function host(value: number, size: 2 | 4): number[] {
  const b = Buffer.alloc(size);
  if (size === 2) {
    if (LE) b.writeUInt16LE(value);
    else b.writeUInt16BE(value);
  } else if (LE) b.writeUInt32LE(value);
  else b.writeUInt32BE(value);
  return [...b];
}

function roundTrip<T extends object>(codec: StructCodec<T>, value: T): Buffer {
  const bytes = codec.encode(value);
  assert.equal(bytes.length, codec.size, `${codec.cName} encoded size`);
  assert.deepEqual(codec.decode(bytes), value, `${codec.cName} round trip`);
  // decode at an offset, as when walking a batch buffer
  const shifted = Buffer.concat([Buffer.from([0xee, 0xee, 0xee]), bytes]);
  assert.deepEqual(codec.decode(shifted, 3), value, `${codec.cName} decode at offset`);
  const into = Buffer.alloc(codec.size + 5, 0);
  codec.encodeInto(value, into, 5);
  assert.deepEqual(into.subarray(5), bytes, `${codec.cName} encodeInto at offset`);
  assert.deepEqual([...into.subarray(0, 5)], [0, 0, 0, 0, 0], `${codec.cName} encodeInto wrote before its base`);
  return bytes;
}

test('every codec round-trips', () => {
  roundTrip(frontendKey, { addr: '10.96.0.10', port: 8222, proto: IPPROTO.TCP });
  roundTrip(frontendKey, { addr: '255.255.255.255', port: 65535, proto: IPPROTO.UDP });
  roundTrip(frontendValue, { service_id: 0xfffffffe, backend_count: 65535, kind: KIND.LoadBalancer });
  roundTrip(slotKey, { service_id: 7, slot: 0x01020304 });
  roundTrip(slotValue, { backend_id: 123456, addr: '10.244.3.7', port: 8443, state: STATE['serving-terminating'] });
  roundTrip(backendValue, { addr: '10.244.1.2', port: 8080, proto: IPPROTO.TCP, flags: 0 });
  roundTrip(backendValue, { addr: '10.244.1.2', port: 8080, proto: IPPROTO.UDP, flags: BACKEND_FLAGS.local });
  roundTrip(serviceValue, { namespace: 'kube-system', name: 'kube-dns', port_name: 'dns-tcp', proto: IPPROTO.TCP, skip_reason: SKIP.none });
  roundTrip(serviceValue, {
    namespace: 'n'.repeat(63),
    name: 'x'.repeat(63),
    port_name: 'p'.repeat(15),
    proto: 0,
    skip_reason: SKIP['service-proxy-name'],
  });
  roundTrip(sockRevnatKey, { cookie: 0x0102030405060708n, backend_addr: '10.244.3.4', backend_port: 53 });
  roundTrip(sockRevnatKey, { cookie: 0xffffffffffffffffn, backend_addr: '0.0.0.0', backend_port: 0 });
  roundTrip(sockRevnatValue, { addr: '10.96.0.10', port: 53 });
  roundTrip(u32Key, { id: 0xffffffff });
  roundTrip(nodeAddrKey, { addr: '172.18.0.2' });
  roundTrip(u32Value, { value: NODE_ADDR_PRESENT });
  roundTrip(ctKey, { saddr: '192.0.2.1', daddr: '172.18.0.2', sport: 40000, dport: 30080, proto: IPPROTO.TCP });
  roundTrip(ctValue, {
    saddr: '172.18.0.2',
    daddr: '10.244.1.7',
    sport: 40000,
    dport: 8080,
    backend_id: 7,
    last_seen_ns: 0x0102030405060708n,
    flags: CT_FLAGS.reply | CT_FLAGS.closing,
    fib: CT_FIB.l2,
    fib_ifindex: 7,
    fib_nexthop: '172.18.0.1',
    fib_dmac: '02:00:ac:12:00:01',
    fib_smac: 'fe:ff:ff:ff:ff:0a',
  });
  assert.throws(() => ctValue.encode({ ...ctValue.decode(Buffer.alloc(ctValue.size)), fib_dmac: '02:00:ac:12:00' }), /not an Ethernet address/);
  const bits = Buffer.alloc(FILTER_ADDR_WORDS * 8);
  bits[0] = 1;
  bits[bits.length - 1] = 0x80;
  roundTrip(filterValue, { addr_bits: bits, nodeport_bits: Buffer.alloc(FILTER_PORT_WORDS * 8, 0x5a) });
  assert.throws(() => filterValue.encode({ addr_bits: bits.subarray(1), nodeport_bits: bits }), /kpx_filter.addr_bits is 131072 bytes, not 131071/);
});

test('CONTRACT_STRUCTS lists every struct codec once', () => {
  assert.deepEqual(
    CONTRACT_STRUCTS.map((c) => c.cName),
    [
      'kpx_frontend_key',
      'kpx_frontend',
      'kpx_slot_key',
      'kpx_slot',
      'kpx_backend',
      'kpx_service',
      'kpx_sock_revnat_key',
      'kpx_sock_revnat',
      'kpx_sock_peer',
      'kpx_sock_sendto',
      'kpx_ct_key',
      'kpx_ct',
      'kpx_filter',
    ],
  );
});

test('frontendKey: address and port in network order', () => {
  assert.deepEqual(
    [...frontendKey.encode({ addr: '10.96.0.10', port: 8222, proto: IPPROTO.TCP })],
    [0x0a, 0x60, 0x00, 0x0a, 0x20, 0x1e, 0x06, 0x00],
  );
  assert.deepEqual(
    [...frontendKey.encode({ addr: '192.168.1.10', port: 30080, proto: IPPROTO.UDP })],
    [0xc0, 0xa8, 0x01, 0x0a, 0x75, 0x80, 0x11, 0x00],
  );
  assert.deepEqual(frontendKey.decode(Buffer.from([0x0a, 0x60, 0x00, 0x0a, 0x20, 0x1e, 0x06, 0x00])), {
    addr: '10.96.0.10',
    port: 8222,
    proto: 6,
  });
});

test('frontendValue, slotKey, slotValue: host order integers, zero padding', () => {
  assert.deepEqual(
    [...frontendValue.encode({ service_id: 0x01020304, backend_count: 0x0506, kind: KIND.NodePort })],
    [...host(0x01020304, 4), ...host(0x0506, 2), 2, 0],
  );
  assert.deepEqual([...slotKey.encode({ service_id: 3, slot: 258 })], [...host(3, 4), ...host(258, 4)]);
  assert.deepEqual(
    [...slotValue.encode({ backend_id: 9, addr: '10.1.2.3', port: 8080, state: STATE['serving-terminating'] })],
    [...host(9, 4), 10, 1, 2, 3, 0x1f, 0x90, 1, 0],
  );
  assert.deepEqual([...u32Key.encode({ id: 0x0a0b0c0d })], host(0x0a0b0c0d, 4));
});

test('backendValue, nodeAddrKey and sock revnat: network order addresses and ports, flags and values in their bytes', () => {
  assert.deepEqual([...backendValue.encode({ addr: '10.244.1.2', port: 8080, proto: 17, flags: 0 })], [10, 244, 1, 2, 0x1f, 0x90, 17, 0]);
  assert.deepEqual(
    [...backendValue.encode({ addr: '10.244.1.2', port: 8080, proto: 6, flags: BACKEND_FLAGS.local })],
    [10, 244, 1, 2, 0x1f, 0x90, 6, 1],
  );
  assert.deepEqual([...nodeAddrKey.encode({ addr: '172.18.0.2' })], [172, 18, 0, 2]);
  assert.deepEqual([...u32Value.encode({ value: NODE_ADDR_PRESENT })], host(1, 4));
  assert.deepEqual([...sockRevnatValue.encode({ addr: '10.96.0.10', port: 53 })], [10, 96, 0, 10, 0, 53, 0, 0]);
  const key = sockRevnatKey.encode({ cookie: 0x0102030405060708n, backend_addr: '10.244.3.4', backend_port: 443 });
  const cookie = LE ? [8, 7, 6, 5, 4, 3, 2, 1] : [1, 2, 3, 4, 5, 6, 7, 8];
  assert.deepEqual([...key], [...cookie, 10, 244, 3, 4, 0x01, 0xbb, 0, 0]);
});

test('serviceValue: names NUL padded at their offsets, proto and reason after them', () => {
  const bytes = serviceValue.encode({ namespace: 'default', name: 'web', port_name: 'http', proto: IPPROTO.TCP, skip_reason: SKIP.headless });
  const expected = Buffer.alloc(152, 0);
  expected.write('default', 0, 'latin1');
  expected.write('web', 64, 'latin1');
  expected.write('http', 128, 'latin1');
  expected[144] = 6;
  expected[145] = 2;
  assert.equal(bytes.length, 152);
  assert.deepEqual(bytes, expected);
  // spot checks independent of the construction above
  assert.deepEqual([...bytes.subarray(0, 8)], [0x64, 0x65, 0x66, 0x61, 0x75, 0x6c, 0x74, 0x00]);
  assert.equal(bytes.subarray(7, 64).every((b) => b === 0), true, 'namespace NUL padded');
  assert.equal(bytes.subarray(67, 128).every((b) => b === 0), true, 'name NUL padded');
  assert.equal(bytes.subarray(132, 144).every((b) => b === 0), true, 'port_name NUL padded');
  assert.deepEqual([...bytes.subarray(144)], [6, 2, 0, 0, 0, 0, 0, 0]);

  const empty = serviceValue.encode({ namespace: 'ns', name: 'ext', port_name: '', proto: 0, skip_reason: SKIP.ExternalName });
  assert.deepEqual([...empty.subarray(128, 152)], [...Buffer.alloc(16), 0, 1, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(serviceValue.decode(empty), { namespace: 'ns', name: 'ext', port_name: '', proto: 0, skip_reason: 1 });
});

test('serviceValue: a name that leaves no room for the NUL throws', () => {
  const ok = { namespace: 'default', name: 'web', port_name: 'http', proto: 6, skip_reason: 0 };
  assert.throws(() => serviceValue.encode({ ...ok, name: 'x'.repeat(64) }), /kpx_service\.name longer than 63 bytes/);
  assert.throws(() => serviceValue.encode({ ...ok, namespace: 'n'.repeat(100) }), /kpx_service\.namespace longer than 63 bytes/);
  assert.throws(() => serviceValue.encode({ ...ok, port_name: 'p'.repeat(16) }), /kpx_service\.port_name longer than 15 bytes/);
  // the limit is bytes, not characters
  assert.throws(() => serviceValue.encode({ ...ok, port_name: 'é'.repeat(8) }), /port_name longer than 15 bytes/);
  assert.equal(serviceValue.encode({ ...ok, name: 'x'.repeat(63) })[64 + 62], 0x78);
  assert.equal(serviceValue.encode({ ...ok, name: 'x'.repeat(63) })[64 + 63], 0);
});

test('out-of-range integers throw instead of wrapping', () => {
  assert.throws(() => frontendValue.encode({ service_id: 1, backend_count: 65536, kind: 1 }), RangeError);
  assert.throws(() => frontendKey.encode({ addr: '10.0.0.1', port: 65536, proto: 6 }), RangeError);
  assert.throws(() => slotValue.encode({ backend_id: -1, addr: '10.1.2.3', port: 80, state: 0 }), RangeError);
  assert.throws(() => frontendKey.encode({ addr: '10.0.0', port: 80, proto: 6 }), /not an IPv4 address: 10\.0\.0/);
});

test('addresses that are not dotted IPv4 are refused, not encoded as something else', () => {
  for (const bad of ['10.0.0.256', 'a.b.c.d', '10.0.0', '10.0.0.01', '', '1.2.3.4.5']) {
    assert.throws(() => frontendKey.encode({ addr: bad, port: 80, proto: 6 }), /not an IPv4 address/, bad);
  }
});

test('byte stores write what the Buffer methods write', () => {
  const little = endianness() === 'LE';
  for (const value of [0, 1, 0x1234, 0xffff, 0x12345678, 0x80000000, 0xffffffff]) {
    const [a, b] = [Buffer.alloc(6), Buffer.alloc(6)];
    writeHostU32(a, 1, value);
    if (little) b.writeUInt32LE(value, 1);
    else b.writeUInt32BE(value, 1);
    assert.deepEqual(a, b, `host u32 ${value}`);
    writeBeU32(a, 2, value);
    b.writeUInt32BE(value, 2);
    assert.deepEqual(a, b, `be32 ${value}`);
    if (value > 0xffff) continue;
    writeHostU16(a, 3, value);
    if (little) b.writeUInt16LE(value, 3);
    else b.writeUInt16BE(value, 3);
    assert.deepEqual(a, b, `host u16 ${value}`);
    writeBe16(a, 0, value);
    b.writeUInt16BE(value, 0);
    assert.deepEqual(a, b, `be16 ${value}`);
  }
});

test('offsetsOf: every member, pads included, or it throws', () => {
  assert.deepEqual(slotValue.offsetsOf(['backend_id', 'addr', 'port', 'state', 'pad']), { backend_id: 0, addr: 4, port: 8, state: 10, pad: 11 });
  assert.throws(() => slotValue.offsetsOf(['backend_id', 'addr', 'port', 'state']), /kpx_slot has members backend_id, addr, port, state, pad/);
  assert.throws(() => slotKey.offsetsOf(['service_id', 'slot', 'extra']), /kpx_slot_key has members/);
});
