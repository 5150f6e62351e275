import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backendIdentity, Compiler, type Changes, type TouchedKeys } from '../../src/compile/compile.js';
import { BACKEND_FLAGS, backendValue, frontendValue, nodeAddrKey, slotKey, slotValue, u32Key } from '../../src/contract/codecs.js';
import { emptyPackedTables, packTables, tablesContent, type PackedTables } from '../../src/contract/packed.js';
import { TABLES } from '../../src/contract/tables.js';
import { listNodeAddresses, listServicePorts } from '../../src/inspect/listing.js';
import type { Backend, Model, ServicePort } from '../../src/model/types.js';
import { diffTables, opBatch, type TableOp } from '../../src/reconcile/table-diff.js';

/** A small deterministic PRNG, so a failure replays. */
function rng(seed: number): () => number {
  return () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
}

/** Backends 10.244.0.<b>:8080; those in `local` are listed as running on this node. */
function servicePort(i: number, backends: number[], local: number[] = [], address = `10.96.0.${i + 1}`): ServicePort {
  return {
    ref: { namespace: 'ns', name: `svc-${i}`, portName: 'p', protocol: 'TCP' },
    frontends: [{ kind: 'ClusterIP', address, port: 80 }],
    backends: backends.map((b): Backend => ({ address: `10.244.0.${b}`, port: 8080, state: 'ready', local: local.includes(b) })),
  };
}

function model(servicePorts: ServicePort[], nodeAddresses: string[] = []): Model {
  return { servicePorts, ignored: [], rejected: [], healthChecks: [], nodeAddresses };
}

/** The keys a later update touched (a compiler's first update names none: every key is new). */
function touchedBy(changes: Changes | undefined): TouchedKeys {
  assert.ok(changes, 'an update after the first names the keys it touched');
  return changes.touched;
}

/**
 * Plays ops on a stand-in for the kernel's maps, through the same batches
 * the datapath writes, one entry at a time as the kernel applies them; a
 * lookup may run between any two, so after each the kernel must only lead
 * to whole services.
 */
function play(ops: TableOp[], desired: PackedTables, held: PackedTables, kernel: PackedTables, step: number): void {
  for (const op of ops) {
    const { keys, values, count } = opBatch(op, desired, held);
    const t = kernel[op.table];
    for (let i = 0; i < count; i++) {
      const key = keys.subarray(i * t.keySize, (i + 1) * t.keySize);
      if (values) t.set(key, values.subarray(i * t.valueSize, (i + 1) * t.valueSize));
      else t.delete(TABLES[op.table].keyId(key, 0));
      const broken = brokenLookup(kernel);
      assert.equal(broken, undefined, `step ${step}, after ${op.op} ${op.table} entry ${i}: ${broken}`);
    }
  }
}

/** What a lookup could meet that is not a whole service: from a frontend, a missing slot or backend, or a slot whose address is not its backend's. */
function brokenLookup(kernel: PackedTables): string | undefined {
  for (const at of kernel.frontends.slots()) {
    const fe = frontendValue.decode(kernel.frontends.values, at * frontendValue.size);
    for (let s = 0; s < fe.backend_count; s++) {
      const slotAt = kernel.slots.slot(TABLES.slots.keyId(slotKey.encode({ service_id: fe.service_id, slot: s }), 0));
      if (slotAt === undefined) return `service ${fe.service_id} (count ${fe.backend_count}) has no slot ${s}`;
      const slot = slotValue.decode(kernel.slots.values, slotAt * slotValue.size);
      const backendAt = kernel.backends.slot(TABLES.backends.keyId(u32Key.encode({ id: slot.backend_id }), 0));
      if (backendAt === undefined) return `service ${fe.service_id} slot ${s}: no backend ${slot.backend_id}`;
      const backend = backendValue.decode(kernel.backends.values, backendAt * backendValue.size);
      if (backend.addr !== slot.addr || backend.port !== slot.port) return `service ${fe.service_id} slot ${s}: ${slot.addr}:${slot.port} but backend ${slot.backend_id} is ${backend.addr}:${backend.port}`;
    }
  }
  return undefined;
}

function copyTables(t: PackedTables): PackedTables {
  return packTables(tablesContent(t));
}

test('incremental updates: the kernel side, patched from the touched keys and their entries before, always equals the model', () => {
  const random = rng(7);
  const compiler = new Compiler();
  const applied = emptyPackedTables();
  let current: ServicePort[] = [];
  const someAddresses = ['127.0.0.1', '192.168.1.10', '172.18.0.2', '10.0.0.5'];
  for (let step = 0; step < 300; step++) {
    // Mutate a few service ports: add, remove, change backends and which listings say local, move to
    // another address (often one a removed port just gave up); keep the rest as the same objects.
    const next = current.filter(() => random() > 0.05);
    const givenUp = current.filter((sp) => !next.includes(sp)).map((sp) => sp.frontends[0]!.address);
    for (let k = 0; k < 3; k++) {
      const i = Math.floor(random() * 40);
      const backends = [...new Set(Array.from({ length: Math.floor(random() * 5) }, () => 1 + Math.floor(random() * 20)))].sort((a, b) => a - b);
      const local = backends.filter(() => random() < 0.3);
      const at = next.findIndex((sp) => sp.ref.name === `svc-${i}`);
      const taken = new Set(next.filter((_, j) => j !== at).map((sp) => sp.frontends[0]!.address));
      const free = Array.from({ length: 45 }, (_, a) => `10.96.0.${a + 1}`).filter((a) => !taken.has(a));
      const freeGivenUp = givenUp.filter((a) => !taken.has(a));
      const from = freeGivenUp.length > 0 && random() < 0.5 ? freeGivenUp : free;
      const address = from[Math.floor(random() * from.length)]!;
      if (at >= 0) next[at] = servicePort(i, backends, local, address);
      else next.push(servicePort(i, backends, local, address));
    }
    next.sort((a, b) => a.ref.name.localeCompare(b.ref.name));
    current = next;
    const nodeAddresses = someAddresses.filter(() => random() < 0.5);

    const before = copyTables(applied);
    const changes = compiler.update(model(current, nodeAddresses));
    if (step > 0) assert.ok(changes, `step ${step}: an update after the first says what changed`);
    const held = changes ? changes.before : applied;
    const ops = diffTables(compiler.tables, held, changes?.touched);
    play(ops, compiler.tables, held, applied, step);
    assert.deepEqual(diffTables(compiler.tables, applied), [], `step ${step}: a key changed without being reported`);
    assert.equal(ops.length > 0 || diffTables(compiler.tables, before).length === 0, true);

    const content = tablesContent(applied);
    const listed = listServicePorts(content);
    assert.deepEqual(
      listed.map((l) => [l.name, l.frontends.map((f) => f.address), l.backends.map((b) => b.address)]),
      current.map((sp) => [sp.ref.name, sp.frontends.map((f) => f.address), sp.backends.map((b) => b.address)]),
      `step ${step}`,
    );
    // Nothing dangling: every backend entry is used by some slot.
    const used = new Set([...content.slots.values()].map((e) => e.value.readUInt32LE(0)));
    assert.equal(content.backends.size, used.size, `step ${step}: unreferenced backends left`);
    // A backend is flagged local exactly when some service port lists it as local.
    const localWanted = new Set(current.flatMap((sp) => sp.backends.filter((b) => b.local).map((b) => b.address)));
    const localApplied = new Set(
      [...content.backends.values()].map((e) => backendValue.decode(e.value)).filter((b) => b.flags & BACKEND_FLAGS.local).map((b) => b.addr),
    );
    assert.deepEqual(localApplied, localWanted, `step ${step}: local flags`);
    assert.deepEqual(new Set(listNodeAddresses(content)), new Set(nodeAddresses), `step ${step}: node addresses`);
  }
});

test('an unchanged service port (same object) costs no touched key', () => {
  const compiler = new Compiler();
  const a = servicePort(1, [1, 2]);
  const b = servicePort(2, [3]);
  assert.equal(compiler.update(model([a, b], ['192.168.1.10'])), undefined, 'the first update: every key is new');
  const touched = touchedBy(compiler.update(model([a, servicePort(2, [4])], ['192.168.1.10'])));
  assert.equal(touched.frontends.size, 1);
  assert.equal(touched.slots.size, 1);
  assert.equal(touched.backends.size, 2, 'the new backend and the one no longer used');
  assert.equal(touched.nodeAddrs.size, 0, 'same node addresses: nothing touched');
});

test('a shared backend stays local while any listing says so, and its entry is rewritten only when that changes', () => {
  const compiler = new Compiler();
  const flagsOf = (b: number) => {
    const entry = [...compiler.content().backends.values()].find((e) => backendValue.decode(e.value).addr === `10.244.0.${b}`)!;
    return backendValue.decode(entry.value).flags;
  };
  const remote = servicePort(1, [5]);
  compiler.update(model([remote]));
  assert.equal(flagsOf(5), 0);
  let touched = touchedBy(compiler.update(model([remote, servicePort(2, [5], [5])])));
  assert.equal(flagsOf(5), BACKEND_FLAGS.local, 'one local listing is enough');
  assert.equal(touched.backends.size, 1, 'the shared entry is rewritten');
  const alsoLocal = servicePort(1, [5], [5]);
  touched = touchedBy(compiler.update(model([alsoLocal, servicePort(2, [5], [5])])));
  assert.equal(flagsOf(5), BACKEND_FLAGS.local);
  assert.equal(touched.backends.size, 0, 'flags unchanged: the backend entry is not touched');
  touched = touchedBy(compiler.update(model([alsoLocal])));
  assert.equal(flagsOf(5), BACKEND_FLAGS.local);
  assert.equal(touched.backends.size, 0, 'a local listing is left: not touched');
  touched = touchedBy(compiler.update(model([servicePort(1, [5])])));
  assert.equal(flagsOf(5), 0, 'the last local listing went away');
  assert.equal(touched.backends.size, 1);
});

test('node addresses: only the ones that come or go are touched', () => {
  const compiler = new Compiler();
  const id = (addr: string) => TABLES.nodeAddrs.keyId(nodeAddrKey.encode({ addr }), 0);
  compiler.update(model([], []));
  let touched = touchedBy(compiler.update(model([], ['127.0.0.1', '192.168.1.10'])));
  assert.deepEqual(touched.nodeAddrs, new Set([id('127.0.0.1'), id('192.168.1.10')]));
  touched = touchedBy(compiler.update(model([], ['127.0.0.1', '172.18.0.2'])));
  assert.deepEqual(touched.nodeAddrs, new Set([id('192.168.1.10'), id('172.18.0.2')]));
  assert.deepEqual(listNodeAddresses(compiler.content()), ['127.0.0.1', '172.18.0.2']);
  touched = touchedBy(compiler.update(model([], [])));
  assert.deepEqual(touched.nodeAddrs, new Set([id('127.0.0.1'), id('172.18.0.2')]));
  assert.equal(compiler.tables.nodeAddrs.size, 0);
});

test('a new backend takes the lowest free ID from the next update on, however many IDs are in use above it', () => {
  const compiler = new Compiler();
  const sp = (addresses: string[]): ServicePort => ({
    ref: { namespace: 'ns', name: 'big', portName: 'p', protocol: 'TCP' },
    frontends: [{ kind: 'ClusterIP', address: '10.96.0.1', port: 80 }],
    backends: addresses.map((address): Backend => ({ address, port: 8080, state: 'ready', local: false })),
  });
  const addresses = Array.from({ length: 1000 }, (_, i) => `10.244.${i >> 8}.${i & 255}`);
  const idOf = (address: string) => compiler.ids.backends.get(backendIdentity(address, 8080, 6));
  compiler.update(model([sp(addresses)]));
  assert.equal(idOf(addresses[499]!), 500);
  const replace = (at: number, address: string) => {
    addresses[at] = address;
    compiler.update(model([sp(addresses)]));
  };
  replace(499, '10.250.0.1');
  assert.equal(idOf('10.250.0.1'), 1001, 'ID 500 was freed by this very update: not handed out');
  replace(9, '10.250.0.2');
  assert.equal(idOf('10.250.0.2'), 500, 'the lowest free one');
  replace(19, '10.250.0.3');
  assert.equal(idOf('10.250.0.3'), 10);
  replace(29, '10.250.0.4');
  assert.equal(idOf('10.250.0.4'), 20);
});
