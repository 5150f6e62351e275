import { test } from 'node:test';
import assert from 'node:assert/strict';
import { conntrackDeleteArgs, staleUdpFlows } from '../../src/datapath/udp-flows.js';
import { NODE_PORT_ADDRESS, type Backend, type Frontend, type Model, type Protocol, type ServicePort } from '../../src/model/types.js';

const backend = (address: string, port = 5353): Backend => ({ address, port, state: 'ready', local: false });
const clusterIP = (address: string, port = 53): Frontend => ({ kind: 'ClusterIP', address, port });
const nodePort = (port: number): Frontend => ({ kind: 'NodePort', address: NODE_PORT_ADDRESS, port });

function port(name: string, frontends: Frontend[], backends: Backend[], protocol: Protocol = 'UDP'): ServicePort {
  return { ref: { namespace: 'default', name, portName: 'dns', protocol }, frontends, backends };
}

const model = (...servicePorts: ServicePort[]): Model => ({ servicePorts, ignored: [], rejected: [], nodeAddresses: ['172.18.0.2'] });

test('an endpoint a UDP service port dropped: its flows to every frontend of the port go, NodePorts by port alone', () => {
  const before = port('dns', [clusterIP('10.96.0.10'), nodePort(30053)], [backend('10.244.0.11'), backend('10.244.0.12')]);
  const after = { ...before, backends: [backend('10.244.0.12')] };
  assert.deepEqual(staleUdpFlows(model(before), model(after)), [
    { origDst: '10.96.0.10', origPortDst: 53, dstNat: '10.244.0.11' },
    { origPortDst: 30053, dstNat: '10.244.0.11' },
  ]);
});

test('an endpoint that only changed port counts as dropped; one that stayed does not', () => {
  const before = port('dns', [clusterIP('10.96.0.10')], [backend('10.244.0.11', 5353), backend('10.244.0.12', 5353)]);
  const after = { ...before, backends: [backend('10.244.0.11', 5454), backend('10.244.0.12', 5353)] };
  assert.deepEqual(staleUdpFlows(model(before), model(after)), [{ origDst: '10.96.0.10', origPortDst: 53, dstNat: '10.244.0.11' }]);
  assert.deepEqual(staleUdpFlows(model(after), model(after)), []);
});

test('a UDP service port that gets its first endpoints, or is new with some: every flow to its frontends goes', () => {
  const empty = port('dns', [clusterIP('10.96.0.10'), nodePort(30053)], []);
  const served = { ...empty, backends: [backend('10.244.0.11')] };
  const expected = [{ origDst: '10.96.0.10', origPortDst: 53 }, { origPortDst: 30053 }];
  assert.deepEqual(staleUdpFlows(model(empty), model(served)), expected);
  assert.deepEqual(staleUdpFlows(model(), model(served)), expected);
  assert.deepEqual(staleUdpFlows(model(), model(empty)), [], 'a new port without endpoints has no flows to clear');
});

test('a UDP service port that went, or a frontend it lost: the flows to those frontends go', () => {
  const before = port('dns', [clusterIP('10.96.0.10'), { kind: 'ExternalIP', address: '192.0.2.7', port: 53 }], [backend('10.244.0.11')]);
  assert.deepEqual(staleUdpFlows(model(before), model()), [
    { origDst: '10.96.0.10', origPortDst: 53 },
    { origDst: '192.0.2.7', origPortDst: 53 },
  ]);
  const lostExternalIP = { ...before, frontends: [clusterIP('10.96.0.10')] };
  assert.deepEqual(staleUdpFlows(model(before), model(lostExternalIP)), [{ origDst: '192.0.2.7', origPortDst: 53 }]);
});

test('TCP service ports are left to conntrack: their flows end with their connections', () => {
  const before = port('web', [clusterIP('10.96.0.80', 80)], [backend('10.244.0.11', 8080)], 'TCP');
  assert.deepEqual(staleUdpFlows(model(before), model({ ...before, backends: [] })), []);
  assert.deepEqual(staleUdpFlows(model(before), model()), []);
});

test('one filter per flow set, however many service ports share a frontend address', () => {
  const a = port('a', [clusterIP('10.96.0.10')], [backend('10.244.0.11')]);
  const b = { ...port('b', [clusterIP('10.96.0.10')], [backend('10.244.0.11')]), ref: { ...a.ref, portName: 'other' } };
  assert.deepEqual(staleUdpFlows(model(a, b), model({ ...a, backends: [] }, { ...b, backends: [] })), [
    { origDst: '10.96.0.10', origPortDst: 53, dstNat: '10.244.0.11' },
  ]);
});

test('conntrack arguments: protocol, original destination, and the NAT target when there is one', () => {
  assert.deepEqual(conntrackDeleteArgs({ origDst: '10.96.0.10', origPortDst: 53, dstNat: '10.244.0.11' }), [
    '-D', '-p', 'udp', '--orig-dst', '10.96.0.10', '--orig-port-dst', '53', '--dst-nat', '10.244.0.11',
  ]);
  assert.deepEqual(conntrackDeleteArgs({ origPortDst: 30053 }), ['-D', '-p', 'udp', '--orig-port-dst', '30053']);
});
