import { test } from 'node:test';
import assert from 'node:assert/strict';
import { conntrackDeleteArgs, hasUdpServicePorts, parseConntrackList, staleUdpFlows, type UdpFlow } from '../../src/datapath/udp-flows.js';
import { NODE_PORT_ADDRESS, type Backend, type Frontend, type Model, type Protocol, type ServicePort } from '../../src/model/types.js';

const backend = (address: string, port = 5353): Backend => ({ address, port, state: 'ready', local: false });
const clusterIP = (address: string, port = 53): Frontend => ({ kind: 'ClusterIP', address, port });
const nodePort = (port: number): Frontend => ({ kind: 'NodePort', address: NODE_PORT_ADDRESS, port });

function port(name: string, frontends: Frontend[], backends: Backend[], protocol: Protocol = 'UDP'): ServicePort {
  return { ref: { namespace: 'default', name, portName: 'dns', protocol }, frontends, backends };
}

const model = (...servicePorts: ServicePort[]): Model => ({ servicePorts, ignored: [], rejected: [], healthChecks: [], nodeAddresses: ['172.18.0.2'] });
const flow = (origDst: string, origPortDst: number, replySrc: string): UdpFlow => ({ origDst, origPortDst, replySrc });

const dns = port('dns', [clusterIP('10.96.0.10'), { kind: 'ExternalIP', address: '192.0.2.7', port: 53 }, nodePort(30053)], [backend('10.244.0.12')]);

test('a flow to a UDP frontend whose replies come from no endpoint of it goes; one from an endpoint stays', () => {
  assert.deepEqual(
    staleUdpFlows(model(dns), [
      flow('10.96.0.10', 53, '10.244.0.11'),
      flow('10.96.0.10', 53, '10.244.0.12'),
      flow('192.0.2.7', 53, '10.244.0.11'),
    ]),
    [
      { origDst: '10.96.0.10', origPortDst: 53, replySrc: '10.244.0.11' },
      { origDst: '192.0.2.7', origPortDst: 53, replySrc: '10.244.0.11' },
    ],
  );
});

test("a flow on a draining endpoint stays, as kube-proxy keeps the flows of an endpoint that still serves; once it stops serving, it goes", () => {
  const terminating: Backend = { ...backend('10.244.0.11'), state: 'serving-terminating' };
  const flows = [flow('10.96.0.10', 53, '10.244.0.11'), flow('172.18.0.2', 30053, '10.244.0.11')];
  assert.deepEqual(staleUdpFlows(model({ ...dns, draining: [terminating] }), flows), []);
  assert.deepEqual(staleUdpFlows(model(dns), flows), [
    { origDst: '10.96.0.10', origPortDst: 53, replySrc: '10.244.0.11' },
    { origPortDst: 30053, replySrc: '10.244.0.11' },
  ]);
});

test('a NodePort flow is matched by port on any node address', () => {
  assert.deepEqual(staleUdpFlows(model(dns), [flow('172.18.0.2', 30053, '10.244.0.11'), flow('127.0.0.1', 30053, '10.244.0.12')]), [
    { origPortDst: 30053, replySrc: '10.244.0.11' },
  ]);
});

test('a flow never NATed (sent while the port had no endpoints: its replies would come from the frontend) goes once there are endpoints', () => {
  assert.deepEqual(staleUdpFlows(model(dns), [flow('10.96.0.10', 53, '10.96.0.10')]), [{ origDst: '10.96.0.10', origPortDst: 53, replySrc: '10.96.0.10' }]);
  const empty = { ...dns, backends: [] };
  assert.deepEqual(staleUdpFlows(model(empty), [flow('10.96.0.10', 53, '10.96.0.10')]), [{ origDst: '10.96.0.10', origPortDst: 53, replySrc: '10.96.0.10' }]);
});

test('flows to other ports of the address, to TCP frontends and to no Service are left alone', () => {
  const web = port('web', [clusterIP('10.96.0.80', 80)], [backend('10.244.0.11', 8080)], 'TCP');
  assert.deepEqual(
    staleUdpFlows(model(dns, web), [flow('10.96.0.10', 5353, '10.244.0.99'), flow('10.96.0.80', 80, '10.244.0.99'), flow('8.8.8.8', 53, '8.8.8.8')]),
    [],
  );
});

test('one filter per frontend and reply source, however many flows share them', () => {
  const flows = [flow('10.96.0.10', 53, '10.244.0.11'), flow('10.96.0.10', 53, '10.244.0.11')];
  assert.equal(staleUdpFlows(model(dns), flows).length, 1);
});

test('hasUdpServicePorts: the listing is skipped when no service port is UDP', () => {
  assert.equal(hasUdpServicePorts(model(dns)), true);
  assert.equal(hasUdpServicePorts(model(port('web', [clusterIP('10.96.0.80', 80)], [], 'TCP'))), false);
});

test('conntrack -L output: original destination from the first tuple, reply source from the second', () => {
  const text = [
    'udp      17 29 src=10.244.0.5 dst=10.96.0.10 sport=40000 dport=53 [UNREPLIED] src=10.244.0.11 dst=10.244.0.5 sport=5353 dport=40000 mark=0 use=1',
    'udp      17 118 src=172.18.0.100 dst=172.18.0.2 sport=41000 dport=30053 src=10.244.2.11 dst=172.18.0.2 sport=5353 dport=41000 [ASSURED] mark=0 use=1',
    'tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 [ASSURED] mark=0 use=1',
    '',
  ].join('\n');
  assert.deepEqual(parseConntrackList(text), [flow('10.96.0.10', 53, '10.244.0.11'), flow('172.18.0.2', 30053, '10.244.2.11')]);
});

test('conntrack arguments: protocol, original destination, reply source', () => {
  assert.deepEqual(conntrackDeleteArgs({ origDst: '10.96.0.10', origPortDst: 53, replySrc: '10.244.0.11' }), [
    '-D', '-p', 'udp', '--orig-dst', '10.96.0.10', '--orig-port-dst', '53', '--reply-src', '10.244.0.11',
  ]);
  assert.deepEqual(conntrackDeleteArgs({ origPortDst: 30053, replySrc: '10.244.0.11' }), ['-D', '-p', 'udp', '--orig-port-dst', '30053', '--reply-src', '10.244.0.11']);
});
