// --mode: the kernel probe decides between the datapaths, and says why. This
// kernel has every feature, so a kernel without the socket hooks is shown
// through an injected probe result (KPX_PROBE_OVERRIDE, read by the CLI).
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { kpxArgv } from '../../src/lab/agent.js';
import { createLab, PROBE_SCRIPT, type Lab } from '../../src/lab/lab.js';
import { countBodies, parseProbeOutput } from '../../src/lab/probe-results.js';
import { missingKernelPrerequisite } from '../fixtures/tools.js';
import { webServiceList } from '../fixtures/web-service.js';

const NO_SOCKET_HOOKS = JSON.stringify({ missing: ['attach type cgroup/connect4'] });


describe('--mode auto, ebpf and iptables pick the datapath from the kernel probe', { skip: missingKernelPrerequisite() }, () => {
  let lab: Lab;

  /** The agent, with an optional probe override in its environment. */
  const agentArgv = (mode: string, override?: string) => [
    ...(override === undefined ? [] : ['env', `KPX_PROBE_OVERRIDE=${override}`]),
    ...kpxArgv(['run', '--manifests', lab.manifestsDir, '--cgroup', lab.cgroupPath, '--bpffs', lab.bpffsPath, '--interfaces', 'none', '--mode', mode]),
  ];

  /** The first JSON log line of an agent run. */
  const firstLogLine = (stdout: string) => JSON.parse(stdout.split('\n')[0]!) as { msg: string; mode?: string; reason?: string };

  before(async () => {
    lab = await createLab({ pods: [{ name: 'pod-a', address: '10.244.0.11' }] });
    await lab.startNameServers([{ host: 'pod-a', tcp: [80] }]);
    await writeFile(join(lab.manifestsDir, 'web.json'), JSON.stringify(webServiceList('10.96.0.80', '10.244.0.11')));
  });

  after(async () => {
    await lab?.close();
  });

  test('auto on a kernel with every feature picks ebpf', async () => {
    const agent = lab.spawn('node', agentArgv('auto'));
    await agent.waitFor(/"msg":"synced"/);
    await agent.close();
    const first = firstLogLine(agent.stdout());
    assert.equal(first.mode, 'ebpf', agent.stdout());
    assert.match(first.reason ?? '', /has all \d+ features/);
    const cleanup = await lab.exec('node', kpxArgv(['cleanup', '--bpffs', lab.bpffsPath, '--cgroup', lab.cgroupPath]));
    assert.equal(cleanup.code, 0, cleanup.stderr);
  });

  test('auto on a kernel without the socket hooks picks iptables, says which feature is missing, and serves', async () => {
    const agent = lab.spawn('node', agentArgv('auto', NO_SOCKET_HOOKS));
    await agent.waitFor(/"msg":"synced"/);
    const first = firstLogLine(agent.stdout());
    assert.equal(first.msg, 'datapath mode iptables', agent.stdout());
    assert.match(first.reason ?? '', /missing for the eBPF datapath: attach type cgroup\/connect4/);
    const probe = await lab.exec('client', [process.execPath, PROBE_SCRIPT, 'http', '10.96.0.80', '80', '--count', '3']);
    assert.deepEqual(countBodies(parseProbeOutput(probe.stdout).results), { 'pod-a': 3 });
    const listed = await lab.exec('node', kpxArgv(['list', '--bpffs', lab.bpffsPath]));
    assert.match(listed.stdout, /^mode: iptables/);
    await agent.close();
    const cleanup = await lab.exec('node', kpxArgv(['cleanup', '--bpffs', lab.bpffsPath]));
    assert.equal(cleanup.code, 0, cleanup.stderr);
  });

  test('ebpf forced on a kernel without a feature exits with an error naming it', async () => {
    const agent = lab.spawn('node', agentArgv('ebpf', NO_SOCKET_HOOKS));
    const { code } = await agent.exited;
    assert.notEqual(code, 0);
    assert.match(agent.stderr(), /--mode ebpf: missing for the eBPF datapath: attach type cgroup\/connect4/);
  });
});
