// Traffic from outside the cluster: NodePort, externalIPs and LoadBalancer IPs
// on a two-node lab. An external host on the wire can reach node addresses
// only (it has no route to pods), so every answer it gets from a pod went
// through kpx's packet-level NAT on a node's eth0. One agent per node reads the
// same manifest folder, as two kube-proxies read one API server. Each scenario
// runs with the tc programs alone, with XDP in front of them, and in iptables
// mode (kube-proxy's rules, in each node's own network namespace).
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { closeSync } from 'node:fs';
import { CT_FIB, ctKey, ctValue } from '../../src/contract/codecs.js';
import { mapEntryBatches, mapUpdate, objGet } from '../../src/datapath/libbpf.js';
import type { ListedServicePort } from '../../src/inspect/listing.js';
import { kpxArgv, startLabAgent } from '../../src/lab/agent.js';
import { createLab, PROBE_SCRIPT, WIRE_CIDR, type ClusterLab, type LabProcess, type NodeSpec } from '../../src/lab/lab.js';
import { countBodies, parseProbeOutput, type ProbeResult } from '../../src/lab/probe-results.js';
import { missingKernelPrerequisite } from '../fixtures/tools.js';

const skip = missingKernelPrerequisite();

const NODE_A = '172.18.0.2';
const NODE_B = '172.18.0.3';
const EXTERNAL = { name: 'ext', address: '172.18.0.100' };
const POD = { a1: '10.244.1.11', a2: '10.244.1.12', b1: '10.244.2.11', b2: '10.244.2.12' } as const;
const NODES: NodeSpec[] = [
  { name: 'node-a', pods: [{ name: 'pod-a1', address: POD.a1 }, { name: 'pod-a2', address: POD.a2 }] },
  { name: 'node-b', pods: [{ name: 'pod-b1', address: POD.b1 }, { name: 'pod-b2', address: POD.b2 }] },
];
/** What every pod serves: HTTP and UDP name servers, and an echo port for long-lived connections. */
const HTTP_PORT = 8080;
const UDP_PORT = 5353;
const ECHO_PORT = 9000;
/** Routed by the external host via node-a; assigned to no interface anywhere. */
const EXTERNAL_IP = '203.0.113.10';
const LB_VIP = '198.51.100.10';
const LB_PROXY = '198.51.100.20';
const HC_NODE_PORT = 30301;

/** One HTTP GET with curl from `host`: status, headers (lower-cased names) and body; status 0 when nothing answered. */
interface HttpReply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

type Endpoint = [address: string, nodeName: string];

const slice = (svc: string, port: number, endpoints: Endpoint[], protocol = 'TCP') => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${svc}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  ports: [{ name: 'p', port, protocol }],
  endpoints: endpoints.map(([ip, nodeName]) => ({ addresses: [ip], conditions: { ready: true }, nodeName })),
});

const service = (name: string, spec: object, status?: object) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec,
  ...(status && { status }),
});

const port = (extra: object) => ({ name: 'p', protocol: 'TCP', ...extra });

const MANIFESTS: Record<string, unknown[]> = {
  'web.json': [
    service('web', { type: 'NodePort', clusterIP: '10.96.10.1', ports: [port({ port: 80, targetPort: HTTP_PORT, nodePort: 30080 })] }),
    slice('web', HTTP_PORT, [[POD.a1, 'node-a'], [POD.b1, 'node-b']]),
  ],
  'auto.json': [
    service('auto', { type: 'NodePort', clusterIP: '10.96.10.2', ports: [port({ port: 80, targetPort: HTTP_PORT })] }),
    slice('auto', HTTP_PORT, [[POD.a2, 'node-a']]),
  ],
  'dns.json': [
    service('dns', { type: 'NodePort', clusterIP: '10.96.10.3', ports: [port({ protocol: 'UDP', port: 53, targetPort: UDP_PORT, nodePort: 30053 })] }),
    slice('dns', UDP_PORT, [[POD.b1, 'node-b']], 'UDP'),
  ],
  'ext-ip.json': [
    service('ext-ip', { clusterIP: '10.96.10.4', externalIPs: [EXTERNAL_IP], ports: [port({ port: 8080, targetPort: HTTP_PORT })] }),
    slice('ext-ip', HTTP_PORT, [[POD.a1, 'node-a'], [POD.b1, 'node-b']]),
  ],
  'lb.json': [
    service(
      'lb',
      { type: 'LoadBalancer', clusterIP: '10.96.10.5', ports: [port({ port: 80, targetPort: HTTP_PORT, nodePort: 30040 })] },
      { loadBalancer: { ingress: [{ ip: LB_VIP }, { ip: LB_PROXY, ipMode: 'Proxy' }] } },
    ),
    slice('lb', HTTP_PORT, [[POD.b2, 'node-b']]),
  ],
  'stream.json': [
    service('stream', { type: 'NodePort', clusterIP: '10.96.10.6', ports: [port({ port: ECHO_PORT, targetPort: ECHO_PORT, nodePort: 30900 })] }),
    slice('stream', ECHO_PORT, [[POD.b2, 'node-b']]),
  ],
  'hc.json': healthCheckedManifest([POD.a1, 'node-a']),
  'churn.json': churnManifest([POD.a2, 'node-a']),
  'bystander.json': bystanderManifest([POD.a2, 'node-a']),
};

function churnManifest(endpoint: Endpoint): unknown[] {
  return [
    service('churn', { type: 'NodePort', clusterIP: '10.96.10.7', ports: [port({ port: 80, targetPort: HTTP_PORT, nodePort: 30070 })] }),
    slice('churn', HTTP_PORT, [endpoint]),
  ];
}

/** A LoadBalancer whose traffic stays on the node its load balancer picks: it probes HC_NODE_PORT on every node. */
function healthCheckedManifest(endpoint: Endpoint): unknown[] {
  return [
    service('hc', {
      type: 'LoadBalancer',
      clusterIP: '10.96.10.20',
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: HC_NODE_PORT,
      ports: [port({ port: 80, targetPort: HTTP_PORT, nodePort: 30300 })],
    }),
    slice('hc', HTTP_PORT, [endpoint]),
  ];
}

function bystanderManifest(endpoint: Endpoint): unknown[] {
  return [service('bystander', { clusterIP: '10.96.10.8', ports: [port({ port: 80, targetPort: HTTP_PORT })] }), slice('bystander', HTTP_PORT, [endpoint])];
}

/** Binds PROTO ADDR:PORT and prints "bound" or the error code. */
const BIND_SCRIPT = `
const [proto, address, port] = process.argv.slice(-3);
const report = (what) => { console.log(what); process.exit(0); };
if (proto === 'udp') {
  const socket = require('node:dgram').createSocket('udp4');
  socket.on('error', (err) => report(err.code));
  socket.bind(Number(port), address, () => report('bound'));
} else {
  const server = require('node:net').createServer();
  server.on('error', (err) => report(err.code));
  server.listen(Number(port), address, () => report('bound'));
}`;

/** Backend name → the client addresses it saw, from answers to GET /client ("NAME ADDR"). */
function clientsSeen(results: readonly ProbeResult[]): Map<string, Set<string>> {
  const seen = new Map<string, Set<string>>();
  for (const r of results) {
    if (!r.ok) continue;
    const [name = '', client = ''] = r.body.split(' ');
    if (!seen.has(name)) seen.set(name, new Set());
    seen.get(name)!.add(client);
  }
  return seen;
}

function assertAllAnswered(results: readonly ProbeResult[], what: string): void {
  assert.ok(results.length > 0 && results.every((r) => r.ok), `${what}: ${JSON.stringify(countBodies(results))}`);
}

/**
 * Where a change shows in a series of attempts: the first attempt from which
 * on every attempt shows the new behaviour. Returns ms from the change to it.
 */
function msUntilSettled(results: readonly ProbeResult[], changedAt: number, isNew: (r: ProbeResult) => boolean, what: string): number {
  const before = results.filter((r) => r.at < changedAt);
  assert.ok(before.length > 0 && before.every((r) => !isNew(r)), `${what}: old behaviour before the change: ${JSON.stringify(countBodies(before))}`);
  let first = results.length;
  while (first > 0 && isNew(results[first - 1]!)) first--;
  assert.ok(first < results.length, `${what}: never changed: ${JSON.stringify(countBodies(results))}`);
  return Math.max(0, results[first]!.at - changedAt);
}

const VARIANTS: Array<{ label: string; mode: 'ebpf' | 'iptables'; extraArgs: string[] }> = [
  { label: 'ebpf, tc', mode: 'ebpf', extraArgs: ['--mode', 'ebpf'] },
  { label: 'ebpf, --xdp', mode: 'ebpf', extraArgs: ['--mode', 'ebpf', '--xdp'] },
  { label: 'iptables', mode: 'iptables', extraArgs: ['--mode', 'iptables'] },
];

for (const { label, mode, extraArgs } of VARIANTS) {
  describe(`NodePort, externalIPs and LoadBalancer IPs from outside (${label})`, { skip }, () => {
    let lab: ClusterLab;
    let agents: LabProcess[] = [];

    const writeManifest = (file: string, items: unknown[]) =>
      writeFile(join(lab.manifestsDir, file), JSON.stringify({ apiVersion: 'v1', kind: 'List', items }, null, 1));

    async function probe(host: string, args: string[], inCgroup: boolean): Promise<ProbeResult[]> {
      // Answers inside the lab take milliseconds: a lost flow should not cost seconds.
      const timeout = args.includes('--timeout') ? [] : ['--timeout', '1000'];
      const r = await lab.exec(host, [process.execPath, PROBE_SCRIPT, ...args, ...timeout], { inCgroup });
      assert.equal(r.code, 0, `probe ${args.join(' ')} on ${host}: ${r.stderr}`);
      return parseProbeOutput(r.stdout).results;
    }
    const fromOutside = (args: string[]) => probe(EXTERNAL.name, args, false);
    /** A process of a node or pod, inside the node's cgroup: its connect() runs kpx's socket programs. */
    const fromInside = (host: string, args: string[]) => probe(host, args, true);

    async function listedOn(node: string): Promise<ListedServicePort[]> {
      const r = await lab.exec(node, kpxArgv(['list', '--json', '--bpffs', lab.node(node).bpffsPath]));
      assert.equal(r.code, 0, `kpx list on ${node}: ${r.stderr}`);
      return JSON.parse(r.stdout) as ListedServicePort[];
    }

    async function untilListed(node: string, what: string, predicate: (listed: ListedServicePort[]) => boolean): Promise<void> {
      const start = performance.now();
      while (!predicate(await listedOn(node))) {
        if (performance.now() - start > 5000) assert.fail(`${node} did not show ${what} within 5 s`);
      }
    }

    async function bind(host: string, proto: 'tcp' | 'udp', address: string, portNumber: number, inCgroup = true): Promise<string> {
      const r = await lab.exec(host, [process.execPath, '-e', BIND_SCRIPT, proto, address, String(portNumber)], { inCgroup });
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    }

    async function get(host: string, url: string): Promise<HttpReply> {
      const r = await lab.exec(host, ['curl', '-s', '-i', '--max-time', '2', url]);
      if (r.code !== 0) return { status: 0, headers: {}, body: r.stderr };
      const [head = '', body = ''] = r.stdout.split('\r\n\r\n');
      const [statusLine = '', ...lines] = head.split('\r\n');
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      return { status: Number(statusLine.split(' ')[1]), headers, body };
    }

    async function startAgents(flags: string[]): Promise<void> {
      agents = await Promise.all(NODES.map((n) => startLabAgent(lab, { node: n.name, extraArgs: flags })));
    }

    before(async () => {
      lab = await createLab({ nodes: NODES, externalHosts: [EXTERNAL] });
      await lab.startNameServers(
        NODES.flatMap((n) => n.pods ?? []).map((p) => ({ host: p.name, tcp: [HTTP_PORT], udp: [UDP_PORT], echo: [ECHO_PORT] })),
      );
      // The addresses a router outside the cluster would send to a node.
      for (const address of [EXTERNAL_IP, LB_VIP, LB_PROXY]) {
        const r = await lab.exec(EXTERNAL.name, ['ip', 'route', 'add', `${address}/32`, 'via', NODE_A]);
        assert.equal(r.code, 0, r.stderr);
      }
      for (const [file, items] of Object.entries(MANIFESTS)) await writeManifest(file, items);
      await startAgents(extraArgs);
    });

    after(async () => {
      await lab?.close();
    });

    test('a NodePort on either node reaches backends on both nodes; a remote backend sees the entry node as the client', async (t) => {
      for (const [entry, entryAddress, remoteBackend] of [['node-a', NODE_A, 'pod-b1'], ['node-b', NODE_B, 'pod-a1']] as const) {
        const results = await fromOutside(['http', entryAddress, '30080', '--path', '/client', '--count', '20']);
        assertAllAnswered(results, `via ${entry}`);
        const seen = clientsSeen(results);
        assert.deepEqual([...seen.keys()].sort(), ['pod-a1', 'pod-b1'], `via ${entry}: both backends answer`);
        assert.deepEqual([...seen.get(remoteBackend)!], [entryAddress], `via ${entry}: ${remoteBackend} sees ${entry} as the client (SNAT)`);
        assert.deepEqual([...new Set(results.map((r) => r.ok && r.peer))], [`${entryAddress}:30080`], 'replies come from the nodePort');
        const localBackend = remoteBackend === 'pod-b1' ? 'pod-a1' : 'pod-b1';
        t.diagnostic(`via ${entry}: the local backend saw the client as ${[...seen.get(localBackend)!].join(', ')}`);
      }
    });

    if (extraArgs.includes('--xdp')) {
      test('XDP itself sends translated frames back onto the wire (XDP_TX on node-a\'s eth0), not only tc', async () => {
        const stats = await lab.exec('node-a', ['ethtool', '-S', 'eth0']);
        const xdpTx = [...stats.stdout.matchAll(/rx_queue_\d+_xdp_tx: (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
        assert.ok(xdpTx > 0, `no XDP_TX on node-a eth0:\n${stats.stdout}`);
      });
    }

    test('from a node and from its pods (in the cgroup), nodeIP:nodePort and 127.0.0.1:nodePort work', async () => {
      const fromNode = await fromInside('node-a', ['http', NODE_A, '30080', '--count', '20']);
      assertAllAnswered(fromNode, 'node-a to its own address');
      assert.deepEqual(Object.keys(countBodies(fromNode)).sort(), ['pod-a1', 'pod-b1']);
      assertAllAnswered(await fromInside('node-a', ['http', '127.0.0.1', '30080', '--count', '5']), 'node-a to 127.0.0.1');
      assertAllAnswered(await fromInside('node-a', ['http', NODE_B, '30080', '--count', '5']), 'node-a to node-b');
      assertAllAnswered(await fromInside('pod-a2', ['http', NODE_A, '30080', '--count', '5']), 'pod-a2 to its node');
      assertAllAnswered(await fromInside('pod-a2', ['http', NODE_B, '30080', '--count', '5']), 'pod-a2 to the other node');
      // A pod's 127.0.0.1 is its own loopback: only the socket programs, which run
      // in every namespace of the cgroup, can serve NodePorts there (kube-proxy cannot).
      if (mode === 'ebpf') assertAllAnswered(await fromInside('pod-a2', ['http', '127.0.0.1', '30080', '--count', '5']), 'pod-a2 to 127.0.0.1');
    });

    test('an explicit nodePort is used; without one, both nodes allocate the same from 30000-32767', async () => {
      const nodePortsOf = (listed: ListedServicePort[], name: string) =>
        listed.find((s) => s.name === name)?.frontends.filter((f) => f.kind === 'NodePort').map((f) => f.port) ?? [];
      const onA = await listedOn('node-a');
      const onB = await listedOn('node-b');
      assert.deepEqual(nodePortsOf(onA, 'web'), [30080]);
      const [allocated] = nodePortsOf(onA, 'auto');
      assert.ok(allocated !== undefined && allocated >= 30000 && allocated <= 32767, `auto got nodePort ${allocated}`);
      assert.deepEqual(nodePortsOf(onB, 'auto'), [allocated], 'node-b allocated the same nodePort');
      for (const entry of [NODE_A, NODE_B]) {
        assert.deepEqual(countBodies(await fromOutside(['http', entry, String(allocated), '--count', '3'])), { 'pod-a2': 3 });
      }
    });

    test('nothing listens on a nodePort; binding it, or a served externalIP port, in the node cgroup fails with EADDRINUSE', {
      skip: mode === 'iptables' && 'iptables mode has no bind hook (kube-proxy no longer holds NodePort sockets either)',
    }, async () => {
      const listeners = await lab.exec('node-a', ['ss', '-Htlnu', 'sport = :30080 or sport = :30053']);
      assert.equal(listeners.stdout.trim(), '', 'no socket holds the nodePorts');
      // An externalIP is not a node address: allow binding it, as a port holder would.
      await lab.exec('node-a', ['sysctl', '-qw', 'net.ipv4.ip_nonlocal_bind=1']);
      assert.equal(await bind('node-a', 'tcp', '0.0.0.0', 30080), 'EADDRINUSE');
      assert.equal(await bind('node-a', 'tcp', NODE_A, 30080), 'EADDRINUSE');
      assert.equal(await bind('node-a', 'udp', '0.0.0.0', 30053), 'EADDRINUSE');
      assert.equal(await bind('node-a', 'tcp', EXTERNAL_IP, 8080), 'EADDRINUSE');
      // The refusals are kpx's: a free port binds, and so does a nodePort outside the cgroup.
      assert.equal(await bind('node-a', 'tcp', '0.0.0.0', 30999), 'bound');
      assert.equal(await bind('node-a', 'tcp', '0.0.0.0', 30080, false), 'bound');
    });

    test('an externalIP routed to a node reaches backends on both nodes, from outside and from the node', async () => {
      const results = await fromOutside(['http', EXTERNAL_IP, '8080', '--count', '20']);
      assertAllAnswered(results, 'externalIP from outside');
      assert.deepEqual(Object.keys(countBodies(results)).sort(), ['pod-a1', 'pod-b1']);
      assertAllAnswered(await fromInside('node-a', ['http', EXTERNAL_IP, '8080', '--count', '5']), 'externalIP from node-a');
    });

    test('LoadBalancer: a VIP ingress is served, an ipMode Proxy one is not; its NodePort and ClusterIP work', async () => {
      assert.deepEqual(countBodies(await fromOutside(['http', LB_VIP, '80', '--count', '5'])), { 'pod-b2': 5 });
      const proxied = await fromOutside(['http', LB_PROXY, '80', '--count', '2', '--timeout', '500']);
      assert.ok(proxied.every((r) => !r.ok), `ipMode Proxy is the load balancer's job: ${JSON.stringify(countBodies(proxied))}`);
      assert.deepEqual(countBodies(await fromOutside(['http', NODE_A, '30040', '--count', '3'])), { 'pod-b2': 3 });
      assert.deepEqual(countBodies(await fromInside('pod-a1', ['http', '10.96.10.5', '80', '--count', '3'])), { 'pod-b2': 3 });
    });

    test('UDP through a NodePort reaches a backend on the other node and the reply comes from the nodePort', async () => {
      const results = await fromOutside(['udp', NODE_A, '30053', '--message', 'client', '--fresh', '--count', '5']);
      assert.deepEqual(countBodies(results), { [`pod-b1 ${NODE_A}`]: 5 });
      for (const r of results) assert.ok(r.ok && r.peer === `${NODE_A}:30053`, JSON.stringify(r));
    });

    // XDP sees no skb, so nor whether a checksum is partial: the lab's wire carries complete ones for it.
    if (!extraArgs.includes('--xdp')) {
      test('packets that reach node-a with partial checksums (a veth wire, as in kind) reach a remote backend and their replies the client', async () => {
        // ext's and node-b's packets arrive at node-a's tc ingress CHECKSUM_PARTIAL: both send with offload, and
        // node-a's bridge port hands them on as they are. node-a sends without offload, so its forwarding completes
        // each checksum in software from what the translation left in it, and the receiver drops a wrong one.
        const offload = [
          { host: 'ext', ends: { eth0: true } },
          { host: 'node-b', ends: { eth0: true } },
          { host: 'node-a', ends: { wirePort: true } },
        ];
        try {
          for (const { host, ends } of offload) await lab.setTxChecksumOffload(host, ends);
          const tcp = await fromOutside(['http', NODE_A, '30080', '--path', '/client', '--count', '20']);
          assertAllAnswered(tcp, 'TCP');
          assert.deepEqual([...(clientsSeen(tcp).get('pod-b1') ?? [])], [NODE_A], 'the remote backend answered, through SNAT');
          const udp = await fromOutside(['udp', NODE_A, '30053', '--message', 'client', '--fresh', '--count', '5']);
          assert.deepEqual(countBodies(udp), { [`pod-b1 ${NODE_A}`]: 5 });
        } finally {
          for (const { host } of offload) await lab.setTxChecksumOffload(host, { eth0: false, wirePort: false });
        }
      });
    }

    test('new flows follow a changed, then deleted, Service within 200 ms', async (t) => {
      // Fresh connections every 20 ms from outside while the file changes.
      const during = async (change: () => Promise<void>): Promise<{ results: ProbeResult[]; changedAt: number }> => {
        const poller = lab.spawn(EXTERNAL.name, [process.execPath, PROBE_SCRIPT, 'http', NODE_A, '30070', '--count', '80', '--interval', '20', '--timeout', '300']);
        await new Promise((r) => setTimeout(r, 400));
        const changedAt = Date.now();
        await change();
        const { code } = await poller.exited;
        assert.equal(code, 0, poller.stderr());
        return { results: parseProbeOutput(poller.stdout()).results, changedAt };
      };

      const moved = await during(() => writeManifest('churn.json', churnManifest([POD.b2, 'node-b'])));
      const moveMs = msUntilSettled(moved.results, moved.changedAt, (r) => r.ok && r.body === 'pod-b2', 'endpoint pod-a2 → pod-b2');
      const deleted = await during(() => rm(join(lab.manifestsDir, 'churn.json')));
      const deleteMs = msUntilSettled(deleted.results, deleted.changedAt, (r) => !r.ok, 'Service deleted');
      t.diagnostic(`file write to new flows: endpoint change ${moveMs} ms, deletion ${deleteMs} ms`);
      assert.ok(moveMs < 1000 && deleteMs < 1000, `took ${moveMs} / ${deleteMs} ms`);
    });

    test('a long-lived connection through a NodePort keeps working across a change to another Service', async () => {
      const stream = lab.spawn(EXTERNAL.name, [process.execPath, PROBE_SCRIPT, 'stream', NODE_A, '30900', '--interval', '20']);
      assert.equal(await stream.waitFor(/^connected/, 3000), 'connected pod-b2');
      const changedAt = Date.now();
      await writeManifest('bystander.json', bystanderManifest([POD.a1, 'node-a']));
      await untilListed('node-a', 'the bystander change', (l) => l.find((s) => s.name === 'bystander')?.backends[0]?.address === POD.a1);
      await new Promise((r) => setTimeout(r, 200));
      await stream.close();
      const { results } = parseProbeOutput(stream.stdout());
      assertAllAnswered(results, 'exchanges on the long-lived connection');
      assert.ok(results.filter((r) => r.at > changedAt + 200).length >= 3, `exchanges continued after the change: ${results.length} in all`);
    });

    test('a UDP client that keeps sending through a NodePort moves to a new endpoint when its own is dropped, as kube-proxy\'s conntrack cleanup makes it', async () => {
      const manifest = (address: string, nodeName: string) => [
        service('udp-move', { type: 'NodePort', clusterIP: '10.96.10.11', ports: [port({ protocol: 'UDP', port: 53, targetPort: UDP_PORT, nodePort: 30054 })] }),
        slice('udp-move', UDP_PORT, [[address, nodeName]], 'UDP'),
      ];
      const only = (address: string) => (l: ListedServicePort[]) => l.find((s) => s.name === 'udp-move')?.backends[0]?.address === address;
      await writeManifest('udp-move.json', manifest(POD.b2, 'node-b'));
      await untilListed('node-a', 'udp-move on pod-b2', only(POD.b2));
      try {
        // One socket, every 50 ms for 3 s; pod-b2 stays up and would answer whatever still reaches it.
        const sending = fromOutside(['udp', NODE_A, '30054', '--count', '60', '--interval', '50']);
        await new Promise((r) => setTimeout(r, 700));
        await writeManifest('udp-move.json', manifest(POD.a1, 'node-a'));
        await untilListed('node-a', 'udp-move on pod-a1', only(POD.a1));
        // Node-a has the change; give the conntrack cleanup (iptables mode) a moment after the rules.
        const settled = Date.now() + 300;
        const results = await sending;
        assertAllAnswered(results, 'datagrams through the NodePort');
        assert.deepEqual(countBodies(results.slice(0, 1)), { 'pod-b2': 1 }, 'the flow started on pod-b2');
        const after = results.filter((r) => r.at > settled);
        assert.ok(after.length >= 5, `datagrams after the change settled: ${after.length}`);
        assert.deepEqual(countBodies(after), { 'pod-a1': after.length }, `after the change went to pod-a1; all: ${JSON.stringify(countBodies(results))}`);
      } finally {
        await rm(join(lab.manifestsDir, 'udp-move.json'));
      }
    });

    const DRAINS = [
      { where: 'on the other node', name: 'drain-remote', clusterIP: '10.96.10.9', nodePort: 30901, draining: ['pod-b1', POD.b1, 'node-b'], next: ['pod-a1', POD.a1, 'node-a'] },
      { where: 'on the entry node', name: 'drain-local', clusterIP: '10.96.10.10', nodePort: 30902, draining: ['pod-a2', POD.a2, 'node-a'], next: ['pod-b2', POD.b2, 'node-b'] },
    ] as const;
    for (const { where, name, clusterIP, nodePort, draining, next } of DRAINS) {
      test(`a long-lived connection through a NodePort outlives its endpoint ${where}: terminating, then gone from the Service, as kube-proxy's conntrack keeps it`, async () => {
        const [drainingPod, drainingAddress, drainingNode] = draining;
        const [nextPod, nextAddress, nextNode] = next;
        const manifest = (endpoints: Array<{ address: string; nodeName: string; ready: boolean }>) => [
          service(name, { type: 'NodePort', clusterIP, ports: [port({ port: ECHO_PORT, targetPort: ECHO_PORT, nodePort })] }),
          {
            ...slice(name, ECHO_PORT, []),
            endpoints: endpoints.map(({ address, nodeName, ready }) => ({
              addresses: [address],
              nodeName,
              conditions: ready ? { ready: true, serving: true, terminating: false } : { ready: false, serving: true, terminating: true },
            })),
          },
        ];
        const onlyBackend = (address: string) => (l: ListedServicePort[]) => {
          const backends = l.find((s) => s.name === name)?.backends ?? [];
          return backends.length === 1 && backends[0]!.address === address;
        };
        const file = `${name}.json`;
        const connect = () => lab.spawn(EXTERNAL.name, [process.execPath, PROBE_SCRIPT, 'stream', NODE_A, String(nodePort), '--interval', '20']);
        await writeManifest(file, manifest([{ address: drainingAddress, nodeName: drainingNode, ready: true }]));
        await untilListed('node-a', `${name} on ${drainingPod}`, onlyBackend(drainingAddress));
        const stream = connect();
        try {
          assert.equal(await stream.waitFor(/^connected/, 3000), `connected ${drainingPod}`);
          await writeManifest(file, manifest([{ address: drainingAddress, nodeName: drainingNode, ready: false }, { address: nextAddress, nodeName: nextNode, ready: true }]));
          await untilListed('node-a', `new connections to ${nextPod} only`, onlyBackend(nextAddress));
          const terminatingAt = Date.now();
          await new Promise((r) => setTimeout(r, 300));
          await writeManifest(file, manifest([{ address: nextAddress, nodeName: nextNode, ready: true }]));
          await new Promise((r) => setTimeout(r, 300));
          const goneAt = Date.now();
          await new Promise((r) => setTimeout(r, 300));
          await stream.close();
          const { results } = parseProbeOutput(stream.stdout());
          assertAllAnswered(results, `exchanges on the connection to ${drainingPod}`);
          assert.ok(results.filter((r) => r.at > terminatingAt && r.at < goneAt).length >= 3, `exchanges while ${drainingPod} was terminating`);
          assert.ok(results.filter((r) => r.at > goneAt).length >= 3, `exchanges after ${drainingPod} left the Service: ${results.length} in all`);
          const fresh = connect();
          try {
            assert.equal(await fresh.waitFor(/^connected/, 3000), `connected ${nextPod}`, 'a new connection goes to the ready endpoint');
          } finally {
            await fresh.close();
          }
        } finally {
          await stream.close();
          await rm(join(lab.manifestsDir, file));
        }
      });
    }

    if (mode === 'ebpf') {
      test('a tracked flow goes where its kpx_ct entry says until the entry is refreshed, then where the FIB says', async () => {
        const stream = lab.spawn(EXTERNAL.name, [process.execPath, PROBE_SCRIPT, 'stream', NODE_A, '30900', '--interval', '20']);
        assert.equal(await stream.waitFor(/^connected/, 3000), 'connected pod-b2');
        await new Promise((r) => setTimeout(r, 100));
        // The flow's forward entry on node-a (and those of earlier tests' streams, still tracked: it is one of them), given a
        // next hop and a MAC nobody has, stamped now: its next refresh is a second away.
        const ctFd = objGet(join(lab.node('node-a').bpffsPath, 'kpx_ct'));
        let poisonedAt: number;
        try {
          const streams = mapEntryBatches(ctFd, ctKey.size, ctValue.size)
            .flatMap((b) => Array.from({ length: b.count }, (_, i) => ({ key: b.keys.subarray(i * ctKey.size, (i + 1) * ctKey.size), value: ctValue.decode(b.values, i * ctValue.size) })))
            .filter(({ key }) => {
              const k = ctKey.decode(key);
              return k.saddr === EXTERNAL.address && k.daddr === NODE_A && k.dport === 30900;
            });
          assert.ok(streams.length > 0, 'the stream is tracked on node-a');
          assert.ok(streams.every(({ value }) => value.fib !== CT_FIB.none), 'each entry holds the next hop its packets took');
          poisonedAt = Date.now();
          for (const { key, value } of streams) {
            mapUpdate(ctFd, key, ctValue.encode({ ...value, fib_nexthop: '172.18.0.250', fib_dmac: '02:6b:70:00:00:fa', last_seen_ns: process.hrtime.bigint() }));
          }
        } finally {
          closeSync(ctFd);
        }
        await new Promise((r) => setTimeout(r, 2500));
        await stream.close();
        const { results } = parseProbeOutput(stream.stdout());
        assertAllAnswered(results, 'exchanges on the stream');
        const after = results.filter((r) => r.at >= poisonedAt);
        const gaps = after.slice(1).map((r, i) => r.at - after[i]!.at);
        assert.ok(Math.max(...gaps) >= 600, `the flow stalled while its entry sent it nowhere (longest gap ${Math.max(...gaps)} ms)`);
        assert.ok(after.filter((r) => r.at > poisonedAt + 1600).length >= 3, 'and went on once the refresh looked the route up again');
      });
    }

    test("a connection through a NodePort survives a restart of the entry node's agent", async () => {
      const stream = lab.spawn(EXTERNAL.name, [process.execPath, PROBE_SCRIPT, 'stream', NODE_A, '30900', '--interval', '20']);
      assert.equal(await stream.waitFor(/^connected/, 3000), 'connected pod-b2');
      const entry = NODES.findIndex((n) => n.name === 'node-a');
      await agents[entry]!.close();
      const stoppedAt = Date.now();
      // No agent for a while: the pinned links, maps and flows keep serving.
      await new Promise((r) => setTimeout(r, 200));
      agents[entry] = await startLabAgent(lab, { node: 'node-a', extraArgs });
      const restartedAt = Date.now();
      await new Promise((r) => setTimeout(r, 200));
      await stream.close();
      const { results } = parseProbeOutput(stream.stdout());
      assertAllAnswered(results, 'exchanges across the restart');
      assert.ok(results.some((r) => r.at > stoppedAt && r.at < restartedAt), 'exchanges while no agent ran');
      assert.ok(results.filter((r) => r.at > restartedAt).length >= 3, `exchanges after the restart: ${results.length} in all`);
      assertAllAnswered(await fromOutside(['http', NODE_A, '30080', '--count', '5']), 'new flows after the restart');
    });

    test('an address added to a node while its agent runs answers NodePorts within seconds, and one removed leaves them', async (t) => {
      const added = '172.18.0.42';
      const nodePortAddresses = async (): Promise<string[]> => {
        const r = await lab.exec('node-a', kpxArgv(['list', '--bpffs', lab.node('node-a').bpffsPath]));
        assert.equal(r.code, 0, r.stderr);
        return /^NodePorts \(\*\) answer on: (.*)$/m.exec(r.stdout)?.[1]?.split(', ') ?? [];
      };
      const until = async (what: string, predicate: (addresses: string[]) => boolean): Promise<number> => {
        const start = performance.now();
        while (!predicate(await nodePortAddresses())) {
          if (performance.now() - start > 5000) assert.fail(`node-a did not show ${what} within 5 s`);
        }
        return performance.now() - start;
      };
      const address = (op: 'add' | 'del') => lab.exec('node-a', ['ip', 'addr', op, `${added}/24`, 'dev', 'eth0']);
      assert.ok(!(await nodePortAddresses()).includes(added));
      try {
        assert.equal((await address('add')).code, 0);
        t.diagnostic(`shown after ${(await until(`${added} among the NodePort addresses`, (a) => a.includes(added))).toFixed(0)} ms`);
        const answers = await fromOutside(['http', added, '30080', '--count', '6']);
        assertAllAnswered(answers, `${added}:30080 from outside`);
        assert.ok(Object.keys(countBodies(answers)).every((pod) => ['pod-a1', 'pod-b1'].includes(pod)), 'answered by web');
      } finally {
        await address('del');
      }
      t.diagnostic(`gone after ${(await until(`${added} gone`, (a) => !a.includes(added))).toFixed(0)} ms`);
      assertAllAnswered(await fromOutside(['http', NODE_A, '30080', '--count', '3']), 'the other node addresses still answer');
    });

    test('/healthz and /livez answer on port 10256 as kube-proxy\'s do; other paths are not found', async () => {
      for (const path of ['/healthz', '/livez']) {
        const reply = await get(EXTERNAL.name, `http://${NODE_A}:10256${path}`);
        assert.equal(reply.status, 200, `${path}: ${reply.body}`);
        assert.equal(reply.headers['content-type'], 'application/json');
        const body = JSON.parse(reply.body) as Record<string, unknown>;
        assert.deepEqual(Object.keys(body).sort(), path === '/healthz' ? ['currentTime', 'lastUpdated', 'nodeEligible'] : ['currentTime', 'lastUpdated']);
        assert.ok(Math.abs(Date.parse(body.currentTime as string) - Date.now()) < 5000, `${path}: currentTime ${String(body.currentTime)}`);
        if (path === '/healthz') assert.equal(body.nodeEligible, true);
      }
      assert.equal((await get(EXTERNAL.name, `http://${NODE_A}:10256/metrics`)).status, 404);
    });

    test("/metrics on 127.0.0.1:10249 has kube-proxy's sync metrics (and, in ebpf mode, the packet programs' path counters); /proxyMode names the datapath", async () => {
      assertAllAnswered(await fromOutside(['http', NODE_A, '30080', '--count', '2']), 'new flows through node-a');
      const metrics = await get('node-a', 'http://127.0.0.1:10249/metrics');
      assert.equal(metrics.status, 200, metrics.body);
      assert.match(metrics.headers['content-type'] ?? '', /^text\/plain/);
      const value = (sample: string) => Number(new RegExp(`^${sample.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(metrics.body)?.[1]);
      assert.ok(Math.abs(value('kubeproxy_sync_proxy_rules_last_timestamp_seconds') - Date.now() / 1000) < 120, 'a sync landed lately');
      assert.ok(value('kubeproxy_sync_full_proxy_rules_duration_seconds_count') >= 1, 'the first sync was a full one');
      assert.ok(value('kubeproxy_sync_proxy_rules_duration_seconds_count') >= value('kubeproxy_sync_full_proxy_rules_duration_seconds_count'));
      assert.ok(value('process_resident_memory_bytes') > 0);
      if (mode === 'ebpf') assert.ok(value('kpx_packets_total{path="new_flow"}') > 0, 'new flows counted');
      else assert.doesNotMatch(metrics.body, /^kpx_packets_total/m);
      const proxyMode = await get('node-a', 'http://127.0.0.1:10249/proxyMode');
      assert.deepEqual([proxyMode.status, proxyMode.body], [200, mode]);
      assert.equal((await get(EXTERNAL.name, `http://${NODE_A}:10249/metrics`)).status, 0, 'on loopback only, as kube-proxy by default');
    });

    test('a LoadBalancer with externalTrafficPolicy Local: its health check node port answers 200 only on the node with a ready endpoint, and follows it', async () => {
      const check = async (address: string) => {
        const reply = await get(EXTERNAL.name, `http://${address}:${HC_NODE_PORT}/`);
        return { status: reply.status, endpoints: reply.headers['x-load-balancing-endpoint-weight'], body: reply.status ? JSON.parse(reply.body) as unknown : reply.body };
      };
      const expected = (status: number, localEndpoints: number) => ({
        status,
        endpoints: String(localEndpoints),
        body: { service: { namespace: 'default', name: 'hc' }, localEndpoints, serviceProxyHealthy: true },
      });
      assert.deepEqual(await check(NODE_A), expected(200, 1));
      assert.deepEqual(await check(NODE_B), expected(503, 0));
      if (mode === 'iptables') {
        const saved = await lab.exec('node-a', ['iptables-save', '-t', 'filter']);
        // As iptables-save prints the rule: the protocol match first.
        assert.match(saved.stdout, new RegExp(`-A KUBE-NODEPORTS -p tcp -m comment --comment "default/hc:p health check node port" -m tcp --dport ${HC_NODE_PORT} -j ACCEPT`));
      }
      await writeManifest('hc.json', healthCheckedManifest([POD.b1, 'node-b']));
      const start = performance.now();
      while ((await check(NODE_B)).status !== 200) {
        if (performance.now() - start > 5000) assert.fail(`node-b's health check did not turn 200 within 5 s: ${JSON.stringify(await check(NODE_B))}`);
      }
      assert.deepEqual(await check(NODE_B), expected(200, 1));
      assert.deepEqual(await check(NODE_A), expected(503, 0));
      await writeManifest('hc.json', healthCheckedManifest([POD.a1, 'node-a']));
    });

    // Restarts the agents with another flag, so it runs last.
    test(`--nodeport-addresses ${WIRE_CIDR}: 127.0.0.1:nodePort stops answering, nodeIP:nodePort still works`, async () => {
      await Promise.all(agents.map((a) => a.close()));
      await startAgents([...extraArgs, '--nodeport-addresses', WIRE_CIDR]);
      assert.deepEqual(countBodies(await fromInside('node-a', ['http', '127.0.0.1', '30080', '--timeout', '500'])), { 'error:ECONNREFUSED': 1 });
      assertAllAnswered(await fromInside('node-a', ['http', NODE_A, '30080', '--count', '3']), 'node-a to its own address');
      assertAllAnswered(await fromOutside(['http', NODE_A, '30080', '--count', '3']), 'from outside via node-a');
    });
  });
}
