import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IdIndex, PackedTable } from '../../src/contract/packed.js';
import { slotKey, slotValue } from '../../src/contract/codecs.js';
import { TABLES } from '../../src/contract/tables.js';

/** A small deterministic PRNG, so a failure replays. */
function rng(seed: number): () => number {
  return () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
}

test('IdIndex: adds (getOrAdd too), finds and deletes as a Map does, keys past 2^32 included, through rehashes and backward shifts', () => {
  const random = rng(7);
  const index = new IdIndex();
  const model = new Map<number, number>();
  const freeValues: number[] = [];
  let nextValue = 0;
  // Keys from a small range collide often; large ones are tupleIds (address * 2^21 + ...).
  const key = () => (random() < 0.5 ? Math.floor(random() * 5000) : Math.floor(random() * 2 ** 32) * 2 ** 21 + Math.floor(random() * 2 ** 21));
  const keys: number[] = [];
  for (let step = 0; step < 20000; step++) {
    if (keys.length > 0 && random() < 0.4) {
      const k = keys.splice(Math.floor(random() * keys.length), 1)[0]!;
      freeValues.push(model.get(k)!);
      model.delete(k);
      assert.equal(index.delete(k), true);
      assert.equal(index.delete(k), false);
    } else {
      const k = key();
      if (model.has(k)) {
        assert.equal(index.getOrAdd(k, nextValue), model.get(k));
        continue;
      }
      const value = freeValues.pop() ?? nextValue++;
      model.set(k, value);
      keys.push(k);
      // Half of the keys through getOrAdd, which adds what it does not find.
      if (random() < 0.5) index.add(k, value);
      else assert.equal(index.getOrAdd(k, value), -1);
    }
    if (step % 997 === 0) {
      assert.equal(index.size, model.size);
      for (const [k, v] of model) {
        assert.equal(index.get(k), v);
        assert.equal(index.keyOf(v), k);
      }
      // Not an integer, so never a key (past 2^52 adding 0.5 rounds to one: small keys only).
      assert.equal(index.get(Math.floor(random() * 5000) + 0.5), -1);
    }
  }
  const seen = new Map<number, number>();
  index.forEach((k, v) => seen.set(k, v));
  assert.deepEqual(seen, model);
});

test('PackedTable: entries are listed in slot order, freed slots reused first', () => {
  const table = new PackedTable('slots');
  const put = (serviceId: number, slot: number) => {
    const key = slotKey.encode({ service_id: serviceId, slot });
    table.set(key, slotValue.encode({ backend_id: serviceId, addr: '10.0.0.1', port: 80, state: 0 }));
    return TABLES.slots.keyId(key, 0);
  };
  const ids = [put(1, 0), put(1, 1), put(2, 0), put(3, 0)];
  assert.deepEqual(table.slots(), [0, 1, 2, 3]);
  assert.deepEqual(table.ids(), ids);
  table.delete(ids[1]!);
  assert.equal(table.slot(ids[1]!), undefined);
  assert.deepEqual(table.slots().map((slot) => [table.idAt(slot), slot]), [[ids[0], 0], [ids[2], 2], [ids[3], 3]]);
  const again = put(4, 0);
  assert.equal(table.slot(again), 1);
  assert.deepEqual(table.ids(), [ids[0], again, ids[2], ids[3]]);
  assert.equal(table.size, 4);
});
