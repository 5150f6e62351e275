import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compile } from '../../src/compile/compile.js';
import { emptyTables, type Tables } from '../../src/contract/tables.js';
import { formatListing, listServicePorts, type ListedServicePort } from '../../src/inspect/listing.js';
import type { Model } from '../../src/model/types.js';

/** Ports given in an order unlike the listing's; frontends and backends too. */
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
          { kind: 'NodePort', address: '192.168.1.10', port: 30080 },
          { kind: 'ClusterIP', address: '10.96.0.10', port: 80 },
        ],
        // not in backend-ID order: slot order must win
        backends: [
          { address: '10.244.2.4', port: 8080, state: 'serving-terminating' },
          { address: '10.244.1.2', port: 8080, state: 'ready' },
          { address: '10.244.1.3', port: 8080, state: 'ready' },
        ],
      },
    ],
    ignored: [{ namespace: 'kube-system', name: 'ext', reason: 'ExternalName' }],
    rejected: [],
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
      { kind: 'NodePort', address: '192.168.1.10', port: 30080 },
    ],
    backends: [
      { address: '10.244.2.4', port: 8080, state: 'serving-terminating' },
      { address: '10.244.1.2', port: 8080, state: 'ready' },
      { address: '10.244.1.3', port: 8080, state: 'ready' },
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

test('listServicePorts reads compiled tables back into service ports', () => {
  const { tables } = compile(model(), { services: new Map(), backends: new Map() });
  assert.deepEqual(listServicePorts(tables), EXPECTED);
});

test('listServicePorts does not depend on the order entries come out of the maps', () => {
  const { tables } = compile(model(), { services: new Map(), backends: new Map() });
  assert.deepEqual(listServicePorts(reversed(tables)), EXPECTED);
});

test('listServicePorts: UDP, every frontend kind, every ignore reason', () => {
  const m: Model = {
    servicePorts: [
      {
        ref: { namespace: 'kube-system', name: 'kube-dns', portName: 'dns', protocol: 'UDP' },
        frontends: [
          { kind: 'LoadBalancer', address: '203.0.113.5', port: 53 },
          { kind: 'ExternalIP', address: '198.51.100.7', port: 53 },
          { kind: 'ClusterIP', address: '10.96.0.10', port: 53 },
        ],
        backends: [{ address: '10.244.0.3', port: 53, state: 'ready' }],
      },
    ],
    ignored: [
      { namespace: 'a', name: 'db', reason: 'headless' },
      { namespace: 'a', name: 'mesh', reason: 'service-proxy-name' },
    ],
    rejected: [],
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
        { kind: 'ExternalIP', address: '198.51.100.7', port: 53 },
        { kind: 'LoadBalancer', address: '203.0.113.5', port: 53 },
      ],
      backends: [{ address: '10.244.0.3', port: 53, state: 'ready' }],
    },
  ]);
});

test('listServicePorts of empty tables is empty', () => {
  assert.deepEqual(listServicePorts(emptyTables()), []);
  assert.equal(formatListing([]), 'NAMESPACE  NAME  PORT  PROTO  FRONTENDS  BACKENDS');
});

test('formatListing: a header, one aligned line per service port', () => {
  const text = formatListing(listServicePorts(compile(model(), { services: new Map(), backends: new Map() }).tables));
  const sp = (n: number) => ' '.repeat(n);
  assert.deepEqual(text.split('\n'), [
    'NAMESPACE' + sp(4) + 'NAME' + sp(2) + 'PORT' + sp(5) + 'PROTO' + sp(2) + 'FRONTENDS' + sp(45) + 'BACKENDS',
    'default' + sp(6) + 'web' + sp(3) + 'http' + sp(5) + 'TCP' + sp(4) +
      'ClusterIP 10.96.0.10:80, NodePort 192.168.1.10:30080' + sp(2) +
      '10.244.2.4:8080 (serving-terminating), 10.244.1.2:8080, 10.244.1.3:8080',
    'default' + sp(6) + 'web' + sp(3) + 'metrics' + sp(2) + 'TCP' + sp(4) + 'ClusterIP 10.96.0.10:9090' + sp(29) + 'none (connections refused)',
    'kube-system' + sp(2) + 'ext' + sp(3) + '-' + sp(8) + '-' + sp(6) + '-' + sp(53) + 'not programmed: ExternalName',
  ]);
  assert.match(text.split('\n')[2]!, /none \(connections refused\)$/);
});
