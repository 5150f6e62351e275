import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compile, idsFromTables as idsFromPacked } from '../../src/compile/compile.js';
import {
  NODE_ADDR_PRESENT,
  backendValue,
  frontendKey,
  frontendValue,
  nodeAddrKey,
  serviceValue,
  slotKey,
  slotValue,
  u32Key,
  u32Value,
} from '../../src/contract/codecs.js';
import { DELETE_ORDER, WRITE_ORDER, emptyTables, type Entry, type TableName, type Tables } from '../../src/contract/tables.js';
import { packTables } from '../../src/contract/packed.js';
import { diffTables as diffPacked, opBatch } from '../../src/reconcile/table-diff.js';
import type { Model } from '../../src/model/types.js';

type TableOp = { op: 'upsert'; table: TableName; entries: Entry[] } | { op: 'delete'; table: TableName; keys: Buffer[] };

/** diffTables over tables built as Map<hex, Entry>, its ops as the entries they write or the keys they delete. */
function diffTables(desired: Tables, applied: Tables): TableOp[] {
  const packedDesired = packTables(desired);
  const packedApplied = packTables(applied);
  return diffPacked(packedDesired, packedApplied).map((op) => {
    const { keys, values, count } = opBatch(op, packedDesired, packedApplied);
    const keySize = keys.length / count;
    const key = (i: number) => keys.subarray(i * keySize, (i + 1) * keySize);
    if (!values) return { op: 'delete', table: op.table, keys: op.slots.map((_, i) => key(i)) };
    const valueSize = values.length / count;
    return { op: 'upsert', table: op.table, entries: op.slots.map((_, i) => ({ key: key(i), value: values.subarray(i * valueSize, (i + 1) * valueSize) })) };
  });
}

const idsFromTables = (tables: Tables) => idsFromPacked(packTables(tables));

function put(tables: Tables, table: TableName, key: Buffer, value: Buffer): Entry {
  const entry = { key, value };
  tables[table].set(key.toString('hex'), entry);
  return entry;
}

const fe = (addr: string, port: number) => frontendKey.encode({ addr, port, proto: 6 });
const feV = (service_id: number, backend_count: number) => frontendValue.encode({ service_id, backend_count, kind: 1 });
const sk = (service_id: number, slot: number) => slotKey.encode({ service_id, slot });
const sv = (backend_id: number) => slotValue.encode({ backend_id, addr: `10.244.0.${backend_id}`, port: 8080, state: 0 });
const id = (n: number) => u32Key.encode({ id: n });
const bv = (addr: string) => backendValue.encode({ addr, port: 80, proto: 6, flags: 0 });
const na = (addr: string) => nodeAddrKey.encode({ addr });
const present = () => u32Value.encode({ value: NODE_ADDR_PRESENT });
const svcV = (name: string) => serviceValue.encode({ namespace: 'default', name, port_name: '', proto: 6, skip_reason: 0 });

/** ops with their buffers as hex, for readable exact comparisons. */
function hexOps(ops: TableOp[]) {
  return ops.map((o) =>
    o.op === 'upsert'
      ? { op: o.op, table: o.table, entries: o.entries.map((e) => [e.key.toString('hex'), e.value.toString('hex')]) }
      : { op: o.op, table: o.table, keys: o.keys.map((k) => k.toString('hex')) },
  );
}

test('the write and delete orders are the documented ones', () => {
  assert.deepEqual(WRITE_ORDER, ['backends', 'slots', 'services', 'frontends', 'nodeAddrs']);
  assert.deepEqual(DELETE_ORDER, ['nodeAddrs', 'frontends', 'slots', 'services', 'backends']);
});

test('diffTables: deletes no lookup can reach first, then upserts in WRITE_ORDER, then the other deletes', () => {
  const applied = emptyTables();
  const desired = emptyTables();
  // stale entries in every table (inserted in an order unlike either)
  const oldSvc = put(applied, 'services', id(1), svcV('old'));
  const oldFe = put(applied, 'frontends', fe('10.96.0.1', 80), feV(1, 1));
  const oldBe = put(applied, 'backends', id(1), bv('10.0.0.1'));
  const oldSlot = put(applied, 'slots', sk(1, 0), sv(1));
  const oldAddr = put(applied, 'nodeAddrs', na('192.168.1.10'), present());
  // new entries in every table
  const newFe = put(desired, 'frontends', fe('10.96.0.2', 80), feV(2, 1));
  const newSvc = put(desired, 'services', id(2), svcV('new'));
  const newSlot = put(desired, 'slots', sk(2, 0), sv(2));
  const newBe = put(desired, 'backends', id(2), bv('10.0.0.2'));
  const newAddr = put(desired, 'nodeAddrs', na('192.168.1.11'), present());

  const ops = diffTables(desired, applied);
  assert.deepEqual(
    ops.map((o) => `${o.op} ${o.table}`),
    [
      // Service 1 is gone and its only frontend goes: nothing leads to its slot and entry any more.
      'delete nodeAddrs',
      'delete frontends',
      'delete slots',
      'delete services',
      'upsert backends',
      'upsert slots',
      'upsert services',
      'upsert frontends',
      'upsert nodeAddrs',
      // A backend may still be the target of a slot rewritten above: last.
      'delete backends',
    ],
  );
  assert.deepEqual(ops, [
    { op: 'delete', table: 'nodeAddrs', keys: [oldAddr.key] },
    { op: 'delete', table: 'frontends', keys: [oldFe.key] },
    { op: 'delete', table: 'slots', keys: [oldSlot.key] },
    { op: 'delete', table: 'services', keys: [oldSvc.key] },
    { op: 'upsert', table: 'backends', entries: [newBe] },
    { op: 'upsert', table: 'slots', entries: [newSlot] },
    { op: 'upsert', table: 'services', entries: [newSvc] },
    { op: 'upsert', table: 'frontends', entries: [newFe] },
    { op: 'upsert', table: 'nodeAddrs', entries: [newAddr] },
    { op: 'delete', table: 'backends', keys: [oldBe.key] },
  ]);
});

test('diffTables: a gone service port that a kept frontend still leads to keeps its slots until that frontend is rewritten', () => {
  const applied = emptyTables();
  const desired = emptyTables();
  // 10.96.0.1:80 moves from service 1 (gone) to service 2 (new).
  const oldSvc = put(applied, 'services', id(1), svcV('old'));
  put(applied, 'frontends', fe('10.96.0.1', 80), feV(1, 1));
  const oldSlot = put(applied, 'slots', sk(1, 0), sv(1));
  const oldBe = put(applied, 'backends', id(1), bv('10.0.0.1'));
  const newSvc = put(desired, 'services', id(2), svcV('new'));
  const movedFe = put(desired, 'frontends', fe('10.96.0.1', 80), feV(2, 1));
  const newSlot = put(desired, 'slots', sk(2, 0), sv(2));
  const newBe = put(desired, 'backends', id(2), bv('10.0.0.2'));
  assert.deepEqual(diffTables(desired, applied), [
    { op: 'upsert', table: 'backends', entries: [newBe] },
    { op: 'upsert', table: 'slots', entries: [newSlot] },
    { op: 'upsert', table: 'services', entries: [newSvc] },
    { op: 'upsert', table: 'frontends', entries: [movedFe] },
    { op: 'delete', table: 'slots', keys: [oldSlot.key] },
    { op: 'delete', table: 'services', keys: [oldSvc.key] },
    { op: 'delete', table: 'backends', keys: [oldBe.key] },
  ]);
});

test('diffTables: unchanged entries give no op, a changed value gives an upsert of that entry only', () => {
  const applied = emptyTables();
  const desired = emptyTables();
  for (const t of [applied, desired]) {
    put(t, 'backends', id(1), bv('10.0.0.1'));
    put(t, 'backends', id(2), bv('10.0.0.2'));
    put(t, 'slots', sk(1, 0), sv(1));
    put(t, 'services', id(1), svcV('web'));
  }
  put(applied, 'slots', sk(1, 1), sv(1));
  const changed = put(desired, 'slots', sk(1, 1), sv(2));
  put(applied, 'frontends', fe('10.96.0.1', 80), feV(1, 2));
  put(desired, 'frontends', fe('10.96.0.1', 80), feV(1, 2));

  const ops = diffTables(desired, applied);
  assert.deepEqual(ops, [{ op: 'upsert', table: 'slots', entries: [changed] }]);
  // the upsert carries the desired value, not the applied one
  assert.deepEqual(slotValue.decode((ops[0] as { entries: Entry[] }).entries[0]!.value), { backend_id: 2, addr: '10.244.0.2', port: 8080, state: 0 });
});

test('diffTables: identical tables (equal bytes, distinct buffers) give no ops', () => {
  const model: Model = {
    servicePorts: [
      {
        ref: { namespace: 'default', name: 'web', portName: '', protocol: 'TCP' },
        frontends: [{ kind: 'ClusterIP', address: '10.96.0.10', port: 80 }],
        backends: [{ address: '10.244.1.2', port: 8080, state: 'ready', local: false }],
      },
    ],
    ignored: [{ namespace: 'default', name: 'db', reason: 'headless' }],
    rejected: [],
    healthChecks: [],
    nodeAddresses: ['192.168.1.10'],
  };
  const a = compile(model, { services: new Map(), backends: new Map() }).tables;
  const b = compile(model, idsFromTables(a)).tables;
  assert.notEqual(a.frontends.values().next().value!.value, b.frontends.values().next().value!.value);
  assert.deepEqual(diffTables(a, b), []);
  assert.deepEqual(diffTables(emptyTables(), emptyTables()), []);
});

test('diffTables: from empty, everything is upserted; to empty, everything is deleted', () => {
  const t = emptyTables();
  put(t, 'backends', id(1), bv('10.0.0.1'));
  put(t, 'slots', sk(1, 0), sv(1));
  put(t, 'services', id(1), svcV('web'));
  put(t, 'frontends', fe('10.96.0.1', 80), feV(1, 1));
  assert.deepEqual(
    diffTables(t, emptyTables()).map((o) => `${o.op} ${o.table}`),
    ['upsert backends', 'upsert slots', 'upsert services', 'upsert frontends'],
  );
  assert.deepEqual(
    diffTables(emptyTables(), t).map((o) => `${o.op} ${o.table}`),
    ['delete frontends', 'delete slots', 'delete services', 'delete backends'],
  );
});

test('diffTables: a service shrinking from 3 to 2 backends lowers the count before removing the slot', () => {
  const backends = [
    { address: '10.244.1.2', port: 8080, state: 'ready' as const, local: false },
    { address: '10.244.1.3', port: 8080, state: 'ready' as const, local: false },
    { address: '10.244.2.4', port: 8080, state: 'ready' as const, local: false },
  ];
  const model = (n: number): Model => ({
    servicePorts: [
      {
        ref: { namespace: 'default', name: 'web', portName: 'http', protocol: 'TCP' },
        frontends: [
          { kind: 'ClusterIP', address: '10.96.0.10', port: 80 },
          { kind: 'NodePort', address: '0.0.0.0', port: 30080 },
        ],
        backends: backends.slice(0, n),
      },
    ],
    ignored: [],
    rejected: [],
    healthChecks: [],
    nodeAddresses: ['192.168.1.10'],
  });
  const before = compile(model(3), { services: new Map(), backends: new Map() }).tables;
  const after = compile(model(2), idsFromTables(before)).tables;
  const ops = diffTables(after, before);
  assert.deepEqual(hexOps(ops), [
    {
      op: 'upsert',
      table: 'frontends',
      entries: [
        [fe('10.96.0.10', 80).toString('hex'), frontendValue.encode({ service_id: 1, backend_count: 2, kind: 1 }).toString('hex')],
        [
          frontendKey.encode({ addr: '0.0.0.0', port: 30080, proto: 6 }).toString('hex'),
          frontendValue.encode({ service_id: 1, backend_count: 2, kind: 2 }).toString('hex'),
        ],
      ],
    },
    { op: 'delete', table: 'slots', keys: [sk(1, 2).toString('hex')] },
    { op: 'delete', table: 'backends', keys: [id(3).toString('hex')] },
  ]);
});

test('diffTables: a Service\'s changed slots are written highest first, so an endpoint turning draining (it moves up) is listed throughout', () => {
  const ready = (address: string) => ({ address, port: 8080, state: 'ready' as const, local: false });
  const model = (servicePort: Pick<Model['servicePorts'][number], 'backends' | 'draining'>): Model => ({
    servicePorts: [
      { ref: { namespace: 'default', name: 'web', portName: 'http', protocol: 'UDP' }, frontends: [{ kind: 'ClusterIP', address: '10.96.0.10', port: 53 }], ...servicePort },
    ],
    ignored: [],
    rejected: [],
    healthChecks: [],
    nodeAddresses: [],
  });
  const before = compile(model({ backends: [ready('10.244.1.2'), ready('10.244.1.3')] }), { services: new Map(), backends: new Map() }).tables;
  const after = compile(
    model({ backends: [ready('10.244.1.1'), ready('10.244.1.3')], draining: [{ ...ready('10.244.1.2'), state: 'serving-terminating' }] }),
    idsFromTables(before),
  ).tables;
  const slotWrites = diffTables(after, before).flatMap((o) => (o.op === 'upsert' && o.table === 'slots' ? o.entries.map((e) => slotKey.decode(e.key).slot) : []));
  assert.deepEqual(slotWrites, [2, 0], "10.244.1.2 lands in slot 2 before slot 0 takes 10.244.1.1");
});
