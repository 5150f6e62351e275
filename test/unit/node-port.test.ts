import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fnv1a32 } from '../../src/model/cluster-ip.js';
import { allocateNodePorts, isValidPortRange } from '../../src/model/node-port.js';

const RANGE = { min: 30000, max: 32767 };

test('nodePort allocation is deterministic and follows the documented formula', () => {
  const r1 = allocateNodePorts(RANGE, ['default/web:80', 'kube-system/dns:53'], []);
  const r2 = allocateNodePorts(RANGE, ['kube-system/dns:53', 'default/web:80'], []);
  assert.deepEqual([...r1.allocated].sort(), [...r2.allocated].sort());
  assert.equal(r1.allocated.get('default/web:80'), 30000 + (fnv1a32('default/web:80') % 2768));
  assert.equal(r1.failed.size, 0);
});

test('nodePort allocation skips reserved and already given ports, wrapping inside the range', () => {
  const key = 'default/web:80';
  const home = allocateNodePorts({ min: 30000, max: 30009 }, [key], []).allocated.get(key)!;
  const next = home === 30009 ? 30000 : home + 1;
  assert.equal(allocateNodePorts({ min: 30000, max: 30009 }, [key], [home]).allocated.get(key), next);
  // Every port but one reserved: the key gets that one, wherever its hash lands.
  for (let free = 30000; free <= 30009; free++) {
    const reserved = Array.from({ length: 10 }, (_, i) => 30000 + i).filter((p) => p !== free);
    assert.equal(allocateNodePorts({ min: 30000, max: 30009 }, [key], reserved).allocated.get(key), free);
  }
});

test('nodePort allocation fills a small range exactly, then says the range is full', () => {
  const keys = ['a/x:1', 'b/x:1', 'c/x:1', 'd/x:1'];
  const r = allocateNodePorts({ min: 30000, max: 30003 }, keys, []);
  assert.deepEqual([...r.allocated.values()].sort(), [30000, 30001, 30002, 30003]);
  const over = allocateNodePorts({ min: 30000, max: 30003 }, [...keys, 'e/x:1'], [30002]);
  assert.equal(over.allocated.size, 3);
  assert.equal([...over.allocated.values()].includes(30002), false);
  assert.deepEqual([...over.failed.values()], [
    'cannot allocate a nodePort: service NodePort range 30000-30003 is full',
    'cannot allocate a nodePort: service NodePort range 30000-30003 is full',
  ]);
});

test('nodePort allocation on an invalid range fails every key, saying so', () => {
  for (const range of [{ min: 0, max: 10 }, { min: 20, max: 10 }, { min: 30000, max: 65536 }, { min: 1.5, max: 10 }]) {
    const r = allocateNodePorts(range, ['a/b:1'], []);
    assert.equal(r.allocated.size, 0, JSON.stringify(range));
    assert.match(r.failed.get('a/b:1')!, /invalid service NodePort range/);
    assert.equal(isValidPortRange(range), false, JSON.stringify(range));
  }
  assert.equal(isValidPortRange({ min: 1, max: 65535 }), true);
  assert.equal(isValidPortRange({ min: 80, max: 80 }), true);
});
