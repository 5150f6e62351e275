import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNodePortRange, resolveNodePortAddresses, type InterfaceAddress } from '../../src/model/node-addresses.js';

const v4 = (address: string, internal = false): InterfaceAddress => ({ address, family: 'IPv4', internal });
const v6 = (address: string, internal = false): InterfaceAddress => ({ address, family: 'IPv6', internal });

/** Shaped like os.networkInterfaces() on a node with two uplinks, a pod bridge and loopback. */
const INTERFACES: Record<string, InterfaceAddress[] | undefined> = {
  lo: [v4('127.0.0.1', true), v6('::1', true)],
  eth0: [v4('172.18.0.2'), v6('fc00:f853:ccd:e793::2'), v4('172.18.0.100')],
  eth1: [{ address: '192.168.56.10', family: 4, internal: false }],
  cni0: [v4('10.244.0.1')],
};

test('resolveNodePortAddresses: kube-proxy semantics over the named interfaces', () => {
  const cases: Array<{ name: string; interfaces: string[]; cidrs: string[]; addresses: string[]; problems: string[] }> = [
    {
      name: 'no CIDRs: every IPv4 address of the named interfaces, plus localhost',
      interfaces: ['eth0', 'eth1'],
      cidrs: [],
      addresses: ['127.0.0.1', '172.18.0.2', '172.18.0.100', '192.168.56.10'],
      problems: [],
    },
    { name: 'no interface named: localhost only', interfaces: [], cidrs: [], addresses: ['127.0.0.1'], problems: [] },
    {
      name: 'a CIDR keeps the addresses in it, localhost only if a CIDR covers it',
      interfaces: ['eth0', 'eth1'],
      cidrs: ['172.18.0.0/24'],
      addresses: ['172.18.0.2', '172.18.0.100'],
      problems: [],
    },
    {
      name: 'loopback is a candidate with CIDRs even when not named; unnamed interfaces are not',
      interfaces: ['eth0'],
      cidrs: ['127.0.0.0/8', '10.244.0.0/16', '172.18.0.2/32'],
      addresses: ['127.0.0.1', '172.18.0.2'],
      problems: [],
    },
    {
      name: 'unknown interface, invalid and IPv6 CIDRs, "primary": problems, the rest still applies',
      interfaces: ['eth0', 'wlan9'],
      cidrs: ['primary', '172.18.0.0/33', 'fd00::/64', '172.18.0.0/16'],
      addresses: ['172.18.0.2', '172.18.0.100'],
      problems: [
        'interface "wlan9" does not exist',
        'NodePort address "primary" is not supported; ignored',
        'NodePort CIDR "172.18.0.0/33" is not a valid IPv4 CIDR; ignored',
        'NodePort CIDR fd00::/64 ignored: NodePorts are served on IPv4 only',
      ],
    },
    {
      name: 'CIDRs given but none usable: no address, never all of them',
      interfaces: ['eth0'],
      cidrs: ['nonsense'],
      addresses: [],
      problems: [
        'NodePort CIDR "nonsense" is not a valid IPv4 CIDR; ignored',
        'no node address falls in the NodePort CIDRs: NodePorts answer on no address',
      ],
    },
    {
      name: 'duplicates across interfaces are listed once',
      interfaces: ['eth0', 'eth0', 'lo'],
      cidrs: [],
      addresses: ['127.0.0.1', '172.18.0.2', '172.18.0.100'],
      problems: [],
    },
  ];
  for (const c of cases) {
    assert.deepEqual(resolveNodePortAddresses(INTERFACES, c.interfaces, c.cidrs), { addresses: c.addresses, problems: c.problems }, c.name);
  }
});

test('parseNodePortRange: kube-apiserver "min-max" syntax, or what is wrong', () => {
  assert.deepEqual(parseNodePortRange('30000-32767'), { min: 30000, max: 32767 });
  assert.deepEqual(parseNodePortRange(' 80-80 '), { min: 80, max: 80 });
  assert.deepEqual(parseNodePortRange('1-65535'), { min: 1, max: 65535 });
  for (const bad of ['', '30000', '30000+2767', '32767-30000', '0-100', '1-65536', '-1-5', 'a-b', '30000-32767-1', '300000-300001']) {
    const got = parseNodePortRange(bad);
    assert.equal(typeof got, 'string', bad);
    assert.match(got as string, /^invalid NodePort range /, bad);
  }
});
