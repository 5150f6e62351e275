import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Compiler } from '../../src/compile/compile.js';
import { emptyTables, type Tables } from '../../src/contract/tables.js';
import { listServicePorts } from '../../src/inspect/listing.js';
import type { Backend, Model, ServicePort } from '../../src/model/types.js';
import { diffTables, markApplied } from '../../src/reconcile/table-diff.js';

/** A small deterministic PRNG, so a failure replays. */
function rng(seed: number): () => number {
  return () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
}

function servicePort(i: number, backends: number[], protocol: 'TCP' | 'UDP' = 'TCP'): ServicePort {
  return {
    ref: { namespace: 'ns', name: `svc-${i}`, portName: 'p', protocol },
    frontends: [{ kind: 'ClusterIP', address: `10.96.0.${i + 1}`, port: 80 }],
    backends: backends.map((b): Backend => ({ address: `10.244.0.${b}`, port: 8080, state: 'ready' })),
  };
}

function copyTables(t: Tables): Tables {
  const out = emptyTables();
  for (const table of Object.keys(t) as Array<keyof Tables>) for (const [k, v] of t[table]) out[table].set(k, v);
  return out;
}

test('incremental updates: the kernel side, patched with only the touched keys, always equals the model', () => {
  const random = rng(7);
  const compiler = new Compiler();
  const applied = emptyTables();
  let current: ServicePort[] = [];
  for (let step = 0; step < 300; step++) {
    // Mutate a few service ports: add, remove, change backends; keep the rest as the same objects.
    const next = current.filter(() => random() > 0.05);
    for (let k = 0; k < 3; k++) {
      const i = Math.floor(random() * 40);
      const backends = [...new Set(Array.from({ length: Math.floor(random() * 5) }, () => 1 + Math.floor(random() * 20)))].sort((a, b) => a - b);
      const at = next.findIndex((sp) => sp.ref.name === `svc-${i}`);
      if (at >= 0) next[at] = servicePort(i, backends);
      else next.push(servicePort(i, backends));
    }
    next.sort((a, b) => a.ref.name.localeCompare(b.ref.name));
    current = next;
    const model: Model = { servicePorts: current, ignored: [], rejected: [] };

    const before = copyTables(applied);
    const touched = compiler.update(model);
    const ops = diffTables(compiler.tables, applied, touched);
    markApplied(compiler.tables, applied, touched);
    assert.deepEqual(diffTables(compiler.tables, applied), [], `step ${step}: a key changed without being reported`);
    assert.equal(ops.length > 0 || diffTables(compiler.tables, before).length === 0, true);

    const listed = listServicePorts(applied);
    assert.deepEqual(
      listed.map((l) => [l.name, l.frontends.map((f) => f.address), l.backends.map((b) => b.address)]),
      current.map((sp) => [sp.ref.name, sp.frontends.map((f) => f.address), sp.backends.map((b) => b.address)]),
      `step ${step}`,
    );
    // Nothing dangling: every backend entry is used by some slot.
    const used = new Set([...applied.slots.values()].map((e) => e.value.readUInt32LE(0)));
    assert.equal(applied.backends.size, used.size, `step ${step}: unreferenced backends left`);
  }
});

test('an unchanged service port (same object) costs no touched key', () => {
  const compiler = new Compiler();
  const a = servicePort(1, [1, 2]);
  const b = servicePort(2, [3]);
  compiler.update({ servicePorts: [a, b], ignored: [], rejected: [] });
  const touched = compiler.update({ servicePorts: [a, servicePort(2, [4])], ignored: [], rejected: [] });
  assert.equal(touched.frontends.size, 1);
  assert.equal(touched.slots.size, 1);
  assert.equal(touched.backends.size, 2, 'the new backend and the one no longer used');
});
