import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BUILTIN_JUMPS,
  endpointChainName,
  externalChainName,
  randomProbability,
  renderRules,
  restorePlan,
  type RenderedRules,
  type RestoreStep,
  serviceChainName,
  servicePortName,
} from '../../src/datapath/iptables-rules.js';
import type { Backend, Frontend, Model, ServicePort, ServicePortRef } from '../../src/model/types.js';

function ref(namespace: string, name: string, portName: string, protocol: 'TCP' | 'UDP' = 'TCP'): ServicePortRef {
  return { namespace, name, portName, protocol };
}

function be(address: string, port: number): Backend {
  return { address, port, state: 'ready', local: false };
}

function sp(r: ServicePortRef, frontends: Frontend[], backends: Backend[]): ServicePort {
  return { ref: r, frontends, backends };
}

function model(servicePorts: ServicePort[], nodeAddresses: string[] = []): Model {
  return { servicePorts, ignored: [], rejected: [], healthChecks: [], nodeAddresses };
}

const POSTROUTING = [
  '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
  '-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000',
  '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
];
const MARK_MASQ = ['-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000'];
const FORWARD = [
  '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
  '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
  '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
];
const NODEPORTS_JUMP = '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain"';

// Chain names that appear verbatim in kubernetes/kubernetes pkg/proxy/iptables/proxier_test.go (TestOverallIPTablesRules).
test('chain names: upstream proxier_test.go vectors', () => {
  assert.equal(serviceChainName(ref('ns1', 'svc1', 'p80')), 'KUBE-SVC-XPGD46QRK7WJZT7O');
  assert.equal(serviceChainName(ref('ns2', 'svc2', 'p80')), 'KUBE-SVC-GNZBNJ2PO5MGZ6GT');
  assert.equal(externalChainName(ref('ns2', 'svc2', 'p80')), 'KUBE-EXT-GNZBNJ2PO5MGZ6GT');
  assert.equal(serviceChainName(ref('ns3', 'svc3', 'p80')), 'KUBE-SVC-X27LE4BHSL4DOUIK');
  assert.equal(serviceChainName(ref('ns4', 'svc4', 'p80')), 'KUBE-SVC-4SW47YFZTEDKD3PK');
  assert.equal(externalChainName(ref('ns5', 'svc5', 'p80')), 'KUBE-EXT-NUKIZ6OKUXPJNT4C');
  assert.equal(endpointChainName(ref('ns1', 'svc1', 'p80'), '10.180.0.1:80'), 'KUBE-SEP-SXIVWICOYRO3J4NJ');
  assert.equal(endpointChainName(ref('ns2', 'svc2', 'p80'), '10.180.0.2:80'), 'KUBE-SEP-RS4RBKLTHTF2IUXJ');
  assert.equal(endpointChainName(ref('ns3', 'svc3', 'p80'), '10.180.0.3:80'), 'KUBE-SEP-OYPFS5VJICHGATKP');
  assert.equal(endpointChainName(ref('ns4', 'svc4', 'p80'), '10.180.0.4:80'), 'KUBE-SEP-UKSFD7AGPMPPLUHC');
  assert.equal(endpointChainName(ref('ns4', 'svc4', 'p80'), '10.180.0.5:80'), 'KUBE-SEP-C6EBXVWJJZMIWKLZ');
  // Same endpoint, another service port: another chain.
  assert.equal(endpointChainName(ref('ns5', 'svc5', 'p80'), '10.180.0.3:80'), 'KUBE-SEP-I77PXRDZVX7PMWMN');
});

// Names every kubeadm cluster's iptables-save shows: UDP, and an unnamed port ("default/nginx", no ":port").
test('chain names: UDP and unnamed ports, as real kube-proxy nodes show them', () => {
  assert.equal(serviceChainName(ref('kube-system', 'kube-dns', 'dns', 'UDP')), 'KUBE-SVC-TCOU7JCQXEZGVUNU');
  assert.equal(serviceChainName(ref('kube-system', 'kube-dns', 'dns-tcp', 'TCP')), 'KUBE-SVC-ERIFXISQEP7F7OF4');
  assert.equal(serviceChainName(ref('default', 'kubernetes', 'https')), 'KUBE-SVC-NPX46M4PTMTKRN6Y');
  assert.equal(servicePortName(ref('default', 'nginx', '')), 'default/nginx');
  assert.equal(serviceChainName(ref('default', 'nginx', '')), 'KUBE-SVC-2CMXP7HKUVJN7L6M');
  assert.equal(endpointChainName(ref('default', 'nginx', ''), '10.244.2.5:80'), 'KUBE-SEP-XW6I7J74P22Q2AZM');
});

test('randomProbability is Go %0.10f of 1/n, half to even included', () => {
  assert.equal(randomProbability(2), '0.5000000000');
  assert.equal(randomProbability(3), '0.3333333333');
  assert.equal(randomProbability(7), '0.1428571429');
  // 1/2048 = 0.00048828125 exactly: Go rounds the half to even, JavaScript's toFixed up.
  assert.equal(randomProbability(2048), '0.0004882812');
  assert.equal(randomProbability(4096), '0.0002441406');
});

test('ClusterIP service port with 3 endpoints: every chain, exact lines', () => {
  const r = ref('ns1', 'svc1', 'p80');
  const rendered = renderRules(
    model([sp(r, [{ kind: 'ClusterIP', address: '172.30.0.41', port: 80 }], [be('10.180.0.1', 80), be('10.180.0.2', 80), be('10.180.0.3', 80)])]),
  );
  assert.deepEqual(
    [...rendered.nat],
    [
      [
        'KUBE-SERVICES',
        ['-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O'],
      ],
      ['KUBE-NODEPORTS', []],
      ['KUBE-POSTROUTING', POSTROUTING],
      ['KUBE-MARK-MASQ', MARK_MASQ],
      [
        'KUBE-SVC-XPGD46QRK7WJZT7O',
        [
          '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-SXIVWICOYRO3J4NJ',
          '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-LXVODXWDISEETFEF',
          '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.3:80" -j KUBE-SEP-ICDUIKC33SFI6ZPR',
        ],
      ],
      [
        'KUBE-SEP-SXIVWICOYRO3J4NJ',
        [
          '-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment "ns1/svc1:p80" -s 10.180.0.1 -j KUBE-MARK-MASQ',
          '-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment "ns1/svc1:p80" -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80',
        ],
      ],
      [
        'KUBE-SEP-LXVODXWDISEETFEF',
        [
          '-A KUBE-SEP-LXVODXWDISEETFEF -m comment --comment "ns1/svc1:p80" -s 10.180.0.2 -j KUBE-MARK-MASQ',
          '-A KUBE-SEP-LXVODXWDISEETFEF -m comment --comment "ns1/svc1:p80" -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80',
        ],
      ],
      [
        'KUBE-SEP-ICDUIKC33SFI6ZPR',
        [
          '-A KUBE-SEP-ICDUIKC33SFI6ZPR -m comment --comment "ns1/svc1:p80" -s 10.180.0.3 -j KUBE-MARK-MASQ',
          '-A KUBE-SEP-ICDUIKC33SFI6ZPR -m comment --comment "ns1/svc1:p80" -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80',
        ],
      ],
    ],
  );
  assert.deepEqual(
    [...rendered.filter],
    [
      ['KUBE-SERVICES', []],
      ['KUBE-EXTERNAL-SERVICES', []],
      ['KUBE-FORWARD', FORWARD],
      ['KUBE-NODEPORTS', []],
      ['KUBE-PROXY-FIREWALL', []],
    ],
  );
});

test('NodePort: KUBE-NODEPORTS → KUBE-EXT (masquerade) → KUBE-SVC, one jump per node address, localnet guard for 127.0.0.1', () => {
  const r = ref('ns3', 'svc3', 'p80');
  const rendered = renderRules(
    model(
      [
        sp(
          r,
          [
            { kind: 'ClusterIP', address: '172.30.0.43', port: 80 },
            { kind: 'NodePort', address: '0.0.0.0', port: 3003 },
          ],
          [be('10.180.0.3', 80)],
        ),
      ],
      ['127.0.0.1', '192.168.0.2'],
    ),
  );
  assert.deepEqual(rendered.nat.get('KUBE-SERVICES'), [
    '-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK',
    `${NODEPORTS_JUMP} -d 127.0.0.1 -j KUBE-NODEPORTS`,
    `${NODEPORTS_JUMP} -d 192.168.0.2 -j KUBE-NODEPORTS`,
  ]);
  assert.deepEqual(rendered.nat.get('KUBE-NODEPORTS'), [
    '-A KUBE-NODEPORTS -m comment --comment "ns3/svc3:p80" -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK',
  ]);
  assert.deepEqual(rendered.nat.get('KUBE-EXT-X27LE4BHSL4DOUIK'), [
    '-A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade traffic for ns3/svc3:p80 external destinations" -j KUBE-MARK-MASQ',
    '-A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK',
  ]);
  assert.deepEqual(rendered.nat.get('KUBE-SVC-X27LE4BHSL4DOUIK'), [
    '-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j KUBE-SEP-OYPFS5VJICHGATKP',
  ]);
  assert.deepEqual(rendered.nat.get('KUBE-SEP-OYPFS5VJICHGATKP'), [
    '-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment "ns3/svc3:p80" -s 10.180.0.3 -j KUBE-MARK-MASQ',
    '-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment "ns3/svc3:p80" -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80',
  ]);
  assert.deepEqual(rendered.filter.get('KUBE-FIREWALL'), [
    '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
  ]);
});

test('no 127.0.0.1 among the node addresses: no KUBE-FIREWALL chain', () => {
  const r = ref('ns3', 'svc3', 'p80');
  const rendered = renderRules(model([sp(r, [{ kind: 'NodePort', address: '0.0.0.0', port: 3003 }], [be('10.180.0.3', 80)])], ['192.168.0.2']));
  assert.equal(rendered.filter.has('KUBE-FIREWALL'), false);
  assert.deepEqual(rendered.nat.get('KUBE-SERVICES'), [`${NODEPORTS_JUMP} -d 192.168.0.2 -j KUBE-NODEPORTS`]);
});

test('externalIP: KUBE-SERVICES → KUBE-EXT-*, two endpoints at 1/2', () => {
  const r = ref('ns4', 'svc4', 'p80');
  const rendered = renderRules(
    model([
      sp(
        r,
        [
          { kind: 'ClusterIP', address: '172.30.0.44', port: 80 },
          { kind: 'ExternalIP', address: '192.168.99.33', port: 80 },
        ],
        [be('10.180.0.4', 80), be('10.180.0.5', 80)],
      ),
    ]),
  );
  assert.deepEqual(rendered.nat.get('KUBE-SERVICES'), [
    '-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK',
    '-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 external IP" -m tcp -p tcp -d 192.168.99.33 --dport 80 -j KUBE-EXT-4SW47YFZTEDKD3PK',
  ]);
  assert.deepEqual(rendered.nat.get('KUBE-EXT-4SW47YFZTEDKD3PK'), [
    '-A KUBE-EXT-4SW47YFZTEDKD3PK -m comment --comment "masquerade traffic for ns4/svc4:p80 external destinations" -j KUBE-MARK-MASQ',
    '-A KUBE-EXT-4SW47YFZTEDKD3PK -j KUBE-SVC-4SW47YFZTEDKD3PK',
  ]);
  assert.deepEqual(rendered.nat.get('KUBE-SVC-4SW47YFZTEDKD3PK'), [
    '-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.4:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC',
    '-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.5:80" -j KUBE-SEP-C6EBXVWJJZMIWKLZ',
  ]);
  assert.deepEqual(rendered.nat.get('KUBE-NODEPORTS'), []);
});

test('LoadBalancer: "loadbalancer IP" rule → KUBE-EXT-*, NodePort to the same chain', () => {
  const r = ref('ns5', 'svc5', 'p80');
  const rendered = renderRules(
    model([
      sp(
        r,
        [
          { kind: 'ClusterIP', address: '172.30.0.45', port: 80 },
          { kind: 'NodePort', address: '0.0.0.0', port: 3002 },
          { kind: 'LoadBalancer', address: '5.6.7.8', port: 80 },
        ],
        [be('10.180.0.3', 80)],
      ),
    ]),
  );
  assert.deepEqual(rendered.nat.get('KUBE-SERVICES'), [
    '-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j KUBE-SVC-NUKIZ6OKUXPJNT4C',
    '-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-EXT-NUKIZ6OKUXPJNT4C',
  ]);
  assert.deepEqual(rendered.nat.get('KUBE-NODEPORTS'), [
    '-A KUBE-NODEPORTS -m comment --comment "ns5/svc5:p80" -m tcp -p tcp --dport 3002 -j KUBE-EXT-NUKIZ6OKUXPJNT4C',
  ]);
  assert.deepEqual(
    [...rendered.nat.keys()].filter((c) => /^KUBE-(SVC|EXT|SEP|FW)-/.test(c)),
    ['KUBE-EXT-NUKIZ6OKUXPJNT4C', 'KUBE-SVC-NUKIZ6OKUXPJNT4C', 'KUBE-SEP-I77PXRDZVX7PMWMN'],
  );
});

test('no endpoints: no nat chain, REJECT for the ClusterIP, externalIP, load-balancer IP and NodePort', () => {
  const r = ref('ns1', 'svc1', 'p80');
  const rendered = renderRules(
    model(
      [
        sp(
          r,
          [
            { kind: 'ClusterIP', address: '172.30.0.41', port: 80 },
            { kind: 'NodePort', address: '0.0.0.0', port: 3001 },
            { kind: 'ExternalIP', address: '192.168.99.11', port: 80 },
            { kind: 'LoadBalancer', address: '1.2.3.4', port: 80 },
          ],
          [],
        ),
      ],
      ['192.168.0.2'],
    ),
  );
  assert.deepEqual([...rendered.nat.keys()], ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ']);
  assert.deepEqual(rendered.nat.get('KUBE-SERVICES'), [`${NODEPORTS_JUMP} -d 192.168.0.2 -j KUBE-NODEPORTS`]);
  assert.deepEqual(rendered.nat.get('KUBE-NODEPORTS'), []);
  assert.deepEqual(rendered.filter.get('KUBE-SERVICES'), [
    '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j REJECT',
  ]);
  assert.deepEqual(rendered.filter.get('KUBE-EXTERNAL-SERVICES'), [
    '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp -d 192.168.99.11 --dport 80 -j REJECT',
    '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j REJECT',
    '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j REJECT',
  ]);
});

test('multi-port: each named port, and each protocol of one name, has its own chains', () => {
  const dns = (portName: string, protocol: 'TCP' | 'UDP', port: number) =>
    sp(ref('kube-system', 'kube-dns', portName, protocol), [{ kind: 'ClusterIP', address: '10.96.0.10', port }], [be('10.244.0.2', port)]);
  const rendered = renderRules(model([dns('dns', 'TCP', 53), dns('dns', 'UDP', 53), dns('metrics', 'TCP', 9153)]));
  // By target chain, descending (the order iptables-nft restores fastest).
  assert.deepEqual(rendered.nat.get('KUBE-SERVICES'), [
    '-A KUBE-SERVICES -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp -p udp -d 10.96.0.10 --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU',
    '-A KUBE-SERVICES -m comment --comment "kube-system/kube-dns:metrics cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 9153 -j KUBE-SVC-JD5MR3NA4I4DYORP',
    '-A KUBE-SERVICES -m comment --comment "kube-system/kube-dns:dns cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 53 -j KUBE-SVC-GSKZ6TUW5BJ344DK',
  ]);
  const perService = [...rendered.nat.keys()].filter((c) => /^KUBE-(SVC|SEP)-/.test(c));
  assert.equal(perService.length, 6);
  assert.equal(new Set(perService).size, 6);
  // The endpoint chain of the UDP port (its name as seen on kind clusters) matches and DNATs UDP.
  assert.deepEqual(rendered.nat.get('KUBE-SEP-YIL6JZP7A3QYXJU2'), [
    '-A KUBE-SEP-YIL6JZP7A3QYXJU2 -m comment --comment "kube-system/kube-dns:dns" -s 10.244.0.2 -j KUBE-MARK-MASQ',
    '-A KUBE-SEP-YIL6JZP7A3QYXJU2 -m comment --comment "kube-system/kube-dns:dns" -m udp -p udp -j DNAT --to-destination 10.244.0.2:53',
  ]);
});

test('more than 1000 endpoints in total: endpoint comments dropped, as kube-proxy does in large clusters', () => {
  const backends = Array.from({ length: 1001 }, (_, i) => be(`10.1.${Math.floor(i / 250)}.${(i % 250) + 1}`, 8080));
  const r = ref('ns', 'big', '');
  const rendered = renderRules(model([sp(r, [{ kind: 'ClusterIP', address: '10.96.0.50', port: 80 }], backends)]));
  const svc = rendered.nat.get(serviceChainName(r))!;
  assert.equal(svc.length, 1001);
  assert.equal(svc[0], `-A ${serviceChainName(r)} -m statistic --mode random --probability 0.0009990010 -j ${endpointChainName(r, '10.1.0.1:8080')}`);
  assert.equal(svc[1000], `-A ${serviceChainName(r)} -j ${endpointChainName(r, '10.1.4.1:8080')}`);
  assert.deepEqual(rendered.nat.get(endpointChainName(r, '10.1.0.1:8080')), [
    `-A ${endpointChainName(r, '10.1.0.1:8080')} -s 10.1.0.1 -j KUBE-MARK-MASQ`,
    `-A ${endpointChainName(r, '10.1.0.1:8080')} -m tcp -p tcp -j DNAT --to-destination 10.1.0.1:8080`,
  ]);
  // KUBE-SERVICES keeps its comments.
  assert.match(rendered.nat.get('KUBE-SERVICES')![0]!, /--comment "ns\/big cluster IP"/);
});

test('comments are quoted and escaped as iptables-save prints them', () => {
  const r = ref('we"ird', 'svc', '');
  const rendered = renderRules(model([sp(r, [{ kind: 'ClusterIP', address: '10.96.0.7', port: 80 }], [])]));
  assert.deepEqual(rendered.filter.get('KUBE-SERVICES'), [
    '-A KUBE-SERVICES -m comment --comment "we\\"ird/svc has no endpoints" -m tcp -p tcp -d 10.96.0.7 --dport 80 -j REJECT',
  ]);
});

test('renderRules is deterministic', () => {
  const build = () =>
    model(
      [
        sp(ref('a', 'x', 'http'), [{ kind: 'ClusterIP', address: '10.96.0.1', port: 80 }], [be('10.0.0.1', 80), be('10.0.0.2', 80)]),
        sp(ref('b', 'y', ''), [{ kind: 'NodePort', address: '0.0.0.0', port: 30000 }], [be('10.0.0.3', 81)]),
      ],
      ['10.1.0.1'],
    );
  const a = renderRules(build());
  const b = renderRules(build());
  assert.deepEqual([...a.nat], [...b.nat]);
  assert.deepEqual([...a.filter], [...b.filter]);
});

test('BUILTIN_JUMPS: upstream iptablesJumpChains then kubelet\'s KUBE-FIREWALL jumps, args ready for execFile', () => {
  assert.deepEqual(
    BUILTIN_JUMPS.map((j) => `${j.table} ${j.chain} ${j.args.join('|')}`),
    [
      'filter INPUT -m|conntrack|--ctstate|NEW|-m|comment|--comment|kubernetes externally-visible service portals|-j|KUBE-EXTERNAL-SERVICES',
      'filter FORWARD -m|conntrack|--ctstate|NEW|-m|comment|--comment|kubernetes externally-visible service portals|-j|KUBE-EXTERNAL-SERVICES',
      'filter INPUT -m|comment|--comment|kubernetes health check service ports|-j|KUBE-NODEPORTS',
      'filter FORWARD -m|conntrack|--ctstate|NEW|-m|comment|--comment|kubernetes service portals|-j|KUBE-SERVICES',
      'filter OUTPUT -m|conntrack|--ctstate|NEW|-m|comment|--comment|kubernetes service portals|-j|KUBE-SERVICES',
      'filter FORWARD -m|comment|--comment|kubernetes forwarding rules|-j|KUBE-FORWARD',
      'filter INPUT -m|conntrack|--ctstate|NEW|-m|comment|--comment|kubernetes load balancer firewall|-j|KUBE-PROXY-FIREWALL',
      'filter OUTPUT -m|conntrack|--ctstate|NEW|-m|comment|--comment|kubernetes load balancer firewall|-j|KUBE-PROXY-FIREWALL',
      'filter FORWARD -m|conntrack|--ctstate|NEW|-m|comment|--comment|kubernetes load balancer firewall|-j|KUBE-PROXY-FIREWALL',
      'nat OUTPUT -m|comment|--comment|kubernetes service portals|-j|KUBE-SERVICES',
      'nat PREROUTING -m|comment|--comment|kubernetes service portals|-j|KUBE-SERVICES',
      'nat POSTROUTING -m|comment|--comment|kubernetes postrouting rules|-j|KUBE-POSTROUTING',
      'filter INPUT -j|KUBE-FIREWALL',
      'filter OUTPUT -j|KUBE-FIREWALL',
    ],
  );
  // Every target but kubelet's chain is one renderRules always writes.
  const rendered = renderRules(model([]));
  for (const j of BUILTIN_JUMPS) {
    const target = j.args.at(-1)!;
    if (target !== 'KUBE-FIREWALL') assert.ok(rendered[j.table].has(target), `${j.table} ${target}`);
  }
});

// restorePlan

const A = ref('ns', 'a', 'http');
const B = ref('ns', 'b', 'http');
const frontendA: Frontend = { kind: 'ClusterIP', address: '10.96.0.1', port: 80 };
const frontendB: Frontend = { kind: 'ClusterIP', address: '10.96.0.2', port: 80 };

function lines(payload: string): string[] {
  return payload.split('\n');
}

function declared(payload: string): string[] {
  return lines(payload)
    .filter((l) => l.startsWith(':'))
    .map((l) => l.slice(1).split(' ')[0]!);
}

/** The one input of a plan small enough for one transaction, cut to one table's section. */
function section(table: 'nat' | 'filter', previous: RenderedRules | undefined, next: RenderedRules, existingNat: string[] = []): string {
  const plan = restorePlan(previous, next, { filter: [], nat: existingNat }, Infinity);
  assert.equal(plan.length, 1);
  const input = plan[0]!.input;
  return table === 'nat' ? input.slice(input.indexOf('*nat')) : input.slice(0, input.indexOf('*nat'));
}

function deleted(payload: string): string[] {
  return lines(payload)
    .filter((l) => l.startsWith('-X '))
    .map((l) => l.slice(3));
}

test('restorePlan: first sync declares every chain and deletes the stale kube-proxy chains it finds', () => {
  const rendered = renderRules(model([sp(A, [frontendA], [be('10.0.0.1', 8080)])]));
  const next = rendered.nat;
  const stale = serviceChainName(ref('old', 'svc', ''));
  const payload = section('nat', undefined, rendered, [
    'PREROUTING',
    'DOCKER',
    'KUBE-MARK-DROP',
    'KUBE-SERVICES',
    stale,
    'KUBE-SEP-AAAAAAAAAAAAAAAA',
    serviceChainName(A),
  ]);
  assert.deepEqual(declared(payload), [...next.keys(), 'KUBE-SEP-AAAAAAAAAAAAAAAA', stale]);
  assert.deepEqual(deleted(payload), ['KUBE-SEP-AAAAAAAAAAAAAAAA', stale]);
  assert.deepEqual(lines(payload), [
    '*nat',
    ...[...next.keys(), 'KUBE-SEP-AAAAAAAAAAAAAAAA', stale].map((c) => `:${c} - [0:0]`),
    ...[...next.values()].flat(),
    '-X KUBE-SEP-AAAAAAAAAAAAAAAA',
    `-X ${stale}`,
    'COMMIT',
    '',
  ]);
});

test('restorePlan: one endpoint change rewrites only that service port\'s chains and the top-level ones', () => {
  const previous = renderRules(model([sp(A, [frontendA], [be('10.0.0.1', 8080)]), sp(B, [frontendB], [be('10.0.0.9', 8080)])]));
  const next = renderRules(model([sp(A, [frontendA], [be('10.0.0.2', 8080)]), sp(B, [frontendB], [be('10.0.0.9', 8080)])]));
  const oldSep = endpointChainName(A, '10.0.0.1:8080');
  const newSep = endpointChainName(A, '10.0.0.2:8080');
  const payload = section('nat', previous, next);
  assert.deepEqual(declared(payload), ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ', serviceChainName(A), newSep, oldSep]);
  assert.deepEqual(deleted(payload), [oldSep]);
  assert.ok(!payload.includes(serviceChainName(B) + ' -'), 'B\'s chain is not rewritten');
  assert.ok(payload.includes(`-A KUBE-SERVICES -m comment --comment "ns/b:http cluster IP"`), 'B keeps its KUBE-SERVICES rule');
});

test('restorePlan: a removed service port\'s chains are flushed, then deleted after the rules', () => {
  const previous = renderRules(model([sp(A, [frontendA], [be('10.0.0.1', 8080)]), sp(B, [frontendB], [be('10.0.0.9', 8080)])]));
  const next = renderRules(model([sp(A, [frontendA], [be('10.0.0.1', 8080)])]));
  const payload = section('nat', previous, next);
  const gone = [endpointChainName(B, '10.0.0.9:8080'), serviceChainName(B)];
  assert.deepEqual(declared(payload), ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ', ...gone]);
  assert.deepEqual(deleted(payload), gone);
  assert.ok(!payload.includes('ns/b:http'), 'no rule of B remains');
  const at = lines(payload);
  assert.ok(at.findIndex((l) => l.startsWith('-X')) > at.map((l) => l.startsWith('-A')).lastIndexOf(true), '-X after every rule');
  assert.equal(at.at(-2), 'COMMIT');
});

test('restorePlan: nothing changed, only the top-level chains; filter table too', () => {
  const m = model([sp(A, [frontendA], [be('10.0.0.1', 8080)])], ['127.0.0.1']);
  const rendered = renderRules(m);
  const again = renderRules(m);
  assert.deepEqual(declared(section('nat', rendered, again)), ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ']);
  const filter = section('filter', rendered, again);
  assert.equal(filter.split('\n')[0], '*filter');
  assert.deepEqual(declared(filter), ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL', 'KUBE-FIREWALL']);
  assert.deepEqual(deleted(filter), []);
});

test('restorePlan: KUBE-FIREWALL no longer wanted is left alone (kubelet may own its rule)', () => {
  const before = renderRules(model([], ['127.0.0.1']));
  const after = renderRules(model([], ['10.0.0.1']));
  const payload = section('filter', before, after);
  assert.ok(!declared(payload).includes('KUBE-FIREWALL'));
  assert.deepEqual(deleted(payload), []);
});

// restorePlan in stages

type ChainState = Map<string, string[]>;

/** The chain a rule jumps to, when it is one of kpx's (KUBE-*). */
function jumpTarget(rule: string): string | undefined {
  return / -j (KUBE-[A-Z0-9-]+)/.exec(rule)?.[1];
}

/**
 * Applies one restore input to `state` (per table: chain -> rules) as
 * iptables-restore --noflush does, and fails where it would: a jump to a
 * chain that does not exist at commit, or -X of a chain something jumps to.
 */
function applyInput(state: Record<'nat' | 'filter', ChainState>, input: string): void {
  let table: ChainState | undefined;
  for (const line of input.split('\n')) {
    if (line.startsWith('*')) table = state[line.slice(1) as 'nat' | 'filter'];
    else if (line.startsWith(':')) table!.set(line.slice(1).split(' ')[0]!, []);
    else if (line.startsWith('-A ')) {
      const chain = line.split(' ')[1]!;
      assert.ok(table!.has(chain), `-A to missing chain ${chain}`);
      table!.get(chain)!.push(line);
    } else if (line.startsWith('-X ')) {
      const chain = line.slice(3);
      for (const rules of table!.values()) assert.ok(!rules.some((r) => jumpTarget(r) === chain), `-X ${chain} while a rule jumps to it`);
      assert.deepEqual(table!.get(chain), [], `-X ${chain}, which still has rules`);
      table!.delete(chain);
    } else if (line === 'COMMIT') {
      for (const rules of table!.values()) {
        for (const r of rules) {
          const target = jumpTarget(r);
          if (target) assert.ok(table!.has(target), `after COMMIT, ${r} jumps to a missing chain`);
        }
      }
    }
  }
}

function stateOf(rendered: RenderedRules): Record<'nat' | 'filter', ChainState> {
  const copy = (m: ReadonlyMap<string, readonly string[]>) => new Map([...m].map(([c, rules]) => [c, [...rules]]));
  return { nat: copy(rendered.nat), filter: copy(rendered.filter) };
}

/** n service ports with 3 endpoints each; every third also has a NodePort (a KUBE-EXT- chain); endpoint addresses shift with `generation`. */
function manyServices(n: number, generation = 0, from = 0): ServicePort[] {
  return Array.from({ length: n }, (_, k) => {
    const i = from + k;
    const frontends: Frontend[] = [{ kind: 'ClusterIP', address: `10.96.${i >> 8}.${i & 255}`, port: 80 }];
    if (i % 3 === 0) frontends.push({ kind: 'NodePort', address: '0.0.0.0', port: 30000 + i });
    const shift = i % 2 === 0 ? generation : 0;
    return sp(ref('ns', `svc-${i}`, 'http'), frontends, [1, 2, 3].map((e) => be(`10.1.${(i + shift) & 255}.${e}`, 8080)));
  });
}

function countServiceChains(input: string): number {
  return input.split('\n').filter((l) => /^:KUBE-(SVC|SVL|SEP|EXT|FW|XLB)-/.test(l)).length;
}

/** Applies a staged plan step by step, checking what only the steps after the switch may do and that top-level chains change only at the start and at the switch. */
function applyPlan(state: Record<'nat' | 'filter', ChainState>, plan: RestoreStep[], max: number): void {
  const switchAt = plan.findIndex((step) => /^:KUBE-SERVICES /m.test(step.input) && /\*nat/.test(step.input));
  assert.ok(switchAt > 0, 'a switch input that writes nat KUBE-SERVICES');
  plan.forEach((step, i) => {
    assert.ok(countServiceChains(step.input) <= max, step.input);
    const topLevel = declaredIn(step.input).filter((c) => !/^KUBE-(SVC|SVL|SEP|EXT|FW|XLB)-/.test(c));
    if (i !== switchAt) assert.deepEqual(topLevel.filter((c) => c !== 'KUBE-MARK-MASQ' && c !== 'KUBE-POSTROUTING'), [], `top-level chains outside the switch: ${step.input}`);
    assert.equal(step.deletes !== undefined, i > switchAt, `only the steps after the switch delete (step ${i})`);
    if (step.deletes) assert.deepEqual(declaredIn(step.input), [...step.deletes.filter, ...step.deletes.nat]);
    applyInput(state, step.input);
  });
}

function declaredIn(input: string): string[] {
  return input
    .split('\n')
    .filter((l) => l.startsWith(':'))
    .map((l) => l.slice(1).split(' ')[0]!);
}

/** What the datapath's ensureJumps leaves before a first sync: the chains the built-in jumps go to, empty. */
function afterEnsureJumps(): Record<'nat' | 'filter', ChainState> {
  const state = stateOf({ filter: new Map(), nat: new Map() });
  for (const j of BUILTIN_JUMPS) state[j.table].set(j.args.at(-1)!, []);
  return state;
}

for (const max of [1, 7]) {
  test(`restorePlan: a first sync past the limit (${max} per input) goes in stages that never jump to a missing chain, and ends as one input would`, () => {
    const next = renderRules(model(manyServices(20), ['10.0.0.1']));
    const staleXlb = `KUBE-XLB-${serviceChainName(ref('old', 'gone', '')).slice('KUBE-SVC-'.length)}`;
    const staleSvc = serviceChainName(ref('old', 'gone', ''));
    const staleSep = endpointChainName(ref('old', 'gone', ''), '10.9.9.9:80');
    const state = afterEnsureJumps();
    state.nat.set('KUBE-SERVICES', [`-A KUBE-SERVICES -d 10.96.9.9/32 -j ${staleXlb}`]);
    state.nat.set('KUBE-MARK-MASQ', []);
    state.nat.set(staleXlb, [`-A ${staleXlb} -j ${staleSvc}`, `-A ${staleXlb} -j ${staleSep}`]);
    state.nat.set(staleSvc, [`-A ${staleSvc} -j ${staleSep}`]);
    state.nat.set(staleSep, [`-A ${staleSep} -j KUBE-MARK-MASQ`]);
    const plan = restorePlan(undefined, next, { filter: [...state.filter.keys()], nat: [...state.nat.keys()] }, max);
    assert.ok(plan.length > 5, `${plan.length} inputs`);
    applyPlan(state, plan, max);
    const expected = stateOf(next);
    for (const t of ['nat', 'filter'] as const) for (const [chain, rules] of state[t]) if (!expected[t].has(chain)) expected[t].set(chain, rules);
    assert.deepEqual(state, expected, 'next, plus the empty chains of built-in jumps kpx does not render (KUBE-FIREWALL)');
  });
}

test('restorePlan: an update past the limit (Services gone, new, endpoints moved) ends where it should, never jumping to a missing chain', () => {
  const previous = renderRules(model(manyServices(30, 0), ['10.0.0.1']));
  const next = renderRules(model([...manyServices(20, 1), ...manyServices(10, 0, 40)], ['10.0.0.1']));
  const state = stateOf(previous);
  const plan = restorePlan(previous, next, { filter: [], nat: [] }, 5);
  assert.ok(plan.length > 5, `${plan.length} inputs`);
  applyPlan(state, plan, 5);
  assert.deepEqual(state, stateOf(next));
});

test('restorePlan: within the limit, one input with both tables', () => {
  const previous = renderRules(model(manyServices(30, 0)));
  const next = renderRules(model(manyServices(30, 0).map((s, i) => (i === 4 ? sp(s.ref, s.frontends, [be('10.2.0.1', 8080)]) : s))));
  const plan = restorePlan(previous, next, { filter: [], nat: [] }, 5);
  assert.equal(plan.length, 1);
  assert.match(plan[0]!.input, /^\*filter\n[^]*COMMIT\n\*nat\n[^]*COMMIT\n$/);
  const state = stateOf(previous);
  applyInput(state, plan[0]!.input);
  assert.deepEqual(state, stateOf(next));
});

test('renderRules: an unchanged service port (same object) keeps its chain arrays; the output is what a fresh render gives', () => {
  const ports = manyServices(6);
  const first = renderRules(model(ports));
  const changed = [...ports];
  changed[2] = sp(ports[2]!.ref, ports[2]!.frontends, [be('10.3.0.1', 8080)]);
  const second = renderRules(model(changed));
  assert.equal(second.nat.get(serviceChainName(ports[1]!.ref)), first.nat.get(serviceChainName(ports[1]!.ref)), 'same array');
  assert.notEqual(second.nat.get(serviceChainName(ports[2]!.ref)), first.nat.get(serviceChainName(ports[2]!.ref)));
  const fresh = renderRules(model(structuredClone(changed)));
  assert.deepEqual(second, fresh);
});

test('renderRules: past 1,000 endpoints in all the per-endpoint comments go, for service ports rendered before too', () => {
  const ports = manyServices(3);
  const small = renderRules(model(ports));
  assert.match(small.nat.get(serviceChainName(ports[0]!.ref))![0]!, /--comment/);
  const large = renderRules(model([...ports, ...manyServices(400, 0, 10)]));
  assert.doesNotMatch(large.nat.get(serviceChainName(ports[0]!.ref))![0]!, /--comment/);
  assert.deepEqual(large, renderRules(model(structuredClone([...ports, ...manyServices(400, 0, 10)]))));
});

test('KUBE-SERVICES and KUBE-NODEPORTS jumps go by target chain, descending; the node-address jumps stay last', () => {
  const rendered = renderRules(model(manyServices(30), ['10.0.0.1', '10.0.0.2']));
  const target = (r: string) => / -j (\S+)$/.exec(r)![1]!;
  const services = rendered.nat.get('KUBE-SERVICES')!;
  const jumps = services.slice(0, -2).map(target);
  assert.equal(jumps.length, 30);
  assert.deepEqual(jumps, [...jumps].sort().reverse());
  assert.deepEqual(services.slice(-2).map(target), ['KUBE-NODEPORTS', 'KUBE-NODEPORTS']);
  const nodePorts = rendered.nat.get('KUBE-NODEPORTS')!.map(target);
  assert.equal(nodePorts.length, 10);
  assert.deepEqual(nodePorts, [...nodePorts].sort().reverse());
});

test("a health check node port is accepted in the filter table's KUBE-NODEPORTS for each service port, whatever the INPUT policy, as kube-proxy does", () => {
  const lb = (portName: string, protocol: 'TCP' | 'UDP') => sp(ref('default', 'lb', portName, protocol), [{ kind: 'ClusterIP', address: '10.96.0.9', port: 53 }], [be('10.244.0.2', 53)]);
  const m = { ...model([lb('dns', 'TCP'), lb('dns', 'UDP')]), healthChecks: [{ namespace: 'default', name: 'lb', port: 32000, localEndpoints: 0 }] };
  assert.deepEqual(renderRules(m).filter.get('KUBE-NODEPORTS'), [
    '-A KUBE-NODEPORTS -m comment --comment "default/lb:dns health check node port" -m tcp -p tcp --dport 32000 -j ACCEPT',
    '-A KUBE-NODEPORTS -m comment --comment "default/lb:dns health check node port" -m tcp -p tcp --dport 32000 -j ACCEPT',
  ]);
  assert.deepEqual(renderRules(model([lb('dns', 'TCP')])).filter.get('KUBE-NODEPORTS'), []);
});
