// An agent whose programs cannot take over the links after its first sync
// stops and exits non-zero, as it does when it cannot start, rather than
// retrying for ever, and leaves no link of its own behind.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { linkPinPath } from '../../src/datapath/ebpf.js';
import { kpxArgv } from '../../src/lab/agent.js';
import { createLab, type Lab } from '../../src/lab/lab.js';
import { missingKernelPrerequisite } from '../fixtures/tools.js';
import { webServiceList } from '../fixtures/web-service.js';


describe('kpx run when its programs cannot take over the links', { skip: missingKernelPrerequisite() }, () => {
  let lab: Lab;

  before(async () => {
    lab = await createLab({ pods: [] });
    await writeFile(join(lab.manifestsDir, 'web.json'), JSON.stringify(webServiceList('10.96.0.90', '10.244.0.21')));
  });

  after(async () => {
    await lab?.close();
  });

  test('the first sync lands, the takeover fails, and the agent exits 1 saying why', { timeout: 30_000 }, async () => {
    // Where the last link goes, a map: taking it over fails after the others were attached.
    execFileSync('bpftool', ['map', 'create', linkPinPath(lab.bpffsPath, 'kpx_post_bind4'), 'type', 'array', 'key', '4', 'value', '4', 'entries', '1', 'name', 'not_a_link']);
    const agent = lab.spawn('node', kpxArgv(['run', '--manifests', lab.manifestsDir, '--cgroup', lab.cgroupPath, '--bpffs', lab.bpffsPath, '--interfaces', 'none', '--mode', 'ebpf']));
    const exit = await agent.exited;
    assert.equal(exit.code, 1, agent.stdout());
    const lines = agent.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number; msg: string; err?: string });
    const fatal = lines.find((l) => l.msg === 'the datapath cannot go on; stopping');
    assert.ok(fatal, agent.stdout());
    assert.match(fatal.err ?? '', /the first sync landed, but the programs could not take over the links/);
    assert.equal(lines.filter((l) => l.msg === 'sync failed; the previous state stays in place').length, 0, 'not retried');
    assert.equal(existsSync(linkPinPath(lab.bpffsPath, 'kpx_connect4')), false, 'the links it attached went with it');
    // bpftool prints an empty line for a cgroup with nothing attached.
    const attached = execFileSync('bpftool', ['-j', 'cgroup', 'show', lab.cgroupPath], { encoding: 'utf8' }).trim();
    assert.deepEqual(JSON.parse(attached || '[]'), [], 'nothing attached to the cgroup');
  });
});
