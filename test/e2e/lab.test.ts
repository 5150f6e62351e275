// Proves the lab itself: topology, name servers, probe, and that close()
// (or a failed createLab) leaves nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import {
  createLab, findCgroup2Mount, newRunId, runDirOf, PROBE_SCRIPT, type Lab,
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

async function probe(lab: Lab, host: string, args: string[]): Promise<ProbeResult[]> {
  const r = await lab.exec(host, [process.execPath, PROBE_SCRIPT, ...args], { inCgroup: true });
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

function assertNothingLeft(runId: string, cgroupPath: string, pids: number[] = []): void {
  assert.deepEqual(netnsNames().filter((n) => n.startsWith(`${runId}-`)), [], 'netns left behind');
  assert.ok(!readFileSync('/proc/mounts', 'utf8').includes(runId), 'mount left behind');
  if (cgroupPath) assert.ok(!existsSync(cgroupPath), `cgroup ${cgroupPath} left behind`);
  const cgroupMount = findCgroup2Mount();
  if (cgroupMount) assert.ok(!existsSync(`${cgroupMount}/${runId}`), 'cgroup left behind');
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
  assertNothingLeft(runId, cgroupPath, pids);
});

test('lab: createLab failing midway leaves nothing behind', async (t) => {
  const missing = missingPrerequisite();
  if (missing) return t.skip(`needs root and cgroup2: ${missing}`);

  const runId = newRunId();
  await assert.rejects(
    createLab({ runId, pods: [{ name: 'pod-a', address: '10.244.0.11' }, { name: 'pod-bad', address: '10.244.0.999' }] }),
    /10\.244\.0\.999/,
  );
  assertNothingLeft(runId, '');
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
  assertNothingLeft(runId, cgroupPath);
});
