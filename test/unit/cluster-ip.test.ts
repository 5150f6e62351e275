import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  allocateClusterIPs,
  fnv1a32,
  formatIPv4,
  parseIPv4,
  parseIPv4CIDR,
} from '../../src/model/cluster-ip.js';

test('parseIPv4 accepts dotted quads only', () => {
  assert.equal(parseIPv4('10.96.0.1'), 0x0a600001);
  assert.equal(parseIPv4('255.255.255.255'), 0xffffffff);
  assert.equal(parseIPv4('0.0.0.0'), 0);
  assert.equal(parseIPv4('1.20.100.0'), 0x01146400);
  for (const bad of ['10.96.0', '10.96.0.256', '010.1.1.1', '1.2.3.4 ', 'fd00::1', '', 'a.b.c.d', '1.2.3.', '.1.2.3', '1.2.3.4.5', '1..2.3', '1.2.3.00', '1.2.3.1000', 42, null, undefined]) {
    assert.equal(parseIPv4(bad), null, String(bad));
  }
  assert.equal(formatIPv4(0x0a600001), '10.96.0.1');
});

test('parseIPv4CIDR masks host bits and rejects garbage', () => {
  assert.deepEqual(parseIPv4CIDR('10.96.0.0/12'), { base: 0x0a600000, prefix: 12, size: 1 << 20 });
  assert.deepEqual(parseIPv4CIDR('10.97.3.4/12'), { base: 0x0a600000, prefix: 12, size: 1 << 20 });
  assert.equal(parseIPv4CIDR('10.96.0.0'), null);
  assert.equal(parseIPv4CIDR('10.96.0.0/33'), null);
  assert.equal(parseIPv4CIDR('fd00::/108'), null);
});

test('fnv1a32 matches the reference vectors', () => {
  assert.equal(fnv1a32(''), 0x811c9dc5);
  assert.equal(fnv1a32('a'), 0xe40c292c);
  assert.equal(fnv1a32('foobar'), 0xbf9cf968);
});

test('allocation is deterministic and follows the documented formula', () => {
  const r1 = allocateClusterIPs('10.96.0.0/12', ['default/web', 'kube-system/dns'], []);
  const r2 = allocateClusterIPs('10.96.0.0/12', ['kube-system/dns', 'default/web'], []);
  assert.deepEqual([...r1.allocated.entries()].sort(), [...r2.allocated.entries()].sort());
  const usable = (1 << 20) - 3;
  const expected = formatIPv4(0x0a600000 + 2 + (fnv1a32('default/web') % usable));
  assert.equal(r1.allocated.get('default/web'), expected);
  assert.equal(r1.failed.size, 0);
});

test('allocation stays in range and never hands out network, .1 or broadcast', () => {
  // A /29 has 8 addresses: .0 network, .1 reserved, .7 broadcast -> .2 .. .6 usable (5).
  const keys = ['a/1', 'a/2', 'a/3', 'a/4', 'a/5'];
  const r = allocateClusterIPs('192.168.10.0/29', keys, []);
  const got = [...r.allocated.values()].sort();
  assert.deepEqual(got, ['192.168.10.2', '192.168.10.3', '192.168.10.4', '192.168.10.5', '192.168.10.6']);
  assert.equal(r.failed.size, 0);
  // A sixth key does not fit.
  const r6 = allocateClusterIPs('192.168.10.0/29', [...keys, 'a/6'], []);
  assert.equal(r6.allocated.size, 5);
  assert.equal(r6.failed.size, 1);
  assert.match([...r6.failed.values()][0]!, /range 192\.168\.10\.0\/29 is full/);
});

test('allocation on a big range: every address inside and not reserved', () => {
  const keys = Array.from({ length: 500 }, (_, i) => `ns${i % 7}/svc-${i}`);
  const r = allocateClusterIPs('10.96.0.0/12', keys, []);
  assert.equal(r.allocated.size, 500);
  const seen = new Set<string>();
  for (const ip of r.allocated.values()) {
    const n = parseIPv4(ip)!;
    assert.ok(n >= 0x0a600002 && n <= 0x0a6ffffe, ip);
    assert.ok(!seen.has(ip), `duplicate ${ip}`);
    seen.add(ip);
  }
});

test('allocation avoids explicit IPs by linear probing', () => {
  const first = allocateClusterIPs('10.96.0.0/12', ['default/web'], []).allocated.get('default/web')!;
  const r = allocateClusterIPs('10.96.0.0/12', ['default/web'], [first]);
  assert.equal(r.allocated.get('default/web'), formatIPv4(parseIPv4(first)! + 1));
});

test('probing wraps around inside the usable range', () => {
  // /30: .0 network, .1 reserved, .3 broadcast: only .2 is usable.
  const r = allocateClusterIPs('10.0.0.0/30', ['x/y'], []);
  assert.equal(r.allocated.get('x/y'), '10.0.0.2');
  const full = allocateClusterIPs('10.0.0.0/30', ['x/y'], ['10.0.0.2']);
  assert.equal(full.allocated.size, 0);
  assert.equal(full.failed.size, 1);
  // /29 with .2..5 taken: whatever the hash, the only free one is .6.
  const w = allocateClusterIPs('10.0.0.0/29', ['x/y'], ['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5']);
  assert.equal(w.allocated.get('x/y'), '10.0.0.6');
  // ... and with .3..6 taken, probing from any start wraps to .2.
  const w2 = allocateClusterIPs('10.0.0.0/29', ['x/y'], ['10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6']);
  assert.equal(w2.allocated.get('x/y'), '10.0.0.2');
});

test('invalid or tiny ranges fail every key with a reason', () => {
  const bad = allocateClusterIPs('not-a-cidr', ['a/b'], []);
  assert.equal(bad.allocated.size, 0);
  assert.match(bad.failed.get('a/b')!, /invalid service ClusterIP range "not-a-cidr"/);
  const tiny = allocateClusterIPs('10.0.0.0/31', ['a/b'], []);
  assert.match(tiny.failed.get('a/b')!, /too small/);
});
