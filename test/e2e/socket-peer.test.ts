// What a translated socket says its peer is (ebpf mode): the Service, for as
// long as the socket lives. A connected socket keeps its mapping in its own
// storage (kpx_sock_peer), so neither a churned kpx_sock_revnat LRU nor an
// agent restart takes it away; unconnected UDP answers through the LRU.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { frontendKey, frontendValue, IPPROTO, slotKey, slotValue, u32Key, u64Value } from '../../src/contract/codecs.js';
import { mapLookup, mapUpdate } from '../../src/datapath/libbpf.js';
import { startLabAgent } from '../../src/lab/agent.js';
import { createLab, PROBE_SCRIPT, type Lab, type LabProcess } from '../../src/lab/lab.js';
import { countPeers, parseProbeOutput, type ProbeResult } from '../../src/lab/probe-results.js';
import { withPinned } from '../fixtures/pinned.js';
import { missingKernelPrerequisite } from '../fixtures/tools.js';

const skip = missingKernelPrerequisite();

const PEER_HOLDER = fileURLToPath(new URL('./peer-holder.js', import.meta.url));

const WEB = '10.96.0.80:8222';
const DNS = '10.96.0.53:53';
const PODS = [
  { name: 'pod-a', address: '10.244.0.11' },
  { name: 'pod-b', address: '10.244.0.12' },
];
/** Small enough that the churn below cycles it twice over. */
const REVNAT_ENTRIES = 256;
const CHURN_SOCKETS = 600;

const MANIFESTS = {
  apiVersion: 'v1',
  kind: 'List',
  items: [
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'default' }, spec: { clusterIP: '10.96.0.80', ports: [{ name: 'p', port: 8222, targetPort: 80 }] } },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'dns', namespace: 'default' },
      spec: { clusterIP: '10.96.0.53', ports: [{ name: 'p', port: 53, protocol: 'UDP', targetPort: 5353 }] },
    },
    ...[
      ['web', 80, 'TCP'],
      ['dns', 5353, 'UDP'],
    ].map(([name, port, protocol]) => ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'p', port, protocol }],
      endpoints: [{ addresses: ['10.244.0.11'] }, { addresses: ['10.244.0.12'] }],
    })),
  ],
};

interface PeerCheck {
  check: number;
  tcp: string;
  udp: string;
  /** Where the holder's unconnected socket's last reply came from (recvmsg), and who sent it. */
  sendto: string;
  from: string;
}

/** What every check must say: the Services, whichever name server answered. */
const SERVICES_SEEN = { tcp: WEB, udp: DNS, sendto: DNS };
const peersOf = ({ from: _from, ...peers }: PeerCheck) => peers;

describe('socket peers (ebpf)', { skip }, () => {
  let lab: Lab;
  let agent: LabProcess;
  let holder: LabProcess;

  const startAgent = () => startLabAgent(lab, { extraArgs: ['--mode', 'ebpf', '--map-sizes', `sock_revnat=${REVNAT_ENTRIES}`] });

  async function probe(args: string[]): Promise<ProbeResult[]> {
    const r = await lab.exec('client', [process.execPath, PROBE_SCRIPT, ...args], { inCgroup: true, timeoutMs: 60_000 });
    assert.equal(r.code, 0, `probe ${args.join(' ')}: ${r.stderr}`);
    return parseProbeOutput(r.stdout).results;
  }

  /** What the holder's long-lived sockets say their peers are now. */
  async function holderPeers(check: number): Promise<PeerCheck> {
    if (check > 0) process.kill(holder.pid, 'SIGUSR1');
    return JSON.parse(await holder.waitFor(new RegExp(`^\\{"check":${check},`))) as PeerCheck;
  }

  function revnatMap(): { max_entries: number; entries: number } {
    const pin = join(lab.bpffsPath, 'kpx_sock_revnat');
    const info = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'pinned', pin], { encoding: 'utf8' })) as { max_entries: number };
    const entries = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'dump', 'pinned', pin], { encoding: 'utf8', maxBuffer: 64 << 20 })) as unknown[];
    return { max_entries: info.max_entries, entries: entries.length };
  }

  before(async () => {
    lab = await createLab({ pods: PODS });
    await lab.startNameServers(['pod-a', 'pod-b'].map((host) => ({ host, tcp: [80], udp: [5353] })));
    await writeFile(join(lab.manifestsDir, 'services.json'), JSON.stringify(MANIFESTS));
    agent = await startAgent();
    holder = lab.spawn('client', [process.execPath, PEER_HOLDER, ...WEB.split(':'), ...DNS.split(':')], { inCgroup: true });
  });

  after(async () => {
    await lab?.close();
  });

  test('getpeername() shows the ClusterIP for connected TCP and UDP; recvmsg() shows it as the source for unconnected UDP', async () => {
    assert.deepEqual(peersOf(await holderPeers(0)), { check: 0, ...SERVICES_SEEN });
    assert.deepEqual(countPeers(await probe(['udp', ...DNS.split(':'), '--count', '20'])), { [DNS]: 20 });
    assert.deepEqual(countPeers(await probe(['udp', ...DNS.split(':'), '--count', '5', '--connected', '--fresh'])), { [DNS]: 5 });
  });

  test('connected sockets keep their Service after unconnected UDP has cycled the LRU', async () => {
    const churn = await probe(['udp', ...DNS.split(':'), '--count', String(CHURN_SOCKETS), '--fresh']);
    // Each fresh socket reads its reply at once, before others push its entry out.
    assert.deepEqual(countPeers(churn), { [DNS]: CHURN_SOCKETS });
    const revnat = revnatMap();
    assert.equal(revnat.max_entries, REVNAT_ENTRIES, '--map-sizes sizes the kernel-owned LRU');
    assert.ok(revnat.entries <= REVNAT_ENTRIES && CHURN_SOCKETS > 2 * REVNAT_ENTRIES, `LRU holds ${revnat.entries}`);
    // The holder's unconnected socket sends on its kept translation (kpx_sock_sendto), which writes no LRU
    // entry: its replies show the Service from that translation.
    assert.deepEqual(peersOf(await holderPeers(1)), { check: 1, ...SERVICES_SEEN });
  });

  test('connected sockets keep their Service across an agent restart (kpx_sock_peer is pinned and adopted)', async () => {
    await agent.close();
    agent = await startAgent();
    assert.match(agent.stdout(), /adopted pinned maps/);
    assert.ok(existsSync(join(lab.bpffsPath, 'kpx_sock_peer')), 'kpx_sock_peer pinned');
    assert.deepEqual(peersOf(await holderPeers(2)), { check: 2, ...SERVICES_SEEN });
  });

  test('a UDP socket connected to a Service, disconnected, then used straight with a backend, shows that backend', async () => {
    // Whichever backend the Service connect picks, the socket then talks to each in turn, so the one it
    // kept in its storage comes up every time: unconnected (sendto, replies through recvmsg), then connected.
    const reconnect = `
      import dgram from 'node:dgram';
      const connect = (s, port, address) => new Promise((resolve) => s.connect(port, address, resolve));
      const backends = ['10.244.0.11', '10.244.0.12'];
      const seen = [];
      for (let i = 0; i < 10; i++) {
        const s = dgram.createSocket('udp4');
        await connect(s, ${DNS.split(':')[1]}, '${DNS.split(':')[0]}');
        const viaService = s.remoteAddress();
        s.disconnect();
        const replies = new Promise((resolve) => {
          const from = [];
          s.on('message', (_, rinfo) => { from.push(rinfo.address + ':' + rinfo.port); if (from.length === 2) resolve(from.sort()); });
        });
        for (const b of backends) s.send('client', 5353, b);
        const repliedFrom = await replies;
        s.removeAllListeners('message');
        const backend = backends[i % 2];
        await connect(s, 5353, backend);
        const direct = s.remoteAddress();
        seen.push({ viaService: viaService.address + ':' + viaService.port, repliedFrom, direct: direct.address + ':' + direct.port, backend: backend + ':5353' });
        s.close();
      }
      console.log(JSON.stringify(seen));`;
    const r = await lab.exec('client', [process.execPath, '--input-type=module', '-e', reconnect], { inCgroup: true, timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    for (const s of JSON.parse(r.stdout) as Array<{ viaService: string; repliedFrom: string[]; direct: string; backend: string }>) {
      assert.equal(s.viaService, DNS);
      assert.deepEqual(s.repliedFrom, ['10.244.0.11:5353', '10.244.0.12:5353'], 'after disconnect, replies show who sent them');
      assert.equal(s.direct, s.backend);
    }
  });
  test('no sendto translation is kept from tables written under an odd kpx_sync_seq (a sync that failed part-way)', async () => {
    const seqPin = join(lab.bpffsPath, 'kpx_sync_seq');
    const zero = u32Key.encode({ id: 0 });
    const writeSeq = (seq: bigint) => withPinned(seqPin, (fd) => mapUpdate(fd, zero, u64Value.encode({ value: seq })));
    // Stopped, the agent cannot resync (every 60 s) in the middle of what follows; its programs serve on from the pins.
    await agent.close();
    const even = withPinned(seqPin, (fd) => u64Value.decode(mapLookup(fd, zero, 8)!).value);
    assert.equal(even % 2n, 0n, 'no sync is writing');
    const [dnsAddress, dnsPort] = DNS.split(':');
    const { service_id } = withPinned(join(lab.bpffsPath, 'kpx_frontends'), (fd) =>
      frontendValue.decode(mapLookup(fd, frontendKey.encode({ addr: dnsAddress!, port: Number(dnsPort), proto: IPPROTO.UDP }), frontendValue.size)!),
    );
    const slotsPin = join(lab.bpffsPath, 'kpx_slots');
    const slot = (n: number) => slotKey.encode({ service_id, slot: n });
    const originalSlots = withPinned(slotsPin, (fd) => [mapLookup(fd, slot(0), slotValue.size)!, mapLookup(fd, slot(1), slotValue.size)!]);
    // Both slots then name the backend the holder does not use: a socket stays on its backend only while the Service lists it.
    const dropBackend = (address: string) =>
      withPinned(slotsPin, (fd) => {
        const [a, b] = originalSlots;
        const other = slotValue.decode(a!).addr === address ? b! : a!;
        mapUpdate(fd, slot(0), other);
        mapUpdate(fd, slot(1), other);
      });
    const restoreSlots = () => withPinned(slotsPin, (fd) => originalSlots.forEach((value, n) => mapUpdate(fd, slot(n), value)));
    try {
      const before = await holderPeers(3);
      // A sync failed after its first write: the sequence stays odd, and the next sync's writes leave it so.
      writeSeq(even + 1n);
      assert.equal((await holderPeers(4)).from, before.from, 'the tables still give the holder the same backend');
      dropBackend(PODS.find((p) => p.name === before.from)!.address);
      const after = await holderPeers(5);
      assert.deepEqual(peersOf(after), { check: 5, ...SERVICES_SEEN });
      assert.notEqual(after.from, before.from, 'the sendto after the backend left went where the slots say');
      // Both backends listed again: the socket's translation from check 3 (an even sequence) holds again; one made at check 5 must not.
      restoreSlots();
      const back = await holderPeers(6);
      assert.deepEqual(peersOf(back), { check: 6, ...SERVICES_SEEN });
      assert.equal(back.from, before.from, 'the socket is back on its backend, not on the one a translation kept under the odd sequence names');
    } finally {
      // A fresh agent takes the sequence on from the map and writes every table back as the model has it.
      agent = await startAgent();
    }
  });
});
