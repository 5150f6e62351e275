import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compile } from '../../src/compile/compile.js';
import { emptyTables, type Tables } from '../../src/contract/tables.js';
import { formatListing, listNodeAddresses, listServicePorts, type ListedServicePort } from '../../src/inspect/listing.js';
import type { Model } from '../../src/model/types.js';

/** Ports given in an order unlike the listing's; frontends, backends and node addresses too. */
function model(): Model {
  return {
    servicePorts: [
      {
        ref: { namespace: 'default', name: 'web', portName: 'metrics', protocol: 'TCP' },
        frontends: [{ kind: 'ClusterIP', address: '10.96.0.10', port: 9090 }],
        backends: [],
      },
      {
        ref: { namespace: 'default', name: 'web', portName: 'http', protocol: 'TCP' },
        frontends: [
          { kind: 'NodePort', address: '0.0.0.0', port: 30080 },
          { kind: 'ClusterIP', address: '10.96.0.10', port: 80 },
        ],
        // not in backend-ID order: slot order must win
        backends: [
          { address: '10.244.2.4', port: 8080, state: 'serving-terminating', local: true },
          { address: '10.244.1.2', port: 8080, state: 'ready', local: false },
          { address: '10.244.1.3', port: 8080, state: 'ready', local: true },
        ],
      },
    ],
    ignored: [{ namespace: 'kube-system', name: 'ext', reason: 'ExternalName' }],
    rejected: [],
    healthChecks: [],
    nodeAddresses: ['192.168.1.10', '10.0.0.9', '127.0.0.1'],
  };
}

/** The same entries, each table inserted in reverse order (as a map dump could return them). */
function reversed(tables: Tables): Tables {
  const out = emptyTables();
  for (const name of Object.keys(tables) as Array<keyof Tables>) out[name] = new Map([...tables[name]].reverse());
  return out;
}

const EXPECTED: ListedServicePort[] = [
  {
    namespace: 'default',
    name: 'web',
    portName: 'http',
    protocol: 'TCP',
    frontends: [
      { kind: 'ClusterIP', address: '10.96.0.10', port: 80 },
      { kind: 'NodePort', address: '0.0.0.0', port: 30080 },
    ],
    backends: [
      { address: '10.244.2.4', port: 8080, state: 'serving-terminating', local: true },
      { address: '10.244.1.2', port: 8080, state: 'ready', local: false },
      { address: '10.244.1.3', port: 8080, state: 'ready', local: true },
    ],
  },
  {
    namespace: 'default',
    name: 'web',
    portName: 'metrics',
    protocol: 'TCP',
    frontends: [{ kind: 'ClusterIP', address: '10.96.0.10', port: 9090 }],
    backends: [],
  },
  {
    namespace: 'kube-system',
    name: 'ext',
    portName: '',
    protocol: '',
    ignored: 'ExternalName',
    frontends: [],
    backends: [],
  },
];

test('listServicePorts and listNodeAddresses read compiled tables back', () => {
  const { tables } = compile(model(), { services: new Map(), backends: new Map() });
  assert.deepEqual(listServicePorts(tables), EXPECTED);
  assert.deepEqual(listNodeAddresses(tables), ['10.0.0.9', '127.0.0.1', '192.168.1.10']);
});

test('listServicePorts and listNodeAddresses do not depend on the order entries come out of the maps', () => {
  const { tables } = compile(model(), { services: new Map(), backends: new Map() });
  assert.deepEqual(listServicePorts(reversed(tables)), EXPECTED);
  assert.deepEqual(listNodeAddresses(reversed(tables)), ['10.0.0.9', '127.0.0.1', '192.168.1.10']);
});

test('listServicePorts: UDP, every frontend kind, every ignore reason', () => {
  const m: Model = {
    servicePorts: [
      {
        ref: { namespace: 'kube-system', name: 'kube-dns', portName: 'dns', protocol: 'UDP' },
        frontends: [
          { kind: 'LoadBalancer', address: '203.0.113.5', port: 53 },
          { kind: 'ExternalIP', address: '198.51.100.7', port: 53 },
          { kind: 'NodePort', address: '0.0.0.0', port: 30053 },
          { kind: 'ClusterIP', address: '10.96.0.10', port: 53 },
        ],
        backends: [{ address: '10.244.0.3', port: 53, state: 'ready', local: false }],
      },
    ],
    ignored: [
      { namespace: 'a', name: 'db', reason: 'headless' },
      { namespace: 'a', name: 'mesh', reason: 'service-proxy-name' },
    ],
    rejected: [],
    healthChecks: [],
    nodeAddresses: [],
  };
  const listed = listServicePorts(compile(m, { services: new Map(), backends: new Map() }).tables);
  assert.deepEqual(listed, [
    { namespace: 'a', name: 'db', portName: '', protocol: '', ignored: 'headless', frontends: [], backends: [] },
    { namespace: 'a', name: 'mesh', portName: '', protocol: '', ignored: 'service-proxy-name', frontends: [], backends: [] },
    {
      namespace: 'kube-system',
      name: 'kube-dns',
      portName: 'dns',
      protocol: 'UDP',
      frontends: [
        { kind: 'ClusterIP', address: '10.96.0.10', port: 53 },
        { kind: 'NodePort', address: '0.0.0.0', port: 30053 },
        { kind: 'ExternalIP', address: '198.51.100.7', port: 53 },
        { kind: 'LoadBalancer', address: '203.0.113.5', port: 53 },
      ],
      backends: [{ address: '10.244.0.3', port: 53, state: 'ready', local: false }],
    },
  ]);
});

test('listServicePorts: draining endpoints (the slots past backend_count) are listed apart, and shown as draining', () => {
  const m: Model = {
    servicePorts: [
      {
        ref: { namespace: 'kube-system', name: 'kube-dns', portName: 'dns', protocol: 'UDP' },
        frontends: [{ kind: 'ClusterIP', address: '10.96.0.10', port: 53 }],
        backends: [{ address: '10.244.0.3', port: 53, state: 'ready', local: false }],
        draining: [{ address: '10.244.0.2', port: 53, state: 'serving-terminating', local: true }],
      },
    ],
    ignored: [],
    rejected: [],
    healthChecks: [],
    nodeAddresses: [],
  };
  const listed = listServicePorts(compile(m, { services: new Map(), backends: new Map() }).tables);
  assert.deepEqual(listed[0]!.backends, [{ address: '10.244.0.3', port: 53, state: 'ready', local: false }]);
  assert.deepEqual(listed[0]!.draining, [{ address: '10.244.0.2', port: 53, state: 'serving-terminating', local: true }]);
  assert.match(formatListing(listed, []), /10\.244\.0\.3:53, 10\.244\.0\.2:53 \(draining, local\)$/);
});

test('listServicePorts: a port whose frontends all went to other Services lists its slots as backends', () => {
  const m: Model = {
    servicePorts: [
      {
        ref: { namespace: 'default', name: 'loser', portName: '', protocol: 'TCP' },
        frontends: [],
        backends: [{ address: '10.244.0.3', port: 80, state: 'ready', local: false }],
      },
    ],
    ignored: [],
    rejected: [],
    healthChecks: [],
    nodeAddresses: [],
  };
  const [listed] = listServicePorts(compile(m, { services: new Map(), backends: new Map() }).tables);
  assert.deepEqual(listed!.backends, [{ address: '10.244.0.3', port: 80, state: 'ready', local: false }]);
  assert.equal(listed!.draining, undefined);
});

test('listServicePorts of empty tables is empty', () => {
  assert.deepEqual(listServicePorts(emptyTables()), []);
  assert.deepEqual(listNodeAddresses(emptyTables()), []);
  assert.equal(formatListing([], []), 'NAMESPACE  NAME  PORT  PROTO  FRONTENDS  BACKENDS');
});

test('formatListing: the NodePort addresses, a header, one aligned line per service port', () => {
  const { tables } = compile(model(), { services: new Map(), backends: new Map() });
  const text = formatListing(listServicePorts(tables), listNodeAddresses(tables));
  const sp = (n: number) => ' '.repeat(n);
  assert.deepEqual(text.split('\n'), [
    'NodePorts (*) answer on: 10.0.0.9, 127.0.0.1, 192.168.1.10',
    'NAMESPACE' + sp(4) + 'NAME' + sp(2) + 'PORT' + sp(5) + 'PROTO' + sp(2) + 'FRONTENDS' + sp(34) + 'BACKENDS',
    'default' + sp(6) + 'web' + sp(3) + 'http' + sp(5) + 'TCP' + sp(4) +
      'ClusterIP 10.96.0.10:80, NodePort *:30080' + sp(2) +
      '10.244.2.4:8080 (serving-terminating, local), 10.244.1.2:8080, 10.244.1.3:8080 (local)',
    'default' + sp(6) + 'web' + sp(3) + 'metrics' + sp(2) + 'TCP' + sp(4) + 'ClusterIP 10.96.0.10:9090' + sp(18) + 'none (connections refused)',
    'kube-system' + sp(2) + 'ext' + sp(3) + '-' + sp(8) + '-' + sp(6) + '-' + sp(42) + 'not programmed: ExternalName',
  ]);
  assert.match(text.split('\n')[3]!, /none \(connections refused\)$/);
});

test('formatListing says when NodePorts answer on no address, and says nothing of NodePorts when there are none', () => {
  const { tables } = compile({ ...model(), nodeAddresses: [] }, { services: new Map(), backends: new Map() });
  assert.equal(formatListing(listServicePorts(tables), []).split('\n')[0], 'NodePorts (*) answer on: no address');
  const withoutNodePorts = listServicePorts(tables).filter((l) => !l.frontends.some((f) => f.kind === 'NodePort'));
  assert.match(formatListing(withoutNodePorts, []).split('\n')[0]!, /^NAMESPACE/);
  assert.match(formatListing(withoutNodePorts, ['172.18.0.2']).split('\n')[0]!, /^NodePorts \(\*\) answer on: 172\.18\.0\.2$/);
});
