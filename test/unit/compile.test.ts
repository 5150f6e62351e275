import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backendIdentity, compile, Compiler, idsFromTables as idsFromPacked, type IdAssignment } from '../../src/compile/compile.js';
import { packTables } from '../../src/contract/packed.js';
import {
  BACKEND_FLAGS,
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
  type StructCodec,
} from '../../src/contract/codecs.js';
import { TABLES, type TableName, type Tables } from '../../src/contract/tables.js';
import type { Backend, Model, ServicePort } from '../../src/model/types.js';

/** The IDs a table set holds, as the datapath recovers them after a restart. */
const idsFromTables = (tables: Tables) => idsFromPacked(packTables(tables));

const NONE: IdAssignment = { services: new Map(), backends: new Map() };

function be(address: string, port: number, state: Backend['state'] = 'ready', local = false): Backend {
  return { address, port, state, local };
}

function sp(
  namespace: string,
  name: string,
  portName: string,
  protocol: 'TCP' | 'UDP',
  frontends: ServicePort['frontends'],
  backends: Backend[],
): ServicePort {
  return { ref: { namespace, name, portName, protocol }, frontends, backends };
}

/** web:http with 3 backends (one terminating, one local) and a NodePort, web:metrics with none, one ignored Service, two node addresses. */
function smallModel(): Model {
  return {
    servicePorts: [
      sp(
        'default',
        'web',
        'http',
        'TCP',
        [
          { kind: 'ClusterIP', address: '10.96.0.10', port: 80 },
          { kind: 'NodePort', address: '0.0.0.0', port: 30080 },
        ],
        [be('10.244.1.2', 8080), be('10.244.1.3', 8080, 'ready', true), be('10.244.2.4', 8080, 'serving-terminating')],
      ),
      sp('default', 'web', 'metrics', 'TCP', [{ kind: 'ClusterIP', address: '10.96.0.10', port: 9090 }], []),
    ],
    ignored: [{ namespace: 'kube-system', name: 'ext', reason: 'ExternalName' }],
    rejected: [],
    healthChecks: [],
    nodeAddresses: ['127.0.0.1', '192.168.1.10'],
  };
}

/** Every table decoded, sorted by key bytes: what the kernel would hold. */
function decoded(tables: Tables) {
  const sorted = <T>(m: Tables[keyof Tables], f: (e: { key: Buffer; value: Buffer }) => T) =>
    [...m.values()].sort((a, b) => Buffer.compare(a.key, b.key)).map(f);
  return {
    frontends: sorted(tables.frontends, (e) => ({ ...frontendKey.decode(e.key), ...frontendValue.decode(e.value) })),
    slots: sorted(tables.slots, (e) => ({ ...slotKey.decode(e.key), ...slotValue.decode(e.value) })),
    backends: sorted(tables.backends, (e) => ({ id: u32Key.decode(e.key).id, ...backendValue.decode(e.value) })),
    services: sorted(tables.services, (e) => ({ id: u32Key.decode(e.key).id, ...serviceValue.decode(e.value) })),
    nodeAddrs: sorted(tables.nodeAddrs, (e) => ({ ...nodeAddrKey.decode(e.key), ...u32Value.decode(e.value) })),
  };
}

/** Every table as hex key -> hex value pairs, sorted: byte identity. */
function bytes(tables: Tables): Record<string, Array<[string, string]>> {
  const out: Record<string, Array<[string, string]>> = {};
  for (const [name, content] of Object.entries(tables)) {
    out[name] = [...content.entries()]
      .map(([hex, e]): [string, string] => {
        assert.equal(hex, e.key.toString('hex'), `${name}: map key is not the key's hex`);
        return [hex, e.value.toString('hex')];
      })
      .sort(([a], [b]) => a.localeCompare(b));
  }
  return out;
}

function serviceIds(tables: Tables): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of decoded(tables).services) out[`${s.namespace}/${s.name}:${s.port_name}`] = s.id;
  return out;
}

function backendIds(tables: Tables): Record<string, number> {
  const out: Record<string, number> = {};
  for (const b of decoded(tables).backends) out[`${b.addr}:${b.port}/${b.proto}`] = b.id;
  return out;
}

test('compile: a small model gives exactly these entries', () => {
  const { tables, ids } = compile(smallModel(), NONE);
  assert.deepEqual(
    Object.fromEntries(Object.entries(tables).map(([k, v]) => [k, v.size])),
    { frontends: 3, slots: 3, backends: 3, services: 3, nodeAddrs: 2 },
  );
  const d = decoded(tables);
  assert.deepEqual(d.services, [
    { id: 1, namespace: 'default', name: 'web', port_name: 'http', proto: 6, skip_reason: 0 },
    { id: 2, namespace: 'default', name: 'web', port_name: 'metrics', proto: 6, skip_reason: 0 },
    { id: 3, namespace: 'kube-system', name: 'ext', port_name: '', proto: 0, skip_reason: 1 },
  ]);
  assert.deepEqual(d.backends, [
    { id: 1, addr: '10.244.1.2', port: 8080, proto: 6, flags: 0 },
    { id: 2, addr: '10.244.1.3', port: 8080, proto: 6, flags: BACKEND_FLAGS.local },
    { id: 3, addr: '10.244.2.4', port: 8080, proto: 6, flags: 0 },
  ]);
  // slots 0..n-1 of service 1, in the model's backend order, each with its backend's address; nothing for the 0-backend port
  assert.deepEqual(d.slots, [
    { service_id: 1, slot: 0, backend_id: 1, addr: '10.244.1.2', port: 8080, state: 0 },
    { service_id: 1, slot: 1, backend_id: 2, addr: '10.244.1.3', port: 8080, state: 0 },
    { service_id: 1, slot: 2, backend_id: 3, addr: '10.244.2.4', port: 8080, state: 1 },
  ]);
  // keys sort by address bytes: 0.0.0.0:30080 (the NodePort), 10.96.0.10:80, 10.96.0.10:9090
  assert.deepEqual(d.frontends, [
    { addr: '0.0.0.0', port: 30080, proto: 6, service_id: 1, backend_count: 3, kind: 2 },
    { addr: '10.96.0.10', port: 80, proto: 6, service_id: 1, backend_count: 3, kind: 1 },
    { addr: '10.96.0.10', port: 9090, proto: 6, service_id: 2, backend_count: 0, kind: 1 },
  ]);
  assert.deepEqual(d.nodeAddrs, [
    { addr: '127.0.0.1', value: NODE_ADDR_PRESENT },
    { addr: '192.168.1.10', value: NODE_ADDR_PRESENT },
  ]);
  assert.deepEqual(ids.services, new Map([
    ['default/web:http/6', 1],
    ['default/web:metrics/6', 2],
    ['kube-system/ext#ignored', 3],
  ]));
  assert.deepEqual(ids.backends, new Map([
    [backendIdentity('10.244.1.2', 8080, 6), 1],
    [backendIdentity('10.244.1.3', 8080, 6), 2],
    [backendIdentity('10.244.2.4', 8080, 6), 3],
  ]));
});

test('compile: draining endpoints take the slots after backend_count, and their backend entries stay until they go', () => {
  const web = (draining?: Backend[]): ServicePort => ({
    ...sp('default', 'web', 'dns', 'UDP', [{ kind: 'ClusterIP', address: '10.96.0.10', port: 53 }], [be('10.244.1.2', 5353)]),
    ...(draining && { draining }),
  });
  const model = (servicePort: ServicePort): Model => ({ servicePorts: [servicePort], ignored: [], rejected: [], healthChecks: [], nodeAddresses: [] });
  const compiler = new Compiler();
  compiler.update(model(web([be('10.244.1.1', 5353, 'serving-terminating'), be('10.244.1.3', 5353, 'serving-terminating')])));
  const d = decoded(compiler.content());
  assert.deepEqual(d.frontends.map((f) => f.backend_count), [1], 'new flows spread over the ready backend only');
  assert.deepEqual(
    d.slots.map((s) => `${s.slot}:${s.addr}/${s.state}`),
    ['0:10.244.1.2/0', '1:10.244.1.1/1', '2:10.244.1.3/1'],
  );
  assert.deepEqual(d.backends.map((b) => b.addr), ['10.244.1.1', '10.244.1.2', '10.244.1.3']);
  const changes = compiler.update(model(web()))!;
  const after = decoded(compiler.content());
  assert.deepEqual(after.slots.map((s) => `${s.slot}:${s.addr}`), ['0:10.244.1.2']);
  assert.deepEqual(after.backends.map((b) => b.addr), ['10.244.1.2']);
  assert.equal(changes.touched.slots.size, 3, 'slot 0 rewritten, slots 1 and 2 gone');
});

test('compile: slots follow the model order, not the backend ID order', () => {
  const model = smallModel();
  model.servicePorts[0]!.backends.reverse();
  const d = decoded(compile(model, NONE).tables);
  assert.deepEqual(
    d.slots.map((s) => [s.slot, s.backend_id, s.state]),
    [
      [0, 3, 1],
      [1, 2, 0],
      [2, 1, 0],
    ],
  );
});

test('compile: backends are shared across services by addr:port/proto only', () => {
  const model: Model = {
    servicePorts: [
      sp('a', 'one', '', 'TCP', [{ kind: 'ClusterIP', address: '10.96.0.1', port: 80 }], [be('10.244.0.5', 8080), be('10.244.0.6', 8080)]),
      // same pod and port as a/one (but terminating here): same backend entry, own slot state
      sp('b', 'two', '', 'TCP', [{ kind: 'ClusterIP', address: '10.96.0.2', port: 80 }], [be('10.244.0.5', 8080, 'serving-terminating')]),
      // same addr:port over UDP: a different backend
      sp('b', 'two', 'dns', 'UDP', [{ kind: 'ClusterIP', address: '10.96.0.2', port: 53 }], [be('10.244.0.5', 8080)]),
      // same addr, other port: a different backend
      sp('c', 'three', '', 'TCP', [{ kind: 'ClusterIP', address: '10.96.0.3', port: 80 }], [be('10.244.0.5', 9090)]),
    ],
    ignored: [],
    rejected: [],
    healthChecks: [],
    nodeAddresses: [],
  };
  const { tables } = compile(model, NONE);
  const d = decoded(tables);
  assert.deepEqual(d.backends, [
    { id: 1, addr: '10.244.0.5', port: 8080, proto: 6, flags: 0 },
    { id: 2, addr: '10.244.0.5', port: 8080, proto: 17, flags: 0 },
    { id: 3, addr: '10.244.0.5', port: 9090, proto: 6, flags: 0 },
    { id: 4, addr: '10.244.0.6', port: 8080, proto: 6, flags: 0 },
  ]);
  const sids = serviceIds(tables);
  assert.deepEqual(sids, { 'a/one:': 1, 'b/two:': 2, 'b/two:dns': 3, 'c/three:': 4 });
  assert.deepEqual(d.slots, [
    { service_id: 1, slot: 0, backend_id: 1, addr: '10.244.0.5', port: 8080, state: 0 },
    { service_id: 1, slot: 1, backend_id: 4, addr: '10.244.0.6', port: 8080, state: 0 },
    { service_id: 2, slot: 0, backend_id: 1, addr: '10.244.0.5', port: 8080, state: 1 },
    { service_id: 3, slot: 0, backend_id: 2, addr: '10.244.0.5', port: 8080, state: 0 },
    { service_id: 4, slot: 0, backend_id: 3, addr: '10.244.0.5', port: 9090, state: 0 },
  ]);
});

test('compile: recompiling with the IDs read back from the tables gives identical bytes', () => {
  const first = compile(smallModel(), NONE);
  const again = compile(smallModel(), idsFromTables(first.tables));
  assert.deepEqual(bytes(again.tables), bytes(first.tables));
  assert.deepEqual(idsFromTables(first.tables), first.ids);
  // also when the previous IDs are not the lowest ones
  const shifted: IdAssignment = {
    services: new Map([...first.ids.services].map(([k, v]) => [k, v + 10])),
    backends: new Map([...first.ids.backends].map(([k, v]) => [k, v + 20])),
  };
  const moved = compile(smallModel(), shifted);
  assert.deepEqual(serviceIds(moved.tables), { 'default/web:http': 11, 'default/web:metrics': 12, 'kube-system/ext:': 13 });
  assert.deepEqual(backendIds(moved.tables), { '10.244.1.2:8080/6': 21, '10.244.1.3:8080/6': 22, '10.244.2.4:8080/6': 23 });
  const again2 = compile(smallModel(), idsFromTables(moved.tables));
  assert.deepEqual(bytes(again2.tables), bytes(moved.tables));
});

test('compile: adding a service keeps every existing ID', () => {
  const first = compile(smallModel(), NONE);
  const model = smallModel();
  // sorts before everything else, so a from-scratch assignment would give it ID 1
  model.servicePorts.unshift(
    sp('aaa', 'api', '', 'TCP', [{ kind: 'ClusterIP', address: '10.96.0.20', port: 443 }], [be('10.0.0.1', 443), be('10.244.1.2', 8080)]),
  );
  const second = compile(model, idsFromTables(first.tables));
  assert.deepEqual(serviceIds(second.tables), {
    'aaa/api:': 4,
    'default/web:http': 1,
    'default/web:metrics': 2,
    'kube-system/ext:': 3,
  });
  assert.deepEqual(backendIds(second.tables), {
    '10.0.0.1:443/6': 4,
    '10.244.1.2:8080/6': 1,
    '10.244.1.3:8080/6': 2,
    '10.244.2.4:8080/6': 3,
  });
  // the old service's entries are byte for byte unchanged
  const before = bytes(first.tables);
  const after = bytes(second.tables);
  for (const table of ['frontends', 'slots', 'services', 'backends', 'nodeAddrs']) {
    for (const entry of before[table]!) assert.ok(after[table]!.some((e) => e[0] === entry[0] && e[1] === entry[1]), `${table} ${entry[0]} changed`);
  }
  assert.equal(after.slots!.length, 5);
});

test('compile: an ID freed in a compile is not reused by that compile, but is later', () => {
  const svc = (name: string, backend: string) =>
    sp('default', name, '', 'TCP', [{ kind: 'ClusterIP', address: `10.96.0.${name.charCodeAt(0)}`, port: 80 }], [be(backend, 80)]);
  const m1: Model = { servicePorts: [svc('a', '10.0.0.1'), svc('b', '10.0.0.2')], ignored: [], rejected: [], healthChecks: [], nodeAddresses: [] };
  const c1 = compile(m1, NONE);
  assert.deepEqual(serviceIds(c1.tables), { 'default/a:': 1, 'default/b:': 2 });
  assert.deepEqual(backendIds(c1.tables), { '10.0.0.1:80/6': 1, '10.0.0.2:80/6': 2 });

  // remove a (and its backend), add c in the same step: c must not take a's IDs
  const m2: Model = { servicePorts: [svc('b', '10.0.0.2'), svc('c', '10.0.0.3')], ignored: [], rejected: [], healthChecks: [], nodeAddresses: [] };
  const c2 = compile(m2, idsFromTables(c1.tables));
  assert.deepEqual(serviceIds(c2.tables), { 'default/b:': 2, 'default/c:': 3 });
  assert.deepEqual(backendIds(c2.tables), { '10.0.0.2:80/6': 2, '10.0.0.3:80/6': 3 });
  assert.deepEqual(c2.ids.services, new Map([['default/b:/6', 2], ['default/c:/6', 3]]));

  // one compile later, the freed IDs are free again: lowest first
  const m3: Model = { servicePorts: [svc('b', '10.0.0.2'), svc('c', '10.0.0.3'), svc('d', '10.0.0.4')], ignored: [], rejected: [], healthChecks: [], nodeAddresses: [] };
  const c3 = compile(m3, idsFromTables(c2.tables));
  assert.deepEqual(serviceIds(c3.tables), { 'default/b:': 2, 'default/c:': 3, 'default/d:': 1 });
  assert.deepEqual(backendIds(c3.tables), { '10.0.0.2:80/6': 2, '10.0.0.3:80/6': 3, '10.0.0.4:80/6': 1 });
  // and the returned ids work as "previous" just like the tables do
  assert.deepEqual(bytes(compile(m3, c2.ids).tables), bytes(c3.tables));
});

test('compile: deterministic', () => {
  const a = compile(smallModel(), NONE);
  const b = compile(smallModel(), NONE);
  assert.deepEqual(bytes(a.tables), bytes(b.tables));
  // insertion order too, not only content
  for (const table of ['frontends', 'slots', 'services', 'backends', 'nodeAddrs'] as const) {
    assert.deepEqual([...a.tables[table].keys()], [...b.tables[table].keys()], table);
  }
  // fresh IDs go by identity, not by position in the model
  const reversed = smallModel();
  reversed.servicePorts.reverse();
  reversed.ignored.reverse();
  assert.deepEqual(bytes(compile(reversed, NONE).tables), bytes(a.tables));
  // compile does not modify its inputs
  const model = smallModel();
  const previous = idsFromTables(a.tables);
  const snapshot = structuredClone({ model, previous });
  compile(model, previous);
  assert.deepEqual({ model, previous }, snapshot);
});

test('compile: an empty model gives empty tables', () => {
  const { tables, ids } = compile({ servicePorts: [], ignored: [], rejected: [], healthChecks: [], nodeAddresses: [] }, NONE);
  assert.deepEqual(bytes(tables), { frontends: [], slots: [], backends: [], services: [], nodeAddrs: [] });
  assert.deepEqual(ids, { services: new Map(), backends: new Map() });
});

test('compile: a backend is flagged local when any service port listing it says so; node addresses are listed once each', () => {
  const cases: Array<{ name: string; localIn: Array<'a' | 'b'>; flags: number }> = [
    { name: 'no listing says local', localIn: [], flags: 0 },
    { name: 'the first listing says local', localIn: ['a'], flags: BACKEND_FLAGS.local },
    { name: 'the second listing says local', localIn: ['b'], flags: BACKEND_FLAGS.local },
    { name: 'both say local', localIn: ['a', 'b'], flags: BACKEND_FLAGS.local },
  ];
  for (const c of cases) {
    const model: Model = {
      servicePorts: (['a', 'b'] as const).map((name, i) =>
        sp('default', name, '', 'TCP', [{ kind: 'ClusterIP', address: `10.96.0.${i + 1}`, port: 80 }], [be('10.244.0.5', 8080, 'ready', c.localIn.includes(name))]),
      ),
      ignored: [],
      rejected: [],
      healthChecks: [],
      nodeAddresses: ['172.18.0.2'],
    };
    const d = decoded(compile(model, NONE).tables);
    assert.deepEqual(d.backends, [{ id: 1, addr: '10.244.0.5', port: 8080, proto: 6, flags: c.flags }], c.name);
    assert.deepEqual(d.nodeAddrs, [{ addr: '172.18.0.2', value: NODE_ADDR_PRESENT }], c.name);
  }
});

test('compile: past the arenas first size, every entry keeps its bytes (the arenas grow under the writes)', () => {
  const count = 300;
  const model: Model = {
    servicePorts: Array.from({ length: count }, (_, i) =>
      sp('default', `s${String(i).padStart(3, '0')}`, '', 'TCP', [{ kind: 'ClusterIP', address: `10.96.${i >> 8}.${i & 255}`, port: 80 }], [
        be(`10.244.${i >> 8}.${i & 255}`, 8080),
        be(`10.245.${i >> 8}.${i & 255}`, 8080),
      ]),
    ),
    ignored: [],
    rejected: [],
    healthChecks: [],
    nodeAddresses: [],
  };
  const d = decoded(compile(model, NONE).tables);
  assert.equal(d.services.length, count);
  assert.deepEqual(
    d.services.sort((a, b) => a.id - b.id).map((s) => [s.id, s.name]),
    model.servicePorts.map((p, i) => [i + 1, p.ref.name]),
  );
  assert.deepEqual(
    d.frontends.map((f) => [f.addr, f.service_id, f.backend_count]).sort((a, b) => Number(a[1]) - Number(b[1])),
    model.servicePorts.map((p, i) => [p.frontends[0]!.address, i + 1, 2]),
  );
  const backendById = new Map(d.backends.map((b) => [b.id, b.addr]));
  assert.deepEqual(
    d.slots.sort((a, b) => a.service_id - b.service_id || a.slot - b.slot).map((s) => [s.service_id, s.slot, backendById.get(s.backend_id)]),
    model.servicePorts.flatMap((p, i) => p.backends.map((b, slot) => [i + 1, slot, b.address])),
  );
});

test('compile: every entry written decodes and encodes back to its own bytes (pads zero, no stale tail in a reused slot), under the key id its bytes give', () => {
  // NodePorts, external addresses, UDP, local and terminating backends, an ignored Service; then a change that frees
  // slots and reuses them: a Service with long names leaves, one with short names comes, so a name written over a
  // longer one shows any byte left of it.
  const long = 'x'.repeat(60);
  const before = smallModel();
  before.servicePorts.push(
    sp('ns', 'dns', 'dns', 'UDP', [{ kind: 'ClusterIP', address: '10.96.0.53', port: 53 }, { kind: 'ExternalIP', address: '203.0.113.7', port: 53 }], [be('10.244.9.9', 5353, 'ready', true)]),
    sp('ns', long, 'port-name-long', 'TCP', [{ kind: 'ClusterIP', address: '10.96.0.60', port: 80 }], [be('10.244.9.7', 8080)]),
  );
  const after: Model = {
    ...before,
    servicePorts: [
      before.servicePorts[0]!,
      sp('ns', 'dns', 'dns', 'UDP', [{ kind: 'LoadBalancer', address: '198.51.100.1', port: 53 }], [be('10.244.9.8', 53)]),
      sp('ns', 's', 'p', 'TCP', [{ kind: 'ClusterIP', address: '10.96.0.61', port: 80 }], [be('10.244.9.6', 8080)]),
    ],
  };
  const compiler = new Compiler();
  for (const model of [before, after]) {
    compiler.update(model);
    for (const name of Object.keys(TABLES) as TableName[]) {
      const t = compiler.tables[name];
      const { key, value } = TABLES[name] as { key: StructCodec<object>; value: StructCodec<object> };
      for (const slot of t.slots()) {
        assert.equal(TABLES[name].keyId(t.keys, slot * t.keySize), t.idAt(slot), `${name}: key id of slot ${slot}`);
        const keyBytes = t.keys.subarray(slot * t.keySize, (slot + 1) * t.keySize);
        const valueBytes = t.values.subarray(slot * t.valueSize, (slot + 1) * t.valueSize);
        assert.deepEqual(key.encode(key.decode(keyBytes)), keyBytes, `${name}: key bytes of slot ${slot}`);
        assert.deepEqual(value.encode(value.decode(valueBytes)), valueBytes, `${name}: value bytes of slot ${slot}`);
      }
    }
  }
  const names = compiler.tables.services.slots().map((slot) => serviceValue.decode(compiler.tables.services.values, slot * serviceValue.size).name);
  assert.ok(names.includes('s') && !names.includes(long), `the short-named Service took the long one's place: ${names.join(', ')}`);
});

test('idsFromTables: an ID at or above its map capacity is left out (kpx hands out IDs dense from 1)', () => {
  const { tables } = compile(smallModel(), NONE);
  tables.backends.set('stray', { key: u32Key.encode({ id: 0xfffffff0 }), value: backendValue.encode({ addr: '192.0.2.9', port: 9, proto: 6, flags: 0 }) });
  const stray = backendIdentity('192.0.2.9', 9, 6);
  assert.equal(idsFromPacked(packTables(tables)).backends.get(stray), 0xfffffff0);
  const capacity = { frontends: 1024, slots: 1024, backends: 1024, services: 1024, nodeAddrs: 16 };
  const ids = idsFromPacked(packTables(tables), capacity);
  assert.equal(ids.backends.has(stray), false);
  assert.equal(ids.backends.size, 3, 'the real ones kept');
});
