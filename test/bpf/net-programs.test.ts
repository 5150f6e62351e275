/**
 * kpx_net.o's tc and XDP programs run with BPF_PROG_TEST_RUN on fixture
 * frames: the maps are filled from Service and EndpointSlice objects through
 * buildModel and the datapath's sync, then each case is a frame in, a
 * verdict and a frame out, compared field by field with a frame built from
 * scratch (so its checksums are recomputed, never derived incrementally).
 *
 * The node under test ("node-a", NODE_TOPOLOGY of the test bed) lives in
 * the bench's own network namespace; of its addresses only eth0's answers
 * NodePorts.
 */
import assert from 'node:assert/strict';
import { release } from 'node:os';
import { after, before, describe, test } from 'node:test';
import { CT_FIB, CT_FLAGS, IPPROTO, backendValue, u32Key, type CtKey, type CtValue, type StatName } from '../../src/contract/codecs.js';
import type { Stats } from '../../src/datapath/stats.js';
import { kernelHz } from '../../src/datapath/kernel-config.js';
import type { ObjectSnapshot } from '../../src/k8s/types.js';
import { buildModel } from '../../src/model/build.js';
import type { ModelOptions } from '../../src/model/types.js';
import {
  CLIENT,
  NODE_B,
  NODE_C,
  NODE_ETH0,
  NODE_ETH1,
  NODE_SYSCTLS,
  NODE_TOPOLOGY,
  TC_ACT,
  XDP_ACT,
  bpfTestBedUnavailable,
  createBpfTestBed,
  type BpfTestBed,
  type NetProgram,
} from '../fixtures/bpf-test-bed.js';
import {
  IPPROTO_TCP,
  arpRequestFrame,
  describeFrame,
  frameDifferences,
  icmpEchoFrame,
  ipChecksumValid,
  ipFragmentFrame,
  l4ChecksumValid,
  parseFrame,
  tcpFrame,
  udpFrame,
  type TcpSpec,
  type UdpSpec,
} from '../fixtures/packets.js';

// The Services, each with the one thing its cases need.
/** One backend on this node. */
const WEB = { clusterIP: '10.96.0.10', nodePort: 30080, pod: '10.244.1.5', podPort: 8080 };
/** One backend on node-b, a TCP and a UDP port. */
const API = { clusterIP: '10.96.0.11', nodePort: 30081, pod: '10.244.2.7', podPort: 8443, udpNodePort: 30053, udpPodPort: 5353 };
/** Two backends on node-b. */
const POOL = { clusterIP: '10.96.0.12', nodePort: 30082, pods: ['10.244.2.20', '10.244.2.21'], podPort: 8080 };
/** One backend on node-c, reached through eth1. */
const FAR = { clusterIP: '10.96.0.13', nodePort: 30083, pod: '10.244.3.9', podPort: 9000 };
/** A LoadBalancer with an externalIP, one backend on node-b. */
const EDGE = {
  clusterIP: '10.96.0.14',
  port: 443,
  nodePort: 30443,
  externalIP: '192.0.2.10',
  lbIP: '198.51.100.20',
  pod: '10.244.2.30',
  podPort: 8443,
};
/** No endpoints at all. */
const EMPTY = { clusterIP: '10.96.0.15', nodePort: 30099 };

function service(name: string, spec: Record<string, unknown>, status?: Record<string, unknown>) {
  const metadata = { name, namespace: 'default' };
  return { apiVersion: 'v1', kind: 'Service' as const, metadata, spec, ...(status ? { status } : {}), origin: 'bpf-test' };
}

type SlicePort = { name?: string; port: number; protocol: string };

function slice(name: string, endpoints: Array<[ip: string, nodeName: string]>, ports: SlicePort[]) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice' as const,
    metadata: { name: `${name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    endpoints: endpoints.map(([ip, nodeName]) => ({ addresses: [ip], conditions: { ready: true }, nodeName })),
    ports,
    origin: 'bpf-test',
  };
}

const SNAPSHOT: ObjectSnapshot = {
  services: [
    service('web', { type: 'NodePort', clusterIP: WEB.clusterIP, ports: [{ port: 80, targetPort: WEB.podPort, nodePort: WEB.nodePort }] }),
    service('api', {
      type: 'NodePort',
      clusterIP: API.clusterIP,
      ports: [
        { name: 'http', port: 80, protocol: 'TCP', targetPort: API.podPort, nodePort: API.nodePort },
        { name: 'dns', port: 53, protocol: 'UDP', targetPort: API.udpPodPort, nodePort: API.udpNodePort },
      ],
    }),
    service('pool', { type: 'NodePort', clusterIP: POOL.clusterIP, ports: [{ port: 80, targetPort: POOL.podPort, nodePort: POOL.nodePort }] }),
    service('far', { type: 'NodePort', clusterIP: FAR.clusterIP, ports: [{ port: 80, targetPort: FAR.podPort, nodePort: FAR.nodePort }] }),
    service(
      'edge',
      {
        type: 'LoadBalancer',
        clusterIP: EDGE.clusterIP,
        externalIPs: [EDGE.externalIP],
        ports: [{ port: EDGE.port, targetPort: EDGE.podPort, nodePort: EDGE.nodePort }],
      },
      { loadBalancer: { ingress: [{ ip: EDGE.lbIP }] } },
    ),
    service('empty', { type: 'NodePort', clusterIP: EMPTY.clusterIP, ports: [{ port: 80, nodePort: EMPTY.nodePort }] }),
  ],
  endpointSlices: [
    slice('web', [[WEB.pod, 'node-a']], [{ port: WEB.podPort, protocol: 'TCP' }]),
    slice(
      'api',
      [[API.pod, 'node-b']],
      [
        { name: 'http', port: API.podPort, protocol: 'TCP' },
        { name: 'dns', port: API.udpPodPort, protocol: 'UDP' },
      ],
    ),
    slice('pool', POOL.pods.map((ip) => [ip, 'node-b']), [{ port: POOL.podPort, protocol: 'TCP' }]),
    slice('far', [[FAR.pod, 'node-c']], [{ port: FAR.podPort, protocol: 'TCP' }]),
    slice('edge', [[EDGE.pod, 'node-b']], [{ port: EDGE.podPort, protocol: 'TCP' }]),
    slice('empty', [], [{ port: 80, protocol: 'TCP' }]),
  ],
  endpoints: [],
};

const OPTIONS: ModelOptions = {
  serviceClusterIPRange: '10.96.0.0/12',
  allocateClusterIPs: false,
  nodeName: 'node-a',
  serviceNodePortRange: { min: 30000, max: 32767 },
  allocateNodePorts: false,
  nodePortAddresses: [NODE_ETH0.ip],
};

const SNAT_PORT_MIN = 61000;
const PAYLOAD = Buffer.from('GET / HTTP/1.1\r\n\r\n!'); // odd length: the checksums cover a padded last word
const UDP_PAYLOAD = Buffer.from('kpx-query');

/** A frame as the client puts it on eth0's wire. */
function fromClient(spec: Omit<TcpSpec, 'src'>): TcpSpec {
  return { ethSrc: CLIENT.mac, ethDst: NODE_ETH0.mac, src: CLIENT.ip, ...spec };
}

function udpFromClient(spec: Omit<UdpSpec, 'src'>): UdpSpec {
  return { ethSrc: CLIENT.mac, ethDst: NODE_ETH0.mac, src: CLIENT.ip, payload: UDP_PAYLOAD, ...spec };
}

/**
 * The frame with 4 bytes of IPv4 options (three NOPs and an end of list)
 * after the fixed header, its header checksum recomputed. The L4 checksum
 * stays right: options are not in the pseudo-header.
 */
function withIpOptions(frame: Buffer): Buffer {
  const ipStart = 14;
  const out = Buffer.concat([frame.subarray(0, ipStart + 20), Buffer.from([1, 1, 1, 0]), frame.subarray(ipStart + 20)]);
  out[ipStart] = 0x46;
  out.writeUInt16BE(out.readUInt16BE(ipStart + 2) + 4, ipStart + 2);
  out.writeUInt16BE(0, ipStart + 10);
  let sum = 0;
  for (let i = ipStart; i < ipStart + 24; i += 2) sum += out.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  out.writeUInt16BE(~sum & 0xffff, ipStart + 10);
  return out;
}

const VERDICT_NAMES: Record<'tc' | 'xdp', Record<number, string>> = {
  tc: Object.fromEntries(Object.entries(TC_ACT).map(([name, v]) => [v, `TC_ACT_${name}`])),
  xdp: Object.fromEntries(Object.entries(XDP_ACT).map(([name, v]) => [v, `XDP_${name}`])),
};

function verdictName(program: NetProgram, verdict: number): string {
  return VERDICT_NAMES[program === 'kpx_xdp' ? 'xdp' : 'tc'][verdict] ?? `unknown verdict ${verdict}`;
}

const unavailable = bpfTestBedUnavailable();

/**
 * Every remote-backend row needs BPF_FIB_LOOKUP_SRC (Linux 6.7) for the SNAT
 * source: without it bpf_fib_lookup rejects the flags and the program drops.
 */
function fibLookupSrcMissing(): string | undefined {
  const [major = 0, minor = 0] = release().split(/[.-]/).map(Number);
  return major > 6 || (major === 6 && minor >= 7) ? undefined : `kernel ${release()} lacks BPF_FIB_LOOKUP_SRC (Linux 6.7)`;
}
const remote = { skip: fibLookupSrcMissing() };

/**
 * The programs' clock: jiffies where the kernel's CONFIG_HZ is known, the
 * coarse clock helper where it is not (kpx_now_ns); every case runs with each.
 */
const CLOCKS = [
  { name: "jiffies, the kernel's CONFIG_HZ", kernelHz: kernelHz() },
  { name: 'bpf_ktime_get_coarse_ns, CONFIG_HZ unknown', kernelHz: 0 },
];

for (const clock of CLOCKS) describe(`kpx_net.o under BPF_PROG_TEST_RUN (clock: ${clock.name})`, { skip: unavailable }, () => {
  let bed: BpfTestBed;

  before(async () => {
    const model = buildModel(SNAPSHOT, OPTIONS);
    assert.deepEqual(model.rejected, [], 'the fixture Services are valid');
    bed = await createBpfTestBed({ ip: NODE_TOPOLOGY, sysctls: NODE_SYSCTLS, kernelHz: clock.kernelHz });
    bed.sync(model);
  });

  after(() => bed?.close());

  /** Runs the program and checks the verdict; returns the frame out. */
  function run(program: NetProgram, input: Buffer, device: string, verdict: number): Buffer {
    const result = bed.run(program, input, device);
    assert.equal(verdictName(program, result.verdict), verdictName(program, verdict), `${program} verdict on ${describeFrame(input)} (${device})`);
    return result.frame;
  }

  /** The frame out equals the expected one in every field, and its checksums verify from scratch. */
  function assertFrame(actual: Buffer, expected: Buffer): void {
    assert.deepEqual(frameDifferences(expected, actual), [], 'fields that differ (expected -> actual)');
    const p = parseFrame(actual);
    if (p.ip) assert.ok(ipChecksumValid(actual), 'IPv4 header checksum');
    if (p.tcp || p.udp) assert.ok(l4ChecksumValid(actual), 'TCP/UDP checksum');
  }

  /** The kpx_stats counters that moved since `before`, by how much. */
  function statsMoved(before: Stats): Partial<Record<StatName, number>> {
    const now = bed.stats();
    const names = Object.keys(now) as StatName[];
    return Object.fromEntries(names.filter((name) => now[name] !== before[name]).map((name) => [name, Number(now[name] - before[name])]));
  }

  function assertSnatPort(port: number): void {
    assert.ok(port >= SNAT_PORT_MIN && port <= 65535, `SNAT port ${port} in [${SNAT_PORT_MIN}, 65535]`);
  }

  type CtFlow = Omit<CtValue, 'last_seen_ns' | 'fib' | 'fib_ifindex' | 'fib_nexthop' | 'fib_dmac' | 'fib_smac'>;

  /**
   * A kpx_ct entry without its timestamp, which only has to be CLOCK_MONOTONIC of the last few seconds (the
   * programs' clock is the tick, from jiffies where the kernel's HZ is known), and its kept FIB result (a test of its own).
   */
  function ctEntry(key: Omit<CtKey, 'proto'>, proto: number = IPPROTO.TCP): CtFlow | undefined {
    const entry = bed.ct({ ...key, proto });
    if (!entry) return undefined;
    const { last_seen_ns, fib: _fib, fib_ifindex: _ifindex, fib_nexthop: _nexthop, fib_dmac: _dmac, fib_smac: _smac, ...rest } = entry;
    const age = process.hrtime.bigint() - last_seen_ns;
    assert.ok(age > -1_000_000_000n && age < 10_000_000_000n, `last_seen_ns is CLOCK_MONOTONIC of the last seconds: ${Number(age) / 1e9} s ago`);
    return rest;
  }

  function backendId(addr: string, port: number): number {
    for (const { key, value } of bed.tables().backends.values()) {
      const backend = backendValue.decode(value);
      if (backend.addr === addr && backend.port === port) return u32Key.decode(key).id;
    }
    throw new Error(`no backend ${addr}:${port} in kpx_backends`);
  }

  describe('tc ingress and egress', () => {
    test('NodePort to a local backend: DNAT only, both conntrack entries; the reply leaves through tc egress translated back', () => {
      let stats = bed.stats();
      const syn = fromClient({ sport: 40000, dst: NODE_ETH0.ip, dport: WEB.nodePort });
      const out = run('kpx_tc_ingress', tcpFrame(syn), 'eth0', TC_ACT.OK);
      assertFrame(out, tcpFrame({ ...syn, dst: WEB.pod, dport: WEB.podPort }));
      assert.deepEqual(statsMoved(stats), { newFlow: 1 }, 'kpx_stats: a new flow');

      assert.deepEqual(ctEntry({ saddr: CLIENT.ip, daddr: NODE_ETH0.ip, sport: 40000, dport: WEB.nodePort }), {
        saddr: CLIENT.ip,
        daddr: WEB.pod,
        sport: 40000,
        dport: WEB.podPort,
        backend_id: backendId(WEB.pod, WEB.podPort),
        flags: 0,
      });
      assert.deepEqual(ctEntry({ saddr: WEB.pod, daddr: CLIENT.ip, sport: WEB.podPort, dport: 40000 }), {
        saddr: NODE_ETH0.ip,
        daddr: CLIENT.ip,
        sport: WEB.nodePort,
        dport: 40000,
        backend_id: 0,
        flags: CT_FLAGS.reply,
      });

      const synAck: TcpSpec = {
        ethSrc: NODE_ETH0.mac,
        ethDst: CLIENT.mac,
        src: WEB.pod,
        dst: CLIENT.ip,
        sport: WEB.podPort,
        dport: 40000,
        flags: ['syn', 'ack'],
        ttl: 63,
      };
      stats = bed.stats();
      const reply = run('kpx_tc_egress', tcpFrame(synAck), 'eth0', TC_ACT.OK);
      assertFrame(reply, tcpFrame({ ...synAck, src: NODE_ETH0.ip, sport: WEB.nodePort }));
      assert.deepEqual(statsMoved(stats), { localReply: 1 }, 'kpx_stats: a local reply');

      // The local backend's reply is egress's to translate: ingress leaves it alone.
      stats = bed.stats();
      const replyAtIngress = tcpFrame(synAck);
      assertFrame(run('kpx_tc_ingress', replyAtIngress, 'eth0', TC_ACT.OK), replyAtIngress);
      assert.deepEqual(statsMoved(stats), {}, 'kpx_stats: not counted');

      const ack = fromClient({ sport: 40000, dst: NODE_ETH0.ip, dport: WEB.nodePort, flags: ['ack'], payload: PAYLOAD });
      assertFrame(run('kpx_tc_ingress', tcpFrame(ack), 'eth0', TC_ACT.OK), tcpFrame({ ...ack, dst: WEB.pod, dport: WEB.podPort }));
      assert.deepEqual(statsMoved(stats), { forward: 1 }, 'kpx_stats: an established flow forwarded');
    });

    test('NodePort to a remote backend: DNAT + SNAT to the FIB source, TTL-1, redirect; the reply is translated back', remote, () => {
      let stats = bed.stats();
      const syn = fromClient({ sport: 40001, dst: NODE_ETH0.ip, dport: API.nodePort });
      const out = run('kpx_tc_ingress', tcpFrame(syn), 'eth0', TC_ACT.REDIRECT);
      assert.deepEqual(statsMoved(stats), { newFlow: 1 }, 'kpx_stats: a new flow');
      const snatPort = parseFrame(out).tcp!.sport;
      assertSnatPort(snatPort);
      // Ethernet addresses stay: bpf_redirect_neigh fills them in at transmit, which a test run never reaches.
      assertFrame(out, tcpFrame({ ...syn, src: NODE_ETH0.ip, sport: snatPort, dst: API.pod, dport: API.podPort, ttl: 63 }));

      assert.deepEqual(ctEntry({ saddr: CLIENT.ip, daddr: NODE_ETH0.ip, sport: 40001, dport: API.nodePort }), {
        saddr: NODE_ETH0.ip,
        daddr: API.pod,
        sport: snatPort,
        dport: API.podPort,
        backend_id: backendId(API.pod, API.podPort),
        flags: CT_FLAGS.redirect,
      });
      assert.deepEqual(ctEntry({ saddr: API.pod, daddr: NODE_ETH0.ip, sport: API.podPort, dport: snatPort }), {
        saddr: NODE_ETH0.ip,
        daddr: CLIENT.ip,
        sport: API.nodePort,
        dport: 40001,
        backend_id: 0,
        flags: CT_FLAGS.reply | CT_FLAGS.redirect,
      });

      const synAck: TcpSpec = {
        ethSrc: NODE_B.mac,
        ethDst: NODE_ETH0.mac,
        src: API.pod,
        dst: NODE_ETH0.ip,
        sport: API.podPort,
        dport: snatPort,
        flags: ['syn', 'ack'],
        ttl: 63,
      };
      stats = bed.stats();
      const reply = run('kpx_tc_ingress', tcpFrame(synAck), 'eth0', TC_ACT.REDIRECT);
      assertFrame(reply, tcpFrame({ ...synAck, src: NODE_ETH0.ip, sport: API.nodePort, dst: CLIENT.ip, dport: 40001, ttl: 62 }));
      assert.deepEqual(statsMoved(stats), { reply: 1 }, 'kpx_stats: a remote reply');

      stats = bed.stats();
      const ack = fromClient({ sport: 40001, dst: NODE_ETH0.ip, dport: API.nodePort, flags: ['ack'], payload: PAYLOAD });
      const second = run('kpx_tc_ingress', tcpFrame(ack), 'eth0', TC_ACT.REDIRECT);
      assert.deepEqual(statsMoved(stats), { forward: 1 }, 'kpx_stats: an established flow forwarded');
      assertFrame(second, tcpFrame({ ...ack, src: NODE_ETH0.ip, sport: snatPort, dst: API.pod, dport: API.podPort, ttl: 63 }));
    });

    test('a remote backend behind another interface is SNATed to that interface address (the FIB source)', remote, () => {
      const syn = fromClient({ sport: 40002, dst: NODE_ETH0.ip, dport: FAR.nodePort });
      const out = run('kpx_tc_ingress', tcpFrame(syn), 'eth0', TC_ACT.REDIRECT);
      const snatPort = parseFrame(out).tcp!.sport;
      assertSnatPort(snatPort);
      assertFrame(out, tcpFrame({ ...syn, src: NODE_ETH1.ip, sport: snatPort, dst: FAR.pod, dport: FAR.podPort, ttl: 63 }));
    });

    test('a tracked flow keeps its backend and SNAT port over later packets', remote, () => {
      const syn = fromClient({ sport: 40003, dst: NODE_ETH0.ip, dport: POOL.nodePort });
      const first = parseFrame(run('kpx_tc_ingress', tcpFrame(syn), 'eth0', TC_ACT.REDIRECT));
      assert.ok(POOL.pods.includes(first.ip!.dst), `backend ${first.ip!.dst} is one of ${POOL.pods.join(', ')}`);
      assertSnatPort(first.tcp!.sport);
      for (let seq = 1001; seq < 1009; seq++) {
        const ack = fromClient({ sport: 40003, dst: NODE_ETH0.ip, dport: POOL.nodePort, flags: ['ack'], seq, payload: PAYLOAD });
        const out = run('kpx_tc_ingress', tcpFrame(ack), 'eth0', TC_ACT.REDIRECT);
        assertFrame(out, tcpFrame({ ...ack, src: NODE_ETH0.ip, sport: first.tcp!.sport, dst: first.ip!.dst, dport: POOL.podPort, ttl: 63 }));
      }
    });

    test('a tracked flow keeps the next hop its first packet was routed by, and looks it up again when its entry is refreshed', remote, () => {
      const key = { saddr: CLIENT.ip, daddr: NODE_ETH0.ip, sport: 40004, dport: API.nodePort, proto: IPPROTO.TCP };
      const packet = (seq: number) => tcpFrame(fromClient({ sport: 40004, dst: NODE_ETH0.ip, dport: API.nodePort, flags: seq ? ['ack'] : ['syn'], seq }));
      run('kpx_tc_ingress', packet(0), 'eth0', TC_ACT.REDIRECT);
      const kept = bed.ct(key)!;
      assert.deepEqual([kept.fib, kept.fib_ifindex, kept.fib_nexthop], [CT_FIB.nexthop, bed.ifindex('eth0'), NODE_B.ip], 'written with the next hop towards API.pod');

      // A next hop no lookup gives: it stays, so packets follow the entry rather than the FIB.
      bed.setCt(key, { ...kept, fib_nexthop: '172.18.0.99' });
      run('kpx_tc_ingress', packet(1002), 'eth0', TC_ACT.REDIRECT);
      assert.equal(bed.ct(key)!.fib_nexthop, '172.18.0.99');

      // Two seconds idle: the packet refreshes the entry and looks the route up again.
      bed.setCt(key, { ...bed.ct(key)!, last_seen_ns: process.hrtime.bigint() - 2_000_000_000n });
      run('kpx_tc_ingress', packet(1003), 'eth0', TC_ACT.REDIRECT);
      const again = bed.ct(key)!;
      assert.deepEqual([again.fib, again.fib_nexthop], [CT_FIB.nexthop, NODE_B.ip]);
    });

    test('a packet with IPv4 options is rewritten around them (header and ports stored apart)', remote, () => {
      const syn = fromClient({ sport: 40004, dst: NODE_ETH0.ip, dport: API.nodePort, payload: PAYLOAD });
      const input = withIpOptions(tcpFrame(syn));
      assert.ok(ipChecksumValid(input) && l4ChecksumValid(input), 'the fixture frame is valid');
      const out = run('kpx_tc_ingress', input, 'eth0', TC_ACT.REDIRECT);
      const snatPort = parseFrame(out).tcp!.sport;
      assertSnatPort(snatPort);
      assertFrame(out, withIpOptions(tcpFrame({ ...syn, src: NODE_ETH0.ip, sport: snatPort, dst: API.pod, dport: API.podPort, ttl: 63 })));
    });

    for (const checksum of [true, false]) {
      const label = checksum ? 'with a checksum' : 'without checksum (0 stays 0)';
      const sport = checksum ? 40010 : 40011;
      test(`UDP NodePort to a remote backend and back, ${label}`, remote, () => {
        const query = udpFromClient({ sport, dst: NODE_ETH0.ip, dport: API.udpNodePort, checksum });
        const out = run('kpx_tc_ingress', udpFrame(query), 'eth0', TC_ACT.REDIRECT);
        const snatPort = parseFrame(out).udp!.sport;
        assertSnatPort(snatPort);
        assertFrame(out, udpFrame({ ...query, src: NODE_ETH0.ip, sport: snatPort, dst: API.pod, dport: API.udpPodPort, ttl: 63 }));
        if (!checksum) assert.equal(parseFrame(out).udp!.checksum, 0);

        const answer: UdpSpec = {
          ethSrc: NODE_B.mac,
          ethDst: NODE_ETH0.mac,
          src: API.pod,
          dst: NODE_ETH0.ip,
          sport: API.udpPodPort,
          dport: snatPort,
          payload: UDP_PAYLOAD,
          checksum,
          ttl: 63,
        };
        const reply = run('kpx_tc_ingress', udpFrame(answer), 'eth0', TC_ACT.REDIRECT);
        assertFrame(reply, udpFrame({ ...answer, src: NODE_ETH0.ip, sport: API.udpNodePort, dst: CLIENT.ip, dport: sport, ttl: 62 }));
        if (!checksum) assert.equal(parseFrame(reply).udp!.checksum, 0);
      });
    }

    for (const [kind, address, sport] of [
      ['externalIP', EDGE.externalIP, 40020],
      ['LoadBalancer IP', EDGE.lbIP, 40021],
    ] as const) {
      test(`${kind} ${address}:${EDGE.port} from outside goes to its remote backend`, remote, () => {
        const syn = fromClient({ sport, dst: address, dport: EDGE.port });
        const out = run('kpx_tc_ingress', tcpFrame(syn), 'eth0', TC_ACT.REDIRECT);
        const snatPort = parseFrame(out).tcp!.sport;
        assertSnatPort(snatPort);
        assertFrame(out, tcpFrame({ ...syn, src: NODE_ETH0.ip, sport: snatPort, dst: EDGE.pod, dport: EDGE.podPort, ttl: 63 }));
      });
    }

    test('a Service without endpoints drops at its NodePort', () => {
      const stats = bed.stats();
      run('kpx_tc_ingress', tcpFrame(fromClient({ sport: 40030, dst: NODE_ETH0.ip, dport: EMPTY.nodePort })), 'eth0', TC_ACT.SHOT);
      assert.deepEqual(statsMoved(stats), { drop: 1 }, 'kpx_stats: a drop');
    });

    test('tc egress leaves alone what no local backend flow tracks', () => {
      const frames = [
        tcpFrame({ src: '10.244.1.6', dst: CLIENT.ip, sport: 8080, dport: 40000, flags: ['syn', 'ack'] }),
        tcpFrame({ src: NODE_ETH0.ip, dst: CLIENT.ip, sport: 22, dport: 50000, flags: ['ack'], payload: PAYLOAD }),
      ];
      for (const frame of frames) assertFrame(run('kpx_tc_egress', frame, 'eth0', TC_ACT.OK), frame);
    });
  });

  describe('XDP', () => {
    test('remote backend reached through the ingress interface: rewritten and XDP_TX, L2 from the neighbour table; the reply too', remote, () => {
      const syn = fromClient({ sport: 40040, dst: NODE_ETH0.ip, dport: API.nodePort });
      const out = run('kpx_xdp', tcpFrame(syn), 'eth0', XDP_ACT.TX);
      const snatPort = parseFrame(out).tcp!.sport;
      assertSnatPort(snatPort);
      assertFrame(
        out,
        tcpFrame({ ...syn, ethSrc: NODE_ETH0.mac, ethDst: NODE_B.mac, src: NODE_ETH0.ip, sport: snatPort, dst: API.pod, dport: API.podPort, ttl: 63 }),
      );

      const synAck: TcpSpec = {
        ethSrc: NODE_B.mac,
        ethDst: NODE_ETH0.mac,
        src: API.pod,
        dst: NODE_ETH0.ip,
        sport: API.podPort,
        dport: snatPort,
        flags: ['syn', 'ack'],
        ttl: 63,
      };
      const stats = bed.stats();
      const reply = run('kpx_xdp', tcpFrame(synAck), 'eth0', XDP_ACT.TX);
      assert.deepEqual(statsMoved(stats), { reply: 1 }, 'kpx_stats: a remote reply');
      assertFrame(
        reply,
        tcpFrame({ ...synAck, ethSrc: NODE_ETH0.mac, ethDst: CLIENT.mac, src: NODE_ETH0.ip, sport: API.nodePort, dst: CLIENT.ip, dport: 40040, ttl: 62 }),
      );
    });

    test('a tracked flow keeps its next hop and Ethernet addresses from its second packet on, until its entry is refreshed', remote, () => {
      const key = { saddr: CLIENT.ip, daddr: NODE_ETH0.ip, sport: 40046, dport: API.nodePort, proto: IPPROTO.TCP };
      const spec = (seq: number) => fromClient({ sport: 40046, dst: NODE_ETH0.ip, dport: API.nodePort, flags: seq ? ['ack'] : ['syn'], seq });
      const ethDstOut = (seq: number) => parseFrame(run('kpx_xdp', tcpFrame(spec(seq)), 'eth0', XDP_ACT.TX)).ethDst;
      assert.equal(ethDstOut(0), NODE_B.mac);
      assert.equal(bed.ct(key)!.fib, CT_FIB.nexthop, 'a new flow is written with its next hop; its Ethernet addresses come with its second packet');

      assert.equal(ethDstOut(1001), NODE_B.mac);
      const kept = bed.ct(key)!;
      assert.deepEqual(
        [kept.fib, kept.fib_ifindex, kept.fib_nexthop, kept.fib_dmac, kept.fib_smac],
        [CT_FIB.l2, bed.ifindex('eth0'), NODE_B.ip, NODE_B.mac, NODE_ETH0.mac],
      );

      // A MAC no neighbour has: the frame carries it, so the entry and not the FIB decided.
      const bogus = '02:6b:70:00:00:99';
      bed.setCt(key, { ...kept, fib_dmac: bogus });
      assert.equal(ethDstOut(1002), bogus);

      // Two seconds idle: the packet refreshes the entry and looks the route and neighbour up again.
      bed.setCt(key, { ...bed.ct(key)!, last_seen_ns: process.hrtime.bigint() - 2_000_000_000n });
      assert.equal(ethDstOut(1003), NODE_B.mac);
      assert.equal(bed.ct(key)!.fib_dmac, NODE_B.mac);
    });

    test("a reply entry and a UDP flow's entry keep their own FIB result from their first packet that follows them", remote, () => {
      const bogus = '02:6b:70:00:00:98';
      // TCP: the backend's reply, back to the client through the SNAT port.
      const syn = fromClient({ sport: 40047, dst: NODE_ETH0.ip, dport: API.nodePort });
      const snatPort = parseFrame(run('kpx_xdp', tcpFrame(syn), 'eth0', XDP_ACT.TX)).tcp!.sport;
      const replyKey = { saddr: API.pod, daddr: NODE_ETH0.ip, sport: API.podPort, dport: snatPort, proto: IPPROTO.TCP };
      const reply = (seq: number): Buffer =>
        tcpFrame({ ethSrc: NODE_B.mac, ethDst: NODE_ETH0.mac, src: API.pod, dst: NODE_ETH0.ip, sport: API.podPort, dport: snatPort, flags: ['syn', 'ack'], seq, ttl: 63 });
      assert.equal(bed.ct(replyKey)!.fib, CT_FIB.none, 'a reply entry is written before any lookup towards the client');
      assert.equal(parseFrame(run('kpx_xdp', reply(1), 'eth0', XDP_ACT.TX)).ethDst, CLIENT.mac);
      const keptReply = bed.ct(replyKey)!;
      assert.deepEqual([keptReply.fib, keptReply.fib_nexthop, keptReply.fib_dmac], [CT_FIB.l2, CLIENT.ip, CLIENT.mac]);
      bed.setCt(replyKey, { ...keptReply, fib_dmac: bogus });
      assert.equal(parseFrame(run('kpx_xdp', reply(2), 'eth0', XDP_ACT.TX)).ethDst, bogus, 'the reply follows its entry');

      // UDP: the same for a datagram flow's forward entry.
      const udpKey = { saddr: CLIENT.ip, daddr: NODE_ETH0.ip, sport: 40048, dport: API.udpNodePort, proto: IPPROTO.UDP };
      const datagram = () => udpFrame(udpFromClient({ sport: 40048, dst: NODE_ETH0.ip, dport: API.udpNodePort }));
      run('kpx_xdp', datagram(), 'eth0', XDP_ACT.TX);
      assert.equal(parseFrame(run('kpx_xdp', datagram(), 'eth0', XDP_ACT.TX)).ethDst, NODE_B.mac);
      const keptUdp = bed.ct(udpKey)!;
      assert.equal(keptUdp.fib, CT_FIB.l2);
      bed.setCt(udpKey, { ...keptUdp, fib_dmac: bogus });
      assert.equal(parseFrame(run('kpx_xdp', datagram(), 'eth0', XDP_ACT.TX)).ethDst, bogus, 'the datagram follows its entry');
    });

    test('remote backend behind another interface: XDP_REDIRECT, SNAT to that interface; the reply redirects back', remote, () => {
      const syn = fromClient({ sport: 40041, dst: NODE_ETH0.ip, dport: FAR.nodePort });
      const out = run('kpx_xdp', tcpFrame(syn), 'eth0', XDP_ACT.REDIRECT);
      const snatPort = parseFrame(out).tcp!.sport;
      assertSnatPort(snatPort);
      assertFrame(
        out,
        tcpFrame({ ...syn, ethSrc: NODE_ETH1.mac, ethDst: NODE_C.mac, src: NODE_ETH1.ip, sport: snatPort, dst: FAR.pod, dport: FAR.podPort, ttl: 63 }),
      );

      const synAck: TcpSpec = {
        ethSrc: NODE_C.mac,
        ethDst: NODE_ETH1.mac,
        src: FAR.pod,
        dst: NODE_ETH1.ip,
        sport: FAR.podPort,
        dport: snatPort,
        flags: ['syn', 'ack'],
        ttl: 63,
      };
      const reply = run('kpx_xdp', tcpFrame(synAck), 'eth1', XDP_ACT.REDIRECT);
      assertFrame(
        reply,
        tcpFrame({ ...synAck, ethSrc: NODE_ETH0.mac, ethDst: CLIENT.mac, src: NODE_ETH0.ip, sport: FAR.nodePort, dst: CLIENT.ip, dport: 40041, ttl: 62 }),
      );
    });

    for (const checksum of [true, false]) {
      test(`UDP ${checksum ? 'with a checksum' : 'without checksum (0 stays 0)'}: rewritten and XDP_TX`, remote, () => {
        const query = udpFromClient({ sport: checksum ? 40042 : 40043, dst: NODE_ETH0.ip, dport: API.udpNodePort, checksum });
        const out = run('kpx_xdp', udpFrame(query), 'eth0', XDP_ACT.TX);
        const snatPort = parseFrame(out).udp!.sport;
        assertSnatPort(snatPort);
        assertFrame(
          out,
          udpFrame({ ...query, ethSrc: NODE_ETH0.mac, ethDst: NODE_B.mac, src: NODE_ETH0.ip, sport: snatPort, dst: API.pod, dport: API.udpPodPort, ttl: 63 }),
        );
        if (!checksum) assert.equal(parseFrame(out).udp!.checksum, 0);
      });
    }

    test('local backend: XDP_PASS untouched but tracked, then tc ingress DNATs the same frame', () => {
      let stats = bed.stats();
      const syn = tcpFrame(fromClient({ sport: 40044, dst: NODE_ETH0.ip, dport: WEB.nodePort }));
      assertFrame(run('kpx_xdp', syn, 'eth0', XDP_ACT.PASS), syn);
      assert.deepEqual(statsMoved(stats), { newFlow: 1 }, 'kpx_stats: XDP tracked a new flow');
      const tracked = ctEntry({ saddr: CLIENT.ip, daddr: NODE_ETH0.ip, sport: 40044, dport: WEB.nodePort });
      assert.deepEqual(tracked && { daddr: tracked.daddr, dport: tracked.dport, flags: tracked.flags }, { daddr: WEB.pod, dport: WEB.podPort, flags: 0 });

      stats = bed.stats();
      const out = run('kpx_tc_ingress', syn, 'eth0', TC_ACT.OK);
      assertFrame(out, tcpFrame(fromClient({ sport: 40044, dst: WEB.pod, dport: WEB.podPort })));
      assert.deepEqual(statsMoved(stats), { forward: 1 }, 'kpx_stats: tc counts the frame XDP passed on again, as a tracked flow');
    });

    test('a Service without endpoints: XDP_DROP', () => {
      const stats = bed.stats();
      run('kpx_xdp', tcpFrame(fromClient({ sport: 40045, dst: NODE_ETH0.ip, dport: EMPTY.nodePort })), 'eth0', XDP_ACT.DROP);
      assert.deepEqual(statsMoved(stats), { drop: 1 }, 'kpx_stats: a drop');
    });
  });

  /** Frames that are not kpx's to translate: both ingress programs pass them on byte for byte and track nothing. */
  const UNTOUCHED: Array<{ name: string; frame: Buffer }> = [
    { name: 'TCP to a node port no Service uses', frame: tcpFrame(fromClient({ sport: 41000, dst: NODE_ETH0.ip, dport: 22 })) },
    {
      name: 'a ClusterIP frontend addressed from outside (the socket programs own ClusterIPs)',
      frame: tcpFrame(fromClient({ sport: 41001, dst: WEB.clusterIP, dport: 80 })),
    },
    {
      name: 'ICMP echo to the node',
      frame: icmpEchoFrame({ ethSrc: CLIENT.mac, ethDst: NODE_ETH0.mac, src: CLIENT.ip, dst: NODE_ETH0.ip, identifier: 7, sequence: 1 }),
    },
    { name: 'ARP request for the node address', frame: arpRequestFrame({ senderMac: CLIENT.mac, senderIp: CLIENT.ip, targetIp: NODE_ETH0.ip }) },
    {
      name: 'first IPv4 fragment (MF set) to a NodePort',
      frame: tcpFrame(fromClient({ sport: 41002, dst: NODE_ETH0.ip, dport: API.nodePort, moreFragments: true, payload: PAYLOAD })),
    },
    {
      name: 'later IPv4 fragment (offset 185) whose data reads like a header for a NodePort',
      frame: ipFragmentFrame({
        ethSrc: CLIENT.mac,
        ethDst: NODE_ETH0.mac,
        src: CLIENT.ip,
        dst: NODE_ETH0.ip,
        protocol: IPPROTO_TCP,
        fragmentOffset: 185,
        data: Buffer.concat([Buffer.from([41003 >> 8, 41003 & 0xff, API.nodePort >> 8, API.nodePort & 0xff]), Buffer.alloc(24, 0x5a)]),
      }),
    },
    { name: 'UDP to a TCP-only NodePort', frame: udpFrame(udpFromClient({ sport: 41004, dst: NODE_ETH0.ip, dport: API.nodePort })) },
    {
      name: 'a NodePort on a node address not in --nodeport-addresses',
      frame: tcpFrame(fromClient({ sport: 41005, dst: NODE_ETH1.ip, dport: API.nodePort })),
    },
    { name: 'an externalIP at a port it does not serve', frame: tcpFrame(fromClient({ sport: 41006, dst: EDGE.externalIP, dport: EDGE.port + 1 })) },
    { name: 'the address next to an externalIP', frame: tcpFrame(fromClient({ sport: 41007, dst: '192.0.2.11', dport: EDGE.port })) },
    {
      name: 'an externalIP at the nodePort (not a node address)',
      frame: tcpFrame(fromClient({ sport: 41008, dst: EDGE.externalIP, dport: EDGE.nodePort })),
    },
  ];

  for (const [program, verdict] of [
    ['kpx_tc_ingress', TC_ACT.OK],
    ['kpx_xdp', XDP_ACT.PASS],
  ] as const) {
    describe(`${program} passes untouched`, () => {
      for (const { name, frame } of UNTOUCHED) {
        test(name, () => {
          const stats = bed.stats();
          assert.ok(run(program, frame, 'eth0', verdict).equals(frame), 'frame out is the frame in');
          assert.deepEqual(statsMoved(stats), {}, 'kpx_stats: not counted');
          const p = parseFrame(frame);
          const ports = p.tcp ?? p.udp;
          if (p.ip && ports) {
            const key = { saddr: p.ip.src, daddr: p.ip.dst, sport: ports.sport, dport: ports.dport };
            assert.equal(ctEntry(key, p.ip.protocol), undefined, 'no conntrack entry');
          }
        });
      }
    });
  }

  // Runs last so it also sees the entries every case above created.
  test('conntrack keys are exactly the packet tuple: their padding is zero, so every packet of a flow finds its entry', () => {
    run('kpx_tc_ingress', tcpFrame(fromClient({ sport: 42000, dst: NODE_ETH0.ip, dport: WEB.nodePort })), 'eth0', TC_ACT.OK);
    run('kpx_xdp', tcpFrame(fromClient({ sport: 42001, dst: NODE_ETH0.ip, dport: WEB.nodePort })), 'eth0', XDP_ACT.PASS);
    const padded = bed.ctKeys().filter((key) => !key.subarray(13, 16).equals(Buffer.alloc(3)));
    assert.deepEqual(
      padded.map((key) => key.toString('hex')),
      [],
      'kpx_ct keys with non-zero kpx_ct_key.pad (bytes 13-15): lookups with a zero-padded key miss them',
    );
  });
});
