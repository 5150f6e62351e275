// Proves the lab itself, without any agent: topology (one node, or two nodes
// on a wire), name servers, probe, and that close() (or a failed createLab)
// leaves nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import {
  createLab, findCgroup2Mount, newRunId, runDirOf, PROBE_SCRIPT, type ClusterLab,
} from '../../src/lab/lab.js';
import { countBodies, parseProbeOutput, type ProbeResult } from '../../src/lab/probe-results.js';

/** Why the lab cannot run here, or undefined when it can. */
function missingPrerequisite(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  // createLab can mount its own cgroup2; it only needs the kernel to support it.
  const cgroup2Supported = readFileSync('/proc/filesystems', 'utf8').includes('cgroup2');
  if (!cgroup2Supported && !findCgroup2Mount()) return 'no cgroup2 mount or kernel support';
  return undefined;
}

/** Runs probe.js on a host, inside its node's cgroup unless the host is outside every node. */
async function probe(lab: ClusterLab, host: string, args: string[], inCgroup = true): Promise<ProbeResult[]> {
  const r = await lab.exec(host, [process.execPath, PROBE_SCRIPT, ...args], { inCgroup });
  assert.equal(r.code, 0, `probe ${args.join(' ')} failed: ${r.stderr}`);
  return parseProbeOutput(r.stdout).results;
}

function netnsNames(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function assertNothingLeft(runId: string, cgroupPaths: string[], pids: number[] = []): void {
  assert.deepEqual(netnsNames().filter((n) => n.startsWith(`${runId}-`)), [], 'netns left behind');
  assert.ok(!readFileSync('/proc/mounts', 'utf8').includes(runId), 'mount left behind');
  for (const path of cgroupPaths) assert.ok(!existsSync(path), `cgroup ${path} left behind`);
  const cgroupMount = findCgroup2Mount();
  if (cgroupMount) assert.deepEqual(readdirSync(cgroupMount).filter((d) => d.startsWith(runId)), [], 'cgroup left behind');
  assert.ok(!existsSync(runDirOf(runId)), 'run dir left behind');
  for (const pid of pids) assert.ok(!isAlive(pid), `child process ${pid} still running`);
}

test('lab: pods, external host, name servers, probes, clean close', async (t) => {
  const missing = missingPrerequisite();
  if (missing) return t.skip(`needs root and cgroup2: ${missing}`);

  const lab = await createLab({
    pods: [{ name: 'pod-a', address: '10.244.0.11' }, { name: 'pod-b', address: '10.244.0.12' }],
    externalHosts: [{ name: 'ext-a', address: '192.0.2.10' }],
  });
  const { runId, cgroupPath } = lab;
  let pids: number[] = [];
  try {
    assert.match(runId, /^kpx[0-9a-f]{6}$/);
    assert.ok(existsSync(lab.netnsPath('client')));
    assert.ok(readFileSync('/proc/mounts', 'utf8').includes(`${lab.bpffsPath} bpf`), 'bpffs mounted');
    assert.ok(existsSync(lab.manifestsDir));
    assert.ok(existsSync(`${cgroupPath}/cgroup.procs`));

    const servers = await lab.startNameServers([
      { host: 'pod-a', tcp: [80], udp: [5353] },
      { host: 'pod-b', tcp: [80], udp: [5353] },
      { host: 'ext-a', tcp: [80] },
    ]);
    pids = servers.map((s) => s.pid);

    // exec with inCgroup really runs inside the lab cgroup.
    const cg = await lab.exec('client', ['cat', '/proc/self/cgroup'], { inCgroup: true });
    assert.match(cg.stdout, new RegExp(`^0::/${runId}$`, 'm'));

    const podA = await probe(lab, 'client', ['http', '10.244.0.11', '80', '--count', '3']);
    assert.deepEqual(countBodies(podA), { 'pod-a': 3 });
    for (const r of podA) assert.ok(r.ok && r.peer === '10.244.0.11:80');

    const ext = await probe(lab, 'client', ['http', '192.0.2.10', '80', '--count', '2']);
    assert.deepEqual(countBodies(ext), { 'ext-a': 2 });
    for (const r of ext) assert.ok(r.ok && r.peer === '192.0.2.10:80');

    const udp = await probe(lab, 'client', ['udp', '10.244.0.12', '5353', '--count', '2']);
    assert.deepEqual(countBodies(udp), { 'pod-b': 2 });
    for (const r of udp) assert.ok(r.ok && r.peer === '10.244.0.12:5353');

    const udpConnected = await probe(lab, 'client', ['udp', '10.244.0.11', '5353', '--connected', '--fresh', '--count', '2']);
    assert.deepEqual(countBodies(udpConnected), { 'pod-a': 2 });

    const refused = await probe(lab, 'client', ['http', '10.244.0.12', '81']);
    assert.deepEqual(countBodies(refused), { 'error:ECONNREFUSED': 1 });
  } finally {
    await lab.close();
  }
  await lab.close(); // idempotent
  assertNothingLeft(runId, [cgroupPath], pids);
});

test('lab: createLab failing midway leaves nothing behind', async (t) => {
  const missing = missingPrerequisite();
  if (missing) return t.skip(`needs root and cgroup2: ${missing}`);

  const runId = newRunId();
  await assert.rejects(
    createLab({ runId, pods: [{ name: 'pod-a', address: '10.244.0.11' }, { name: 'pod-bad', address: '10.244.0.999' }] }),
    /10\.244\.0\.999/,
  );
  assertNothingLeft(runId, []);
});

test('lab: exec honours timeoutMs and spawn waitFor reports early exit', async (t) => {
  const missing = missingPrerequisite();
  if (missing) return t.skip(`needs root and cgroup2: ${missing}`);

  const lab = await createLab({ pods: [] });
  const { runId, cgroupPath } = lab;
  try {
    const slow = await lab.exec('client', ['sleep', '10'], { timeoutMs: 200 });
    assert.equal(slow.timedOut, true);
    const echoed = await lab.exec('client', ['cat'], { input: 'hello', inCgroup: true });
    assert.equal(echoed.stdout, 'hello');
    const quitter = lab.spawn('client', ['sh', '-c', 'echo nope >&2; exit 3']);
    await assert.rejects(quitter.waitFor(/listening/), /exited.*nope/);
    // A long-running child left open is stopped by close().
    lab.spawn('node', ['sleep', '60'], { inCgroup: true });
  } finally {
    await lab.close();
  }
  assertNothingLeft(runId, [cgroupPath]);
});

test('two-node lab: pods reach each other across nodes, the external host only node addresses; clean close', async (t) => {
  const missing = missingPrerequisite();
  if (missing) return t.skip(`needs root and cgroup2: ${missing}`);

  const lab = await createLab({
    nodes: [
      { name: 'node-a', pods: [{ name: 'pod-a1', address: '10.244.1.11' }] },
      { name: 'node-b', pods: [{ name: 'pod-b1', address: '10.244.2.11' }] },
    ],
    externalHosts: [{ name: 'ext', address: '172.18.0.100' }],
  });
  const { runId } = lab;
  const cgroupPaths = lab.nodes.map((n) => n.cgroupPath);
  let pids: number[] = [];
  try {
    assert.deepEqual(
      lab.nodes.map(({ name, host, address, podGateway, interface: dev }) => ({ name, host, address, podGateway, dev })),
      [
        { name: 'node-a', host: 'node-a', address: '172.18.0.2', podGateway: '10.244.1.1', dev: 'eth0' },
        { name: 'node-b', host: 'node-b', address: '172.18.0.3', podGateway: '10.244.2.1', dev: 'eth0' },
      ],
    );
    const mounts = readFileSync('/proc/mounts', 'utf8');
    for (const node of lab.nodes) {
      assert.ok(mounts.includes(`${node.bpffsPath} bpf`), `${node.name}: bpffs mounted`);
      assert.ok(existsSync(`${node.cgroupPath}/cgroup.procs`), `${node.name}: cgroup exists`);
    }
    assert.notEqual(lab.node('node-a').bpffsPath, lab.node('node-b').bpffsPath);
    assert.throws(() => (lab as unknown as { cgroupPath: string }).cgroupPath, /2 nodes/);

    // inCgroup puts a pod into its node's cgroup and a node into its own; an external host has none.
    const inCgroupOf = async (host: string) =>
      /^0::.*$/m.exec((await lab.exec(host, ['cat', '/proc/self/cgroup'], { inCgroup: true })).stdout)?.[0];
    assert.equal(await inCgroupOf('pod-a1'), `0::/${runId}-node-a`);
    assert.equal(await inCgroupOf('pod-b1'), `0::/${runId}-node-b`);
    assert.equal(await inCgroupOf('node-b'), `0::/${runId}-node-b`);
    await assert.rejects(lab.exec('ext', ['true'], { inCgroup: true }), /belongs to no node/);

    // Wire veths: complete checksums on both ends (TX offload off); the wire
    // side of a node's eth0 has NAPI (GRO) and an XDP program, so XDP_TX works.
    assert.match((await lab.exec('node-a', ['ethtool', '-k', 'eth0'])).stdout, /^tx-checksumming: off/m);
    const wireSide = execFileSync('nsenter', [`--net=/run/netns/${runId}-wire`, '--', 'ethtool', '-k', 'n0'], { encoding: 'utf8' });
    assert.match(wireSide, /^tx-checksumming: off/m);
    assert.match(wireSide, /^generic-receive-offload: on/m);
    assert.match(execFileSync('ip', ['-n', `${runId}-wire`, 'link', 'show', 'n0'], { encoding: 'utf8' }), /prog\/xdp/);

    const servers = await lab.startNameServers([
      { host: 'pod-a1', tcp: [80], udp: [5353] },
      { host: 'pod-b1', tcp: [80], udp: [5353] },
      { host: 'node-a', tcp: [80] },
      { host: 'node-b', tcp: [80] },
    ]);
    pids = servers.map((s) => s.pid);

    // Pod to pod across the wire, not translated: the server sees the pod's own address.
    const acrossTcp = await probe(lab, 'pod-a1', ['http', '10.244.2.11', '80', '--path', '/client', '--count', '3']);
    assert.deepEqual(countBodies(acrossTcp), { 'pod-b1 10.244.1.11': 3 });
    for (const r of acrossTcp) assert.ok(r.ok && r.peer === '10.244.2.11:80');
    const acrossUdp = await probe(lab, 'pod-b1', ['udp', '10.244.1.11', '5353', '--message', 'client', '--count', '2']);
    assert.deepEqual(countBodies(acrossUdp), { 'pod-a1 10.244.2.11': 2 });
    // A pod reaches the other node's address too.
    assert.deepEqual(countBodies(await probe(lab, 'pod-a1', ['http', '172.18.0.3', '80'])), { 'node-b': 1 });

    // The external host reaches node addresses, directly on the wire...
    assert.deepEqual(countBodies(await probe(lab, 'ext', ['http', '172.18.0.2', '80', '--path', '/client'], false)), { 'node-a 172.18.0.100': 1 });
    assert.deepEqual(countBodies(await probe(lab, 'ext', ['http', '172.18.0.3', '80'], false)), { 'node-b': 1 });
    // ...but has no route to any pod: whatever it gets from a pod went through NAT.
    assert.deepEqual(countBodies(await probe(lab, 'ext', ['http', '10.244.1.11', '80'], false)), { 'error:ENETUNREACH': 1 });
  } finally {
    await lab.close();
  }
  assertNothingLeft(runId, cgroupPaths, pids);
});

test('two-node lab: a pod address outside its node\'s pod range is refused before anything is made', async (t) => {
  const missing = missingPrerequisite();
  if (missing) return t.skip(`needs root and cgroup2: ${missing}`);

  const runId = newRunId();
  await assert.rejects(
    createLab({ runId, nodes: [{ name: 'node-a' }, { name: 'node-b', pods: [{ name: 'pod-b1', address: '10.244.1.11' }] }] }),
    /pod-b1 10\.244\.1\.11: not a pod address of node-b \(10\.244\.2\.0\/24\)/,
  );
  assertNothingLeft(runId, []);
});
