import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildModel } from '../../src/model/build.js';
import { allocateClusterIPs, parseIPv4 } from '../../src/model/cluster-ip.js';
import { allocateNodePorts } from '../../src/model/node-port.js';
import type { ObjectSnapshot } from '../../src/k8s/types.js';
import type { Model, ModelOptions, Rejected, ServicePort } from '../../src/model/types.js';

const OPTS: ModelOptions = {
  serviceClusterIPRange: '10.96.0.0/12',
  allocateClusterIPs: false,
  nodeName: 'node-a',
  serviceNodePortRange: { min: 30000, max: 32767 },
  allocateNodePorts: false,
  nodePortAddresses: [],
};
/** Manifest mode: kpx allocates what an API server would have. */
const ALLOC: ModelOptions = { ...OPTS, allocateClusterIPs: true, allocateNodePorts: true };

// The tests feed arbitrary JSON on purpose, so the builders return `any`-shaped objects.
/* eslint-disable @typescript-eslint/no-explicit-any */
type J = any;

function svc(name: string, spec: J, extra: J = {}): J {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: extra.namespace ?? 'default', ...(extra.labels ? { labels: extra.labels } : {}) },
    spec,
    ...(extra.status ? { status: extra.status } : {}),
    origin: extra.origin ?? 'svc.yaml',
  };
}

function slice(name: string, service: string, endpoints: J, ports: J, extra: J = {}): J {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: extra.namespace ?? 'default', labels: { 'kubernetes.io/service-name': service } },
    addressType: extra.addressType ?? 'IPv4',
    endpoints,
    ports,
    origin: extra.origin ?? 'slices.yaml',
  };
}

function eps(name: string, subsets: J, extra: J = {}): J {
  return {
    apiVersion: 'v1',
    kind: 'Endpoints',
    metadata: { name, namespace: extra.namespace ?? 'default' },
    subsets,
    origin: extra.origin ?? 'eps.yaml',
  };
}

function snap(services: J[] = [], endpointSlices: J[] = [], endpoints: J[] = []): ObjectSnapshot {
  return { services, endpointSlices, endpoints } as ObjectSnapshot;
}

function ep(ip: string, conditions?: J, nodeName?: string): J {
  return { addresses: [ip], ...(conditions !== undefined ? { conditions } : {}), ...(nodeName ? { nodeName } : {}) };
}

function port(m: Model, ns: string, name: string, portName = '', protocol = 'TCP'): ServicePort {
  const p = m.servicePorts.find(
    (sp) => sp.ref.namespace === ns && sp.ref.name === name && sp.ref.portName === portName && sp.ref.protocol === protocol,
  );
  assert.ok(p, `no service port ${ns}/${name}:${portName}/${protocol} in ${JSON.stringify(m.servicePorts.map((s) => s.ref))}`);
  return p;
}

function rej(kind: string, name: string, reason: string, origin: string, namespace = 'default'): Rejected {
  return { kind, namespace, name, origin, reason };
}

test('ClusterIP Service with 3 ready endpoints via EndpointSlice, port 8222 -> endpoint port 80', () => {
  const m = buildModel(
    snap(
      [svc('web', { clusterIP: '10.96.0.10', ports: [{ port: 8222, targetPort: 80 }], selector: { app: 'web' } })],
      [
        slice(
          'web-abc',
          'web',
          [ep('10.244.1.7', { ready: true }, 'node-b'), ep('10.244.1.10', { ready: true }), ep('10.244.0.9', { ready: true }, 'node-a')],
          [{ port: 80, protocol: 'TCP' }],
        ),
      ],
    ),
    OPTS,
  );
  assert.deepEqual(m, {
    servicePorts: [
      {
        ref: { namespace: 'default', name: 'web', portName: '', protocol: 'TCP' },
        frontends: [{ kind: 'ClusterIP', address: '10.96.0.10', port: 8222 }],
        backends: [
          { address: '10.244.0.9', port: 80, state: 'ready', nodeName: 'node-a', local: true },
          { address: '10.244.1.7', port: 80, state: 'ready', nodeName: 'node-b', local: false },
          { address: '10.244.1.10', port: 80, state: 'ready', local: false },
        ],
      },
    ],
    ignored: [],
    rejected: [],
    healthChecks: [],
    nodeAddresses: [],
  });
});

test('multi-port selectorless Service with manual Endpoints maps ports by name', () => {
  const m = buildModel(
    snap(
      [
        svc('legacy', {
          clusterIP: '10.96.5.5',
          ports: [
            { name: 'http', port: 7064 },
            { name: 'admin', port: 7164 },
          ],
        }),
      ],
      [],
      [
        eps('legacy', [
          {
            addresses: [{ ip: '192.168.1.20' }, { ip: '192.168.1.3' }],
            ports: [
              { name: 'admin', port: 31337 },
              { name: 'http', port: 31496 },
            ],
          },
        ]),
      ],
    ),
    OPTS,
  );
  assert.deepEqual(m.rejected, []);
  assert.equal(m.servicePorts.length, 2);
  // Sorted by port name: admin before http.
  assert.deepEqual(
    m.servicePorts.map((p) => p.ref.portName),
    ['admin', 'http'],
  );
  assert.deepEqual(port(m, 'default', 'legacy', 'http'), {
    ref: { namespace: 'default', name: 'legacy', portName: 'http', protocol: 'TCP' },
    frontends: [{ kind: 'ClusterIP', address: '10.96.5.5', port: 7064 }],
    backends: [
      { address: '192.168.1.3', port: 31496, state: 'ready', local: false },
      { address: '192.168.1.20', port: 31496, state: 'ready', local: false },
    ],
  });
  assert.deepEqual(port(m, 'default', 'legacy', 'admin'), {
    ref: { namespace: 'default', name: 'legacy', portName: 'admin', protocol: 'TCP' },
    frontends: [{ kind: 'ClusterIP', address: '10.96.5.5', port: 7164 }],
    backends: [
      { address: '192.168.1.3', port: 31337, state: 'ready', local: false },
      { address: '192.168.1.20', port: 31337, state: 'ready', local: false },
    ],
  });
});

test('legacy Endpoints: notReadyAddresses are never used, subsets carry their own ports', () => {
  const m = buildModel(
    snap(
      [svc('s', { clusterIP: '10.96.0.2', ports: [{ name: 'a', port: 1 }, { name: 'b', port: 2 }] })],
      [],
      [
        eps('s', [
          { addresses: [{ ip: '10.0.0.1', nodeName: 'n1' }], notReadyAddresses: [{ ip: '10.0.0.2' }], ports: [{ name: 'a', port: 100 }] },
          { addresses: [{ ip: '10.0.0.3' }], ports: [{ name: 'b', port: 200 }] },
        ]),
      ],
    ),
    OPTS,
  );
  assert.deepEqual(port(m, 'default', 's', 'a').backends, [{ address: '10.0.0.1', port: 100, state: 'ready', nodeName: 'n1', local: false }]);
  assert.deepEqual(port(m, 'default', 's', 'b').backends, [{ address: '10.0.0.3', port: 200, state: 'ready', local: false }]);
});

test('UDP Service matches only UDP endpoint ports', () => {
  const m = buildModel(
    snap(
      [svc('dns', { clusterIP: '10.96.0.10', ports: [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53, protocol: 'TCP' }] }, { namespace: 'kube-system' })],
      [
        slice(
          'dns-1',
          'dns',
          [ep('10.244.0.2')],
          [
            { name: 'dns', port: 5353, protocol: 'UDP' },
            { name: 'dns-tcp', port: 5354, protocol: 'TCP' },
            // Same name as the UDP port but TCP: must not be picked for the UDP port.
            { name: 'dns', port: 9999, protocol: 'TCP' },
          ],
          { namespace: 'kube-system' },
        ),
      ],
    ),
    OPTS,
  );
  assert.deepEqual(m.rejected, []);
  assert.deepEqual(port(m, 'kube-system', 'dns', 'dns', 'UDP'), {
    ref: { namespace: 'kube-system', name: 'dns', portName: 'dns', protocol: 'UDP' },
    frontends: [{ kind: 'ClusterIP', address: '10.96.0.10', port: 53 }],
    backends: [{ address: '10.244.0.2', port: 5353, state: 'ready', local: false }],
  });
  assert.deepEqual(port(m, 'kube-system', 'dns', 'dns-tcp', 'TCP').backends, [{ address: '10.244.0.2', port: 5354, state: 'ready', local: false }]);
  assert.equal(m.servicePorts.length, 2);
});

test('EndpointSlices win over Endpoints', () => {
  const m = buildModel(
    snap(
      [svc('web', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] })],
      [slice('web-1', 'web', [ep('10.1.0.1')], [{ port: 8080 }])],
      [eps('web', [{ addresses: [{ ip: '10.2.0.2' }], ports: [{ port: 9090 }] }])],
    ),
    OPTS,
  );
  assert.deepEqual(m.rejected, []);
  assert.deepEqual(port(m, 'default', 'web').backends, [{ address: '10.1.0.1', port: 8080, state: 'ready', local: false }]);
});

test('an EndpointSlice with no endpoints still hides the Endpoints object', () => {
  const m = buildModel(
    snap(
      [svc('web', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] })],
      [slice('web-1', 'web', [], [{ port: 8080 }])],
      [eps('web', [{ addresses: [{ ip: '10.2.0.2' }], ports: [{ port: 9090 }] }])],
    ),
    OPTS,
  );
  assert.deepEqual(port(m, 'default', 'web').backends, []);
});

test('two slices are merged and a duplicate endpoint counts once (ready beats serving-terminating)', () => {
  const m = buildModel(
    snap(
      [svc('web', { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] })],
      [
        slice('web-a', 'web', [ep('10.0.0.1'), ep('10.0.0.2', { ready: false, serving: true, terminating: true })], [{ name: 'http', port: 8080 }]),
        slice('web-b', 'web', [ep('10.0.0.3'), ep('10.0.0.2', { ready: true })], [{ name: 'http', port: 8080 }]),
        slice('web-c', 'web', [ep('10.0.0.1')], [{ name: 'http', port: 8080 }]),
      ],
    ),
    OPTS,
  );
  assert.deepEqual(port(m, 'default', 'web', 'http').backends, [
    { address: '10.0.0.1', port: 8080, state: 'ready', local: false },
    { address: '10.0.0.2', port: 8080, state: 'ready', local: false },
    { address: '10.0.0.3', port: 8080, state: 'ready', local: false },
  ]);
});

test('ready missing or null means ready', () => {
  const m = buildModel(
    snap(
      [svc('web', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] })],
      [slice('web-a', 'web', [ep('10.0.0.1'), ep('10.0.0.2', {}), ep('10.0.0.3', { ready: null }), ep('10.0.0.4', { ready: false })], [{ port: 80 }])],
    ),
    OPTS,
  );
  assert.deepEqual(
    port(m, 'default', 'web').backends.map((b) => `${b.address}/${b.state}`),
    ['10.0.0.1/ready', '10.0.0.2/ready', '10.0.0.3/ready'],
  );
});

test('terminating fallback: only when no endpoint is ready, serving+terminating ones are used', () => {
  const endpoints = [
    ep('10.0.0.5', { ready: false, serving: true, terminating: true }),
    ep('10.0.0.6', { ready: false, serving: false, terminating: true }),
    ep('10.0.0.7', { ready: false, serving: true, terminating: false }),
    ep('10.0.0.4', { ready: false, serving: true, terminating: true }),
  ];
  const m = buildModel(snap([svc('web', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] })], [slice('web-a', 'web', endpoints, [{ port: 80 }])]), OPTS);
  assert.deepEqual(port(m, 'default', 'web').backends, [
    { address: '10.0.0.4', port: 80, state: 'serving-terminating', local: false },
    { address: '10.0.0.5', port: 80, state: 'serving-terminating', local: false },
  ]);
  // With one ready endpoint, the terminating ones are not used.
  const m2 = buildModel(
    snap([svc('web', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] })], [slice('web-a', 'web', [...endpoints, ep('10.0.0.9')], [{ port: 80 }])]),
    OPTS,
  );
  assert.deepEqual(port(m2, 'default', 'web').backends, [{ address: '10.0.0.9', port: 80, state: 'ready', local: false }]);
  // They drain instead: no new flow, but the flows they have stay (kube-proxy clears those of endpoints that stop serving).
  assert.deepEqual(port(m2, 'default', 'web').draining, [
    { address: '10.0.0.4', port: 80, state: 'serving-terminating', local: false },
    { address: '10.0.0.5', port: 80, state: 'serving-terminating', local: false },
  ]);
  assert.equal('draining' in port(m, 'default', 'web'), false, 'nothing drains while the terminating endpoints take the new flows');
});

test('draining: backends and draining endpoints together stay within a port\'s 65,535 slots (slot numbers are 16 bits)', () => {
  const address = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  const endpoints = [
    ...Array.from({ length: 65534 }, (_, i) => ep(address(i + 1))),
    ...[0x20001, 0x20002, 0x20003].map((i) => ep(address(i), { ready: false, serving: true, terminating: true })),
  ];
  const m = buildModel(snap([svc('web', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] })], [slice('web-a', 'web', endpoints, [{ port: 80 }])]), OPTS);
  const web = port(m, 'default', 'web');
  assert.equal(web.backends.length, 65534);
  assert.deepEqual(web.draining?.map((b) => b.address), ['10.2.0.1']);
});

test('draining: an endpoint listed ready in one slice and terminating in another is a backend, not draining; across slices, in address order', () => {
  const terminating = { ready: false, serving: true, terminating: true };
  const m = buildModel(
    snap(
      [svc('web', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] })],
      [
        slice('web-b', 'web', [ep('10.0.0.8', terminating), ep('10.0.0.2', terminating)], [{ port: 80 }]),
        slice('web-a', 'web', [ep('10.0.0.2'), ep('10.0.0.3', terminating)], [{ port: 80 }]),
      ],
    ),
    OPTS,
  );
  const web = port(m, 'default', 'web');
  assert.deepEqual(web.backends.map((b) => b.address), ['10.0.0.2']);
  assert.deepEqual(web.draining?.map((b) => `${b.address}/${b.state}`), ['10.0.0.3/serving-terminating', '10.0.0.8/serving-terminating']);
});

test('no ready endpoint -> empty backends; unmatched port name -> empty backends', () => {
  const m = buildModel(
    snap(
      [
        svc('a', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] }),
        svc('b', { clusterIP: '10.96.0.11', ports: [{ name: 'http', port: 80 }] }),
        svc('c', { clusterIP: '10.96.0.12', ports: [{ port: 80 }] }),
      ],
      [
        slice('a-1', 'a', [ep('10.0.0.1', { ready: false }), ep('10.0.0.2', { ready: false, serving: false, terminating: true })], [{ port: 80 }]),
        slice('b-1', 'b', [ep('10.0.0.3')], [{ name: 'web', port: 80 }]),
      ],
    ),
    OPTS,
  );
  assert.deepEqual(port(m, 'default', 'a').backends, []);
  assert.deepEqual(port(m, 'default', 'b', 'http').backends, []);
  assert.deepEqual(port(m, 'default', 'c').backends, []);
  assert.deepEqual(m.rejected, []);
});

test('ExternalName, headless and proxy-name label are ignored with the right reason', () => {
  const m = buildModel(
    snap([
      svc('ext', { type: 'ExternalName', externalName: 'example.com' }),
      svc('hl', { clusterIP: 'None', ports: [{ port: 80 }] }),
      svc('hl-label', { clusterIP: '10.96.0.20', ports: [{ port: 80 }] }, { labels: { 'service.kubernetes.io/headless': '' } }),
      svc('other-proxy', { clusterIP: '10.96.0.21', ports: [{ port: 80 }] }, { labels: { 'service.kubernetes.io/service-proxy-name': 'foo' } }),
      svc('ok', { clusterIP: '10.96.0.22', ports: [{ port: 80 }] }),
    ], [slice('hl-1', 'hl', [ep('10.0.0.1')], [{ port: 80 }])]),
    OPTS,
  );
  assert.deepEqual(m.ignored, [
    { namespace: 'default', name: 'ext', reason: 'ExternalName' },
    { namespace: 'default', name: 'hl', reason: 'headless' },
    { namespace: 'default', name: 'hl-label', reason: 'headless' },
    { namespace: 'default', name: 'other-proxy', reason: 'service-proxy-name' },
  ]);
  assert.deepEqual(m.rejected, []);
  assert.deepEqual(m.servicePorts.map((p) => p.ref.name), ['ok']);
});

test('frontends in order ClusterIP, NodePort, ExternalIP, LoadBalancer; ipMode Proxy skipped', () => {
  const m = buildModel(
    snap([
      svc(
        'lb',
        {
          type: 'LoadBalancer',
          clusterIP: '10.96.0.30',
          externalIPs: ['203.0.113.9', 'not-an-ip', '203.0.113.1', '2001:db8::1', '203.0.113.9'],
          ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30080 }],
        },
        {
          status: {
            loadBalancer: {
              ingress: [{ ip: '198.51.100.7' }, { ip: '198.51.100.8', ipMode: 'Proxy' }, { hostname: 'lb.example.com' }, { ip: '198.51.100.2', ipMode: 'VIP' }, { ip: '198.51.100.3', ipMode: 'Magic' }],
            },
          },
        },
      ),
      svc('np', { type: 'NodePort', clusterIP: '10.96.0.31', ports: [{ port: 81, nodePort: 30081 }] }, { status: { loadBalancer: { ingress: [{ ip: '198.51.100.9' }] } } }),
    ]),
    OPTS,
  );
  assert.deepEqual(port(m, 'default', 'lb', 'http').frontends, [
    { kind: 'ClusterIP', address: '10.96.0.30', port: 80 },
    { kind: 'NodePort', address: '0.0.0.0', port: 30080 },
    { kind: 'ExternalIP', address: '203.0.113.9', port: 80 },
    { kind: 'ExternalIP', address: '203.0.113.1', port: 80 },
    { kind: 'LoadBalancer', address: '198.51.100.7', port: 80 },
    { kind: 'LoadBalancer', address: '198.51.100.2', port: 80 },
  ]);
  // Status on a non-LoadBalancer Service is not used.
  assert.deepEqual(port(m, 'default', 'np').frontends, [
    { kind: 'ClusterIP', address: '10.96.0.31', port: 81 },
    { kind: 'NodePort', address: '0.0.0.0', port: 30081 },
  ]);
  assert.deepEqual(m.rejected, [
    rej('Service', 'lb', 'spec.externalIPs[1]: invalid IPv4 address "not-an-ip"', 'svc.yaml'),
    rej('Service', 'lb', 'spec.externalIPs[3] "2001:db8::1": IPv6 not supported yet', 'svc.yaml'),
    rej('Service', 'lb', 'status.loadBalancer.ingress[4]: unsupported ipMode "Magic"', 'svc.yaml'),
  ]);
});

test('bad inputs are rejected with reasons naming the object; other Services still come out', () => {
  const good = svc('good', { clusterIP: '10.96.0.100', ports: [{ port: 80 }] });
  const goodSlice = slice('good-1', 'good', [ep('10.0.0.1')], [{ port: 8080 }]);
  const m = buildModel(
    snap(
      [
        good,
        svc('bad-ip', { clusterIP: '10.96.0.300', ports: [{ port: 80 }] }),
        svc('v6', { clusterIP: 'fd00::10', ports: [{ port: 80 }] }),
        svc('bad-type', { type: 'Weird', clusterIP: '10.96.0.101', ports: [{ port: 80 }] }),
        svc('ports-not-list', { clusterIP: '10.96.0.102', ports: { port: 80 } }),
        svc('mixed', {
          clusterIP: '10.96.0.103',
          ports: [
            { name: 'ok', port: 80 },
            { name: 'sctp', port: 81, protocol: 'SCTP' },
            { name: 'str', port: '82' },
            { name: 'big', port: 70000 },
            { name: 'ok', port: 83 },
            { port: 84 },
            { name: 'tp', port: 85, targetPort: 0 },
            { name: 'np', port: 86, nodePort: 99999 },
          ],
        }),
        { apiVersion: 'v1', kind: 'Service', metadata: { namespace: 'default' }, spec: { ports: [{ port: 1 }] }, origin: 'noname.yaml' },
        'not an object',
        { metadata: 'x', origin: 'weird.yaml' },
        svc('no-ip', { ports: [{ port: 80 }] }),
      ],
      [
        goodSlice,
        slice('bad-ep', 'good', [ep('10.0.0.999'), ep('10.0.0.2', { ready: 'yes' }), ep('10.0.0.3')], [{ port: 0 }, { name: 'x', port: 8081 }]),
        slice('fqdn', 'good', [{ addresses: ['db.example.com'] }], [{ port: 80 }], { addressType: 'FQDN' }),
        slice('v6-slice', 'good', [ep('fd00::1')], [{ port: 8080 }], { addressType: 'IPv6' }),
        slice('orphan-slice', 'missing', [ep('10.0.0.4')], [{ port: 80 }]),
        { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'unlabelled' }, addressType: 'IPv4', origin: 'slices.yaml' },
      ],
      [eps('orphan', [{ addresses: [{ ip: '10.0.0.5' }], ports: [{ port: 80 }] }])],
    ),
    OPTS,
  );
  assert.deepEqual(m.servicePorts, [
    {
      ref: { namespace: 'default', name: 'good', portName: '', protocol: 'TCP' },
      frontends: [{ kind: 'ClusterIP', address: '10.96.0.100', port: 80 }],
      backends: [{ address: '10.0.0.1', port: 8080, state: 'ready', local: false }],
    },
    {
      ref: { namespace: 'default', name: 'mixed', portName: 'ok', protocol: 'TCP' },
      frontends: [{ kind: 'ClusterIP', address: '10.96.0.103', port: 80 }],
      backends: [],
    },
  ]);
  assert.deepEqual(m.rejected, [
    rej('EndpointSlice', 'bad-ep', 'endpoints[0]: invalid IPv4 address "10.0.0.999"', 'slices.yaml'),
    rej('EndpointSlice', 'bad-ep', 'endpoints[1] 10.0.0.2: conditions must be booleans', 'slices.yaml'),
    rej('EndpointSlice', 'bad-ep', 'ports[0]: invalid port 0 (want an integer 1..65535)', 'slices.yaml'),
    rej('EndpointSlice', 'fqdn', 'unsupported addressType "FQDN"', 'slices.yaml'),
    rej('EndpointSlice', 'orphan-slice', 'no Service default/missing', 'slices.yaml'),
    rej('EndpointSlice', 'unlabelled', 'missing label kubernetes.io/service-name', 'slices.yaml'),
    rej('Endpoints', 'orphan', 'no Service default/orphan', 'eps.yaml'),
    rej('Service', '', 'Service is not an object', '', ''),
    rej('Service', '', 'metadata is not an object', 'weird.yaml', ''),
    rej('Service', '', 'missing metadata.name', 'noname.yaml'),
    rej('Service', 'bad-ip', 'invalid spec.clusterIP "10.96.0.300"', 'svc.yaml'),
    rej('Service', 'bad-type', 'unsupported spec.type "Weird"', 'svc.yaml'),
    rej('Service', 'mixed', 'spec.ports[1] "sctp": protocol SCTP not supported', 'svc.yaml'),
    rej('Service', 'mixed', 'spec.ports[2] "str": invalid port "82" (want an integer 1..65535)', 'svc.yaml'),
    rej('Service', 'mixed', 'spec.ports[3] "big": invalid port 70000 (want an integer 1..65535)', 'svc.yaml'),
    rej('Service', 'mixed', 'spec.ports[4] "ok": duplicate port name (also spec.ports[0])', 'svc.yaml'),
    rej('Service', 'mixed', 'spec.ports[5]: a Service with more than one port must name each port', 'svc.yaml'),
    rej('Service', 'mixed', 'spec.ports[6] "tp": invalid targetPort 0 (want an integer 1..65535 or a port name)', 'svc.yaml'),
    rej('Service', 'mixed', 'spec.ports[7] "np": invalid nodePort 99999 (want an integer 1..65535)', 'svc.yaml'),
    rej('Service', 'no-ip', 'spec.clusterIP is missing', 'svc.yaml'),
    rej('Service', 'ports-not-list', 'spec.ports is not a list', 'svc.yaml'),
    rej('Service', 'v6', 'IPv6 not supported yet', 'svc.yaml'),
  ]);
});

test('a port with a non-numeric port in a single-port Service rejects just that port', () => {
  const m = buildModel(snap([svc('s', { clusterIP: '10.96.0.2', ports: [{ port: 'http' }] }), svc('t', { clusterIP: '10.96.0.3', ports: [{ port: 80 }] })]), OPTS);
  assert.deepEqual(m.servicePorts.map((p) => p.ref.name), ['t']);
  assert.deepEqual(m.rejected, [rej('Service', 's', 'spec.ports[0]: invalid port "http" (want an integer 1..65535)', 'svc.yaml')]);
});

test('Endpoints with bad address or port: that entry rejected, the rest kept', () => {
  const m = buildModel(
    snap(
      [svc('legacy', { clusterIP: '10.96.0.2', ports: [{ port: 80 }] })],
      [],
      [eps('legacy', [{ addresses: [{ ip: '1.2.3' }, { ip: '10.0.0.1' }], ports: [{ port: 80 }, { port: 65536 }] }])],
    ),
    OPTS,
  );
  assert.deepEqual(port(m, 'default', 'legacy').backends, [{ address: '10.0.0.1', port: 80, state: 'ready', local: false }]);
  assert.deepEqual(m.rejected, [
    rej('Endpoints', 'legacy', 'subsets[0].addresses[0]: invalid IPv4 address "1.2.3"', 'eps.yaml'),
    rej('Endpoints', 'legacy', 'subsets[0].ports[1]: invalid port 65536 (want an integer 1..65535)', 'eps.yaml'),
  ]);
});

test('garbage snapshot fields never throw', () => {
  const m = buildModel({ services: 'x', endpoints: null, endpointSlices: [null, 3, []] } as unknown as ObjectSnapshot, OPTS);
  assert.deepEqual(m.servicePorts, []);
  assert.equal(m.rejected.length, 3);
  assert.ok(m.rejected.every((r) => r.kind === 'EndpointSlice' && r.reason === 'EndpointSlice is not an object'));
  const m2 = buildModel(
    snap([
      svc('a', null),
      svc('b', 'str'),
      svc('c', { clusterIP: 12, ports: [{ port: 80 }] }),
      svc('d', { clusterIP: '10.96.0.4', ports: [null, { port: 80, protocol: 6 }] }),
      svc('e', { clusterIP: '10.96.0.5', type: 7, ports: [] }),
      svc('f', { clusterIP: '10.96.0.6', ports: [{ port: 80 }], externalIPs: '1.2.3.4' }, { status: 'nope' }),
    ]),
    OPTS,
  );
  assert.deepEqual(m2.rejected.map((r) => `${r.name}: ${r.reason}`), [
    'a: spec.ports is missing',
    'b: spec is not an object',
    'c: invalid spec.clusterIP 12',
    'd: spec.ports[0] is not an object',
    'd: spec.ports[1]: protocol is not a string: 6',
    'e: spec.type is not a string: 7',
    'f: spec.externalIPs is not a list',
  ]);
  assert.deepEqual(m2.servicePorts.map((p) => p.ref.name), ['f']);
});

test('namespace defaults to "default"; same name in two namespaces are distinct', () => {
  const s1 = svc('web', { clusterIP: '10.96.0.2', ports: [{ port: 80 }] });
  delete s1.metadata.namespace;
  const s2 = svc('web', { clusterIP: '10.96.0.3', ports: [{ port: 80 }] }, { namespace: 'prod' });
  const sl = slice('web-1', 'web', [ep('10.0.0.1')], [{ port: 80 }]);
  delete sl.metadata.namespace;
  const m = buildModel(snap([s2, s1], [sl]), OPTS);
  assert.deepEqual(
    m.servicePorts.map((p) => [p.ref.namespace, p.ref.name, p.backends.length]),
    [
      ['default', 'web', 1],
      ['prod', 'web', 0],
    ],
  );
});

test('duplicate Service definitions: first by origin wins, the other is rejected', () => {
  const m = buildModel(
    snap([
      svc('web', { clusterIP: '10.96.0.3', ports: [{ port: 80 }] }, { origin: 'b.yaml' }),
      svc('web', { clusterIP: '10.96.0.2', ports: [{ port: 80 }] }, { origin: 'a.yaml' }),
      svc('zzz', { clusterIP: '10.96.0.2', ports: [{ port: 81 }] }, { origin: 'c.yaml' }),
    ]),
    OPTS,
  );
  assert.deepEqual(m.servicePorts.map((p) => [p.ref.name, p.frontends[0]!.address]), [['web', '10.96.0.2']]);
  assert.deepEqual(m.rejected, [
    rej('Service', 'web', 'duplicate Service default/web (first defined in a.yaml)', 'b.yaml'),
    rej('Service', 'zzz', 'spec.clusterIP 10.96.0.2 is already used by Service default/web', 'c.yaml'),
  ]);
});

test('ClusterIP allocation: deterministic, in range, avoids explicit IPs, stable when Services are added', () => {
  const base = [
    svc('web', { ports: [{ port: 80 }] }),
    svc('api', { ports: [{ port: 443 }] }, { namespace: 'prod' }),
    svc('fixed', { clusterIP: '10.96.0.50', ports: [{ port: 80 }] }),
  ];
  const m1 = buildModel(snap(base), ALLOC);
  assert.deepEqual(m1.rejected, []);
  const ipOf = (m: Model, ns: string, name: string): string => port(m, ns, name).frontends[0]!.address;
  const web = ipOf(m1, 'default', 'web');
  const api = ipOf(m1, 'prod', 'api');
  const expected = allocateClusterIPs('10.96.0.0/12', ['default/web', 'prod/api'], ['10.96.0.50']).allocated;
  assert.equal(web, expected.get('default/web'));
  assert.equal(api, expected.get('prod/api'));
  for (const ip of [web, api]) {
    const n = parseIPv4(ip)!;
    assert.ok(n >= parseIPv4('10.96.0.2')! && n <= parseIPv4('10.111.255.254')!, ip);
  }
  assert.equal(ipOf(m1, 'default', 'fixed'), '10.96.0.50');
  // Adding Services (with and without explicit IPs) does not move existing allocations.
  const more = [...base, svc('zzz', { ports: [{ port: 1 }] }), svc('aaa', { ports: [{ port: 2 }] }, { namespace: 'a' }), svc('x', { clusterIP: '10.96.0.51', ports: [{ port: 3 }] })];
  const m2 = buildModel(snap(more), ALLOC);
  assert.equal(ipOf(m2, 'default', 'web'), web);
  assert.equal(ipOf(m2, 'prod', 'api'), api);
  // An explicit IP sitting exactly on web's hash slot pushes web to the next address.
  const m3 = buildModel(snap([...base, svc('squatter', { clusterIP: web, ports: [{ port: 9 }] })]), ALLOC);
  assert.equal(ipOf(m3, 'default', 'squatter'), web);
  const moved = ipOf(m3, 'default', 'web');
  assert.notEqual(moved, web);
  assert.equal(parseIPv4(moved), parseIPv4(web)! + 1);
  assert.deepEqual(m3.rejected, []);
});

test('ClusterIP allocation never uses .0, .1 or broadcast of a tiny range', () => {
  const services = [svc('a', { ports: [{ port: 1 }] }), svc('b', { ports: [{ port: 1 }] }), svc('c', { ports: [{ port: 1 }] })];
  const m = buildModel(snap(services), { ...ALLOC, serviceClusterIPRange: '10.0.0.0/29' });
  assert.deepEqual(m.rejected, []);
  const ips = m.servicePorts.map((p) => p.frontends[0]!.address).sort();
  for (const ip of ips) assert.ok(['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6'].includes(ip), ip);
  assert.equal(new Set(ips).size, 3);
  // Exhausted range: the ones that do not fit are rejected with a reason.
  const six = ['a', 'b', 'c', 'd', 'e', 'f'].map((n) => svc(n, { ports: [{ port: 1 }] }));
  const full = buildModel(snap(six), { ...ALLOC, serviceClusterIPRange: '10.0.0.0/29' });
  assert.equal(full.servicePorts.length, 5);
  assert.equal(full.rejected.length, 1);
  assert.match(full.rejected[0]!.reason, /range 10\.0\.0\.0\/29 is full/);
});

function shuffle<T>(xs: T[], seed: number): T[] {
  const out = [...xs];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

test('input-order independence: shuffled input gives the same model', () => {
  const services = [
    svc('web', { ports: [{ name: 'http', port: 80 }, { name: 'https', port: 443 }] }),
    svc('api', { ports: [{ port: 8080 }] }, { namespace: 'prod' }),
    svc('dns', { clusterIP: '10.96.0.10', ports: [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53 }] }, { namespace: 'kube-system' }),
    svc('ext', { type: 'ExternalName', externalName: 'x' }),
    svc('bad', { clusterIP: 'nope', ports: [{ port: 80 }] }),
    svc('web', { ports: [{ port: 1 }] }, { origin: 'zdup.yaml' }),
    // Same identity and origin, different content: the tie is broken by content, not input order.
    svc('tie', { clusterIP: '10.96.1.2', ports: [{ port: 2 }] }, { origin: 't.yaml' }),
    svc('tie', { clusterIP: '10.96.1.1', ports: [{ port: 1 }] }, { origin: 't.yaml' }),
    { kind: 'Service', metadata: {}, origin: 'a.yaml' },
    { kind: 'Service', metadata: {}, origin: 'b.yaml' },
  ];
  const slices = [
    slice('web-1', 'web', [ep('10.0.0.3'), ep('10.0.0.1')], [{ name: 'http', port: 8080 }, { name: 'https', port: 8443 }]),
    slice('web-2', 'web', [ep('10.0.0.2'), ep('10.0.0.1', { ready: false, serving: true, terminating: true })], [{ name: 'http', port: 8080 }]),
    slice('dns-1', 'dns', [ep('10.0.1.1')], [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53 }], { namespace: 'kube-system' }),
    slice('orphan', 'nobody', [ep('10.0.0.9')], [{ port: 1 }]),
  ];
  const endpoints = [eps('api', [{ addresses: [{ ip: '10.0.2.2' }, { ip: '10.0.2.1' }], ports: [{ port: 8080 }] }], { namespace: 'prod' }), eps('ghost', [])];
  const reference = buildModel(snap(services, slices, endpoints), ALLOC);
  assert.equal(reference.servicePorts.length, 6);
  assert.equal(reference.rejected.length, 7);
  assert.deepEqual(port(reference, 'default', 'tie').frontends, [{ kind: 'ClusterIP', address: '10.96.1.1', port: 1 }]);
  for (let seed = 1; seed <= 20; seed++) {
    const m = buildModel(snap(shuffle(services, seed), shuffle(slices, seed * 7), shuffle(endpoints, seed * 13)), ALLOC);
    assert.deepEqual(m, reference, `seed ${seed}`);
  }
});

test('buildModel does not mutate its input', () => {
  const input = snap([svc('web', { ports: [{ port: 80 }] })], [slice('web-1', 'web', [ep('10.0.0.1')], [{ port: 80 }])]);
  const before = JSON.stringify(input);
  buildModel(input, ALLOC);
  assert.equal(JSON.stringify(input), before);
});

test('two Services on the same externalIP:port: the first keeps it, the second is told why and keeps its ClusterIP', () => {
  const m = buildModel(
    snap([
      svc('alpha', { clusterIP: '10.96.0.1', externalIPs: ['192.0.2.50'], ports: [{ port: 80 }] }),
      svc('beta', { clusterIP: '10.96.0.2', externalIPs: ['192.0.2.50'], ports: [{ port: 80 }] }),
      svc('gamma', { clusterIP: '10.96.0.3', externalIPs: ['192.0.2.50'], ports: [{ port: 80, protocol: 'UDP' }] }),
    ]),
    OPTS,
  );
  assert.deepEqual(port(m, 'default', 'alpha').frontends.map((f) => `${f.kind} ${f.address}`), ['ClusterIP 10.96.0.1', 'ExternalIP 192.0.2.50']);
  assert.deepEqual(port(m, 'default', 'beta').frontends.map((f) => `${f.kind} ${f.address}`), ['ClusterIP 10.96.0.2']);
  assert.equal(port(m, 'default', 'gamma', '', 'UDP').frontends.length, 2, 'another protocol is another frontend');
  assert.deepEqual(m.rejected, [rej('Service', 'beta', 'ExternalIP 192.0.2.50:80/TCP is already served by Service default/alpha', 'svc.yaml')]);
});

test('nodePorts as an API server has set them: which ports get a NodePort frontend, and why not', () => {
  const cases: Array<{ name: string; spec: J; nodePorts: Record<string, number | null>; rejected: string[] }> = [
    { name: 'NodePort', spec: { type: 'NodePort', ports: [{ port: 80, nodePort: 30080 }] }, nodePorts: { '/TCP': 30080 }, rejected: [] },
    {
      name: 'LoadBalancer, TCP and UDP twins on one nodePort',
      spec: {
        type: 'LoadBalancer',
        ports: [
          { name: 'dns', port: 53, protocol: 'UDP', nodePort: 30053 },
          { name: 'dns-tcp', port: 53, nodePort: 30053 },
        ],
      },
      nodePorts: { 'dns/UDP': 30053, 'dns-tcp/TCP': 30053 },
      rejected: [],
    },
    {
      name: 'LoadBalancer without nodePorts, as allocateLoadBalancerNodePorts: false allows',
      spec: { type: 'LoadBalancer', allocateLoadBalancerNodePorts: false, ports: [{ name: 'a', port: 80 }, { name: 'b', port: 81, nodePort: 30081 }] },
      nodePorts: { 'a/TCP': null, 'b/TCP': 30081 },
      rejected: [],
    },
    {
      name: 'allocateLoadBalancerNodePorts not a boolean counts as true',
      spec: { type: 'LoadBalancer', allocateLoadBalancerNodePorts: 'no', ports: [{ port: 80 }] },
      nodePorts: { '/TCP': null },
      rejected: ['spec.allocateLoadBalancerNodePorts is not a boolean: "no"', 'spec.ports[0]: nodePort is missing'],
    },
    {
      name: 'ClusterIP with a nodePort',
      spec: { ports: [{ name: 'http', port: 80, nodePort: 30080 }] },
      nodePorts: { 'http/TCP': null },
      rejected: ['spec.ports[0] "http": nodePort 30080 is set but spec.type is ClusterIP'],
    },
    {
      name: 'NodePort without nodePorts (0 is not set)',
      spec: { type: 'NodePort', ports: [{ name: 'a', port: 80 }, { name: 'b', port: 81, nodePort: 0 }] },
      nodePorts: { 'a/TCP': null, 'b/TCP': null },
      rejected: ['spec.ports[0] "a": nodePort is missing', 'spec.ports[1] "b": nodePort is missing'],
    },
    {
      name: 'the same nodePort twice for one protocol',
      spec: { type: 'NodePort', ports: [{ name: 'a', port: 80, nodePort: 30080 }, { name: 'b', port: 81, nodePort: 30080 }] },
      nodePorts: { 'a/TCP': 30080, 'b/TCP': null },
      rejected: ['spec.ports[1] "b": duplicate nodePort 30080/TCP (also spec.ports[0])'],
    },
  ];
  for (const c of cases) {
    const m = buildModel(snap([svc('s', { clusterIP: '10.96.0.40', ...c.spec })]), OPTS);
    const got = Object.fromEntries(
      m.servicePorts.map((sp) => [`${sp.ref.portName}/${sp.ref.protocol}`, sp.frontends.find((f) => f.kind === 'NodePort')?.port ?? null]),
    );
    assert.deepEqual(got, c.nodePorts, c.name);
    for (const sp of m.servicePorts) {
      assert.deepEqual(sp.frontends[0], { kind: 'ClusterIP', address: '10.96.0.40', port: sp.frontends[0]!.port }, `${c.name}: ClusterIP first`);
      for (const f of sp.frontends.filter((f) => f.kind === 'NodePort')) assert.equal(f.address, '0.0.0.0', c.name);
    }
    assert.deepEqual(m.rejected.map((r) => r.reason), c.rejected, c.name);
  }
});

test('two Services on one nodePort: the first keeps it, the second is told why; another protocol is another NodePort', () => {
  const m = buildModel(
    snap([
      svc('alpha', { type: 'NodePort', clusterIP: '10.96.0.1', ports: [{ port: 80, nodePort: 30080 }] }),
      svc('beta', { type: 'NodePort', clusterIP: '10.96.0.2', ports: [{ port: 80, nodePort: 30080 }] }),
      svc('gamma', { type: 'NodePort', clusterIP: '10.96.0.3', ports: [{ port: 80, protocol: 'UDP', nodePort: 30080 }] }),
    ]),
    OPTS,
  );
  assert.deepEqual(port(m, 'default', 'alpha').frontends.map((f) => f.kind), ['ClusterIP', 'NodePort']);
  assert.deepEqual(port(m, 'default', 'beta').frontends.map((f) => f.kind), ['ClusterIP']);
  assert.deepEqual(port(m, 'default', 'gamma', '', 'UDP').frontends.map((f) => f.kind), ['ClusterIP', 'NodePort']);
  assert.deepEqual(m.rejected, [rej('Service', 'beta', 'NodePort *:30080/TCP is already served by Service default/alpha', 'svc.yaml')]);
});

test('0.0.0.0 means "any node address" to the dataplane, so it is no Service address', () => {
  const m = buildModel(
    snap([
      svc('cip', { clusterIP: '0.0.0.0', ports: [{ port: 80 }] }),
      svc('ext', { clusterIP: '10.96.0.5', externalIPs: ['0.0.0.0', '192.0.2.5'], ports: [{ port: 80 }] }),
      svc('lb', { type: 'LoadBalancer', clusterIP: '10.96.0.6', ports: [{ port: 80, nodePort: 30080 }] }, { status: { loadBalancer: { ingress: [{ ip: '0.0.0.0' }] } } }),
    ]),
    OPTS,
  );
  assert.deepEqual(port(m, 'default', 'ext').frontends.map((f) => f.address), ['10.96.0.5', '192.0.2.5']);
  assert.deepEqual(port(m, 'default', 'lb').frontends.map((f) => f.kind), ['ClusterIP', 'NodePort']);
  assert.deepEqual(m.rejected, [
    rej('Service', 'cip', 'spec.clusterIP 0.0.0.0: the unspecified address cannot be a Service address', 'svc.yaml'),
    rej('Service', 'ext', 'spec.externalIPs[0] 0.0.0.0: the unspecified address cannot be a Service address', 'svc.yaml'),
    rej('Service', 'lb', 'status.loadBalancer.ingress[0] 0.0.0.0: the unspecified address cannot be a Service address', 'svc.yaml'),
  ]);
});

test('nodePort allocation: deterministic, in range, avoids explicit nodePorts of any protocol, stable when Services come and go', () => {
  const nodePortOf = (m: Model, name: string, portName = '', protocol = 'TCP') =>
    port(m, 'default', name, portName, protocol).frontends.find((f) => f.kind === 'NodePort')?.port;
  const base = [
    svc('web', { type: 'NodePort', ports: [{ port: 80 }] }),
    svc('lb', { type: 'LoadBalancer', ports: [{ port: 443 }] }),
    svc('lb-none', { type: 'LoadBalancer', allocateLoadBalancerNodePorts: false, ports: [{ port: 443 }] }),
    svc('plain', { ports: [{ port: 8080 }] }),
  ];
  const m1 = buildModel(snap(base), ALLOC);
  assert.deepEqual(m1.rejected, []);
  const web = nodePortOf(m1, 'web')!;
  const lb = nodePortOf(m1, 'lb')!;
  const expected = allocateNodePorts({ min: 30000, max: 32767 }, ['default/web:80', 'default/lb:443'], []).allocated;
  assert.equal(web, expected.get('default/web:80'));
  assert.equal(lb, expected.get('default/lb:443'));
  assert.equal(nodePortOf(m1, 'lb-none'), undefined, 'a LoadBalancer that opts out gets none');
  assert.equal(nodePortOf(m1, 'plain'), undefined);

  // More Services, with and without nodePorts, do not move existing ones; removing one does not either.
  const more = [...base, svc('zzz', { type: 'NodePort', ports: [{ port: 1 }] }), svc('aaa', { type: 'NodePort', ports: [{ port: 2, nodePort: 31000 }] })];
  const m2 = buildModel(snap(more), ALLOC);
  assert.equal(nodePortOf(m2, 'web'), web);
  assert.equal(nodePortOf(m2, 'lb'), lb);
  assert.equal(nodePortOf(m2, 'aaa'), 31000);
  assert.equal(nodePortOf(buildModel(snap(more.filter((s) => s.metadata.name !== 'lb')), ALLOC), 'web'), web);

  // An explicit nodePort on web's slot, even for UDP, pushes web to the next port of the range.
  const squatter = svc('squatter', { type: 'NodePort', ports: [{ port: 9, protocol: 'UDP', nodePort: web }] });
  const m3 = buildModel(snap([...base, squatter]), ALLOC);
  assert.equal(nodePortOf(m3, 'squatter', '', 'UDP'), web);
  assert.equal(nodePortOf(m3, 'web'), web === 32767 ? 30000 : web + 1);
  assert.deepEqual(m3.rejected, []);

  for (const m of [m1, m2, m3]) {
    for (const sp of m.servicePorts) for (const f of sp.frontends) if (f.kind === 'NodePort') assert.ok(f.port >= 30000 && f.port <= 32767, `${f.port}`);
  }
});

test('nodePort allocation: TCP and UDP twins share one nodePort, an explicit one if either has it', () => {
  const dns = (ports: J[]) => svc('dns', { type: 'NodePort', ports });
  const twins = buildModel(snap([dns([{ name: 'udp', port: 53, protocol: 'UDP' }, { name: 'tcp', port: 53 }, { name: 'other', port: 54 }])]), ALLOC);
  const np = (m: Model, portName: string, protocol: string) => port(m, 'default', 'dns', portName, protocol).frontends[1]!.port;
  assert.equal(np(twins, 'udp', 'UDP'), np(twins, 'tcp', 'TCP'));
  assert.notEqual(np(twins, 'other', 'TCP'), np(twins, 'tcp', 'TCP'));
  const explicit = buildModel(snap([dns([{ name: 'udp', port: 53, protocol: 'UDP' }, { name: 'tcp', port: 53, nodePort: 30053 }])]), ALLOC);
  assert.equal(np(explicit, 'udp', 'UDP'), 30053);
  assert.deepEqual(explicit.rejected, []);
});

test('nodePort allocation: a full or invalid range is a rejection naming the range; the Service keeps its other frontends', () => {
  const four = ['a', 'b', 'c', 'd'].map((n) => svc(n, { type: 'NodePort', ports: [{ port: 80 }] }));
  const full = buildModel(snap(four), { ...ALLOC, serviceNodePortRange: { min: 30000, max: 30002 } });
  const withNodePort = full.servicePorts.filter((sp) => sp.frontends.some((f) => f.kind === 'NodePort'));
  assert.equal(withNodePort.length, 3);
  assert.deepEqual(new Set(withNodePort.map((sp) => sp.frontends[1]!.port)), new Set([30000, 30001, 30002]));
  assert.equal(full.servicePorts.length, 4, 'the one without a nodePort is still served on its ClusterIP');
  assert.deepEqual(full.rejected.map((r) => r.reason), ['spec.ports[0]: cannot allocate a nodePort: service NodePort range 30000-30002 is full']);

  const invalid = buildModel(snap(four.slice(0, 1)), { ...ALLOC, serviceNodePortRange: { min: 40000, max: 30000 } });
  assert.deepEqual(invalid.rejected.map((r) => r.reason), ['spec.ports[0]: cannot allocate a nodePort: invalid service NodePort range 40000-30000']);
});

test('nodePort allocation does not depend on input order', () => {
  const services = ['a', 'b', 'c', 'd', 'e', 'f'].map((n, i) =>
    svc(n, { type: i % 2 ? 'NodePort' : 'LoadBalancer', ports: [{ name: 'x', port: 80 }, { name: 'y', port: 81, ...(i === 3 ? { nodePort: 30001 } : {}) }] }),
  );
  const reference = buildModel(snap(services), { ...ALLOC, serviceNodePortRange: { min: 30000, max: 30015 } });
  assert.deepEqual(reference.rejected, []);
  for (let seed = 1; seed <= 10; seed++) {
    assert.deepEqual(buildModel(snap(shuffle(services, seed)), { ...ALLOC, serviceNodePortRange: { min: 30000, max: 30015 } }), reference, `seed ${seed}`);
  }
});

test('a backend is local when its endpoint runs on this node, by EndpointSlice or Endpoints nodeName', () => {
  const cases: Array<{ name: string; nodeName: string; local: Record<string, boolean> }> = [
    { name: 'node-a', nodeName: 'node-a', local: { '10.0.0.1': true, '10.0.0.2': false, '10.0.0.3': false, '10.0.1.1': true, '10.0.1.2': false } },
    { name: 'node-b', nodeName: 'node-b', local: { '10.0.0.1': false, '10.0.0.2': true, '10.0.0.3': false, '10.0.1.1': false, '10.0.1.2': false } },
    { name: 'no node name', nodeName: '', local: { '10.0.0.1': false, '10.0.0.2': false, '10.0.0.3': false, '10.0.1.1': false, '10.0.1.2': false } },
  ];
  const objects = snap(
    [svc('sliced', { clusterIP: '10.96.0.2', ports: [{ port: 80 }] }), svc('legacy', { clusterIP: '10.96.0.3', ports: [{ port: 80 }] })],
    [slice('sliced-1', 'sliced', [ep('10.0.0.1', undefined, 'node-a'), ep('10.0.0.2', undefined, 'node-b'), ep('10.0.0.3')], [{ port: 80 }])],
    [eps('legacy', [{ addresses: [{ ip: '10.0.1.1', nodeName: 'node-a' }, { ip: '10.0.1.2' }], ports: [{ port: 80 }] }])],
  );
  for (const c of cases) {
    const m = buildModel(objects, { ...OPTS, nodeName: c.nodeName });
    const got = Object.fromEntries(m.servicePorts.flatMap((sp) => sp.backends.map((b) => [b.address, b.local])));
    assert.deepEqual(got, c.local, c.name);
  }
});

test('nodeAddresses: the given node addresses, sorted numerically, once each', () => {
  const m = buildModel(snap(), { ...OPTS, nodePortAddresses: ['192.168.1.10', '10.0.0.2', '127.0.0.1', '10.0.0.2', '9.1.1.1'] });
  assert.deepEqual(m.nodeAddresses, ['9.1.1.1', '10.0.0.2', '127.0.0.1', '192.168.1.10']);
});

test('a service port with more endpoints than a frontend can count is rejected with the reason; the others are built', () => {
  // 200,000 listings (two slices of 100,000): also past what a spread argument list holds.
  const many = (first: number) => Array.from({ length: 100_000 }, (_, i) => ep(`${first}.${i >> 16}.${(i >> 8) & 255}.${i & 255}`));
  const m = buildModel(
    snap(
      [svc('huge', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] }), svc('small', { clusterIP: '10.96.0.11', ports: [{ port: 80 }] })],
      [
        slice('huge-a', 'huge', many(11), [{ port: 8080 }]),
        slice('huge-b', 'huge', many(12), [{ port: 8080 }]),
        slice('small-a', 'small', [ep('10.3.0.1')], [{ port: 8080 }]),
      ],
    ),
    OPTS,
  );
  assert.deepEqual(m.rejected, [rej('Service', 'huge', 'port TCP has 200000 endpoints, more than 65535', 'svc.yaml')]);
  assert.deepEqual(port(m, 'default', 'small').backends.map((b) => b.address), ['10.3.0.1']);
});

test('health check node port: a LoadBalancer with externalTrafficPolicy Local, with its ready endpoints on this node counted once per address', () => {
  const lb = (name: string, spec: J = {}) =>
    svc(name, { type: 'LoadBalancer', clusterIP: '10.96.0.10', externalTrafficPolicy: 'Local', healthCheckNodePort: 32001, ports: [{ name: 'a', port: 80, nodePort: 30080 }, { name: 'b', port: 81, nodePort: 30081 }], ...spec });
  const endpoints = [
    ep('10.0.0.1', undefined, 'node-a'),
    ep('10.0.0.2', { ready: false, serving: true, terminating: true }, 'node-a'),
    ep('10.0.0.3', { ready: false }, 'node-a'),
    ep('10.0.0.4', undefined, 'node-b'),
    ep('10.0.0.5'),
  ];
  const ports = [{ name: 'a', port: 8080 }, { name: 'b', port: 8081 }];
  const m = buildModel(snap([lb('web')], [slice('web-1', 'web', endpoints, ports), slice('web-2', 'web', [ep('10.0.0.1', undefined, 'node-a'), ep('10.0.0.6', undefined, 'node-a')], ports)]), OPTS);
  assert.deepEqual(m.healthChecks, [{ namespace: 'default', name: 'web', port: 32001, localEndpoints: 2 }]);
  assert.deepEqual(m.rejected, []);
  // Not a LoadBalancer, or its external traffic may leave the node: nothing to answer.
  const others = buildModel(
    snap([lb('cluster', { externalTrafficPolicy: 'Cluster' }), lb('node-port', { type: 'NodePort' }), lb('default-policy', { externalTrafficPolicy: undefined })]),
    OPTS,
  );
  assert.deepEqual(others.healthChecks, []);
});

test('health check node port: missing or invalid, one log line each and the Service is still served', () => {
  const lb = (name: string, healthCheckNodePort: J) =>
    svc(name, { type: 'LoadBalancer', clusterIP: '10.96.0.10', externalTrafficPolicy: 'Local', healthCheckNodePort, ports: [{ port: 80, nodePort: 30080 }] });
  for (const [value, reason] of [
    [undefined, "spec.healthCheckNodePort is missing: the Service is served, but its load balancer's health checks get no answer"],
    [0, "spec.healthCheckNodePort is missing: the Service is served, but its load balancer's health checks get no answer"],
    [70000, "invalid spec.healthCheckNodePort 70000 (want an integer 1..65535): the Service is served, but its load balancer's health checks get no answer"],
  ] as const) {
    const m = buildModel(snap([lb('web', value)]), OPTS);
    assert.deepEqual(m.healthChecks, []);
    assert.deepEqual(m.rejected.map((r) => r.reason), [reason]);
    assert.equal(m.servicePorts.length, 1, 'still served');
  }
});
