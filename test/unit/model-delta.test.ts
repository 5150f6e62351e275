import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Compiler, compile } from '../../src/compile/compile.js';
import type { TableName } from '../../src/contract/tables.js';
import type { ObjectSnapshot } from '../../src/k8s/types.js';
import { buildModel } from '../../src/model/build.js';
import { ServiceGroups } from '../../src/model/groups.js';
import { ModelCache } from '../../src/model/incremental.js';
import type { ModelOptions } from '../../src/model/types.js';

const KUBE: ModelOptions = {
  serviceClusterIPRange: '10.96.0.0/12',
  allocateClusterIPs: false,
  nodeName: 'node-a',
  serviceNodePortRange: { min: 30000, max: 32767 },
  allocateNodePorts: false,
  nodePortAddresses: ['192.168.1.10'],
};

/** A deterministic generator (mulberry32), so a failure replays. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/* eslint-disable @typescript-eslint/no-explicit-any */
function service(name: string, rnd: () => number): any {
  const kind = rnd();
  if (kind < 0.1) return { kind: 'Service', metadata: { name, namespace: 'ns' }, spec: { type: 'ExternalName', externalName: 'x.example' }, origin: name };
  // Few nodePorts and externalIPs, so Services often compete for the same frontend.
  // An API server never hands out one ClusterIP twice: each name has its own.
  const spec: any = { clusterIP: `10.96.0.${1 + Number(name.slice(4))}`, ports: [{ name: 'http', port: 80, protocol: 'TCP' }] };
  if (rnd() < 0.4) {
    spec.type = 'NodePort';
    spec.ports[0].nodePort = 30000 + Math.floor(rnd() * 4);
  }
  if (rnd() < 0.3) spec.externalIPs = [`192.0.2.${1 + Math.floor(rnd() * 3)}`];
  if (rnd() < 0.3) spec.ports.push({ name: 'dns', port: 53, protocol: 'UDP' });
  if (rnd() < 0.2) Object.assign(spec, { type: 'LoadBalancer', externalTrafficPolicy: 'Local', healthCheckNodePort: 32000 + Number(name.slice(4)) });
  return { kind: 'Service', metadata: { name, namespace: 'ns' }, spec, origin: name };
}

function slice(service: string, index: number, rnd: () => number): any {
  const count = Math.floor(rnd() * 4);
  return {
    kind: 'EndpointSlice',
    metadata: { name: `${service}-${index}`, namespace: 'ns', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [
      { name: 'http', port: 8080, protocol: 'TCP' },
      { name: 'dns', port: 5353, protocol: 'UDP' },
    ],
    endpoints: Array.from({ length: count }, () => ({
      addresses: [`10.244.${Math.floor(rnd() * 3)}.${1 + Math.floor(rnd() * 20)}`],
      nodeName: rnd() < 0.5 ? 'node-a' : 'node-b',
      conditions: { ready: rnd() < 0.9 },
    })),
    origin: `${service}-${index}`,
  };
}

test('ModelCache.update: after every random change, full() is what buildModel gives and the deltas compile to the tables a from-scratch compile gives', () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const rnd = random(seed);
    const groups = new ServiceGroups();
    const cache = new ModelCache();
    const objects = new Map<string, { kind: 'services' | 'endpointSlices'; obj: any }>();
    const compiler = new Compiler();
    let deltas = 0;
    let healthChecked = 0;
    for (let step = 0; step < 150; step++) {
      const name = `svc-${Math.floor(rnd() * 12)}`;
      const op = rnd();
      if (op < 0.35) {
        const obj = service(name, rnd);
        objects.set(`s/${name}`, { kind: 'services', obj });
        groups.set('services', obj);
      } else if (op < 0.8) {
        const index = Math.floor(rnd() * 2);
        const obj = slice(name, index, rnd);
        objects.set(`e/${name}-${index}`, { kind: 'endpointSlices', obj });
        groups.set('endpointSlices', obj);
      } else {
        const keys = [...objects.keys()];
        if (keys.length === 0) continue;
        const key = keys[Math.floor(rnd() * keys.length)]!;
        const { kind, obj } = objects.get(key)!;
        objects.delete(key);
        groups.delete(kind, obj);
      }
      if (rnd() < 0.3 && step < 149) continue; // several changes folded into one update, as a burst is

      const update = cache.update(groups, KUBE);
      const snapshot: ObjectSnapshot = { services: [], endpointSlices: [], endpoints: [] };
      for (const { kind, obj } of objects.values()) snapshot[kind].push(obj);
      const expected = buildModel(snapshot, KUBE);
      const got = update.full();
      const where = `seed ${seed} step ${step}`;
      assert.deepEqual(got.servicePorts, expected.servicePorts, where);
      assert.deepEqual(got.ignored, expected.ignored, where);
      assert.deepEqual(new Set(update.rejected.map((r) => JSON.stringify(r))), new Set(expected.rejected.map((r) => JSON.stringify(r))), where);
      assert.equal(update.servicePortCount, expected.servicePorts.length, where);
      assert.deepEqual(update.healthChecks, expected.healthChecks, where);
      assert.deepEqual(got.healthChecks, expected.healthChecks, where);
      if (update.healthChecks.some((hc) => hc.localEndpoints > 0)) healthChecked++;

      if (update.delta) {
        compiler.updateDelta(update.delta);
        deltas++;
      } else {
        compiler.update(got);
      }
      const scratch = compile(got, compiler.ids).tables;
      for (const table of Object.keys(scratch) as TableName[]) {
        const hex = (t: typeof scratch) => [...t[table].values()].map((e) => `${e.key.toString('hex')}=${e.value.toString('hex')}`).sort();
        assert.deepEqual(hex(compiler.content()), hex(scratch), `${where}: ${table}`);
      }
    }
    assert.ok(deltas > 50, `seed ${seed}: only ${deltas} updates went through the delta path`);
    assert.ok(healthChecked > 10, `seed ${seed}: only ${healthChecked} updates had a health check with a local endpoint`);
  }
});

test('ModelCache.update: an unchanged group gives an empty delta; a node name change starts over without a delta', () => {
  const rnd = random(9);
  const groups = new ServiceGroups();
  const cache = new ModelCache();
  groups.set('services', service('a', rnd));
  groups.set('endpointSlices', slice('a', 0, rnd));
  assert.equal(cache.update(groups, KUBE).delta, undefined);
  const quiet = cache.update(groups, KUBE);
  assert.deepEqual(quiet.delta?.upserted, []);
  assert.deepEqual(quiet.delta?.removed, []);
  assert.equal(cache.update(groups, { ...KUBE, nodeName: 'node-b' }).delta, undefined);
});
