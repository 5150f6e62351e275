/**
 * The feature probe and the mode decision: chooseMode as a table, the
 * override a test or an operator injects, and the real probe on this kernel
 * (recent enough for everything), including the cases where libbpf 1.1's own
 * helper probe would answer wrong and where the process lacks privilege.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { kernelHasFunc } from '../../src/datapath/libbpf.js';
import { fileURLToPath } from 'node:url';
import {
  chooseMode, featureNames, helperAvailable, parseProbeOverride, probeKernel, type FeatureReport, type ModeChoice, type RequestedMode,
} from '../../src/datapath/probe.js';

const complete: FeatureReport = { missing: [], checked: ['prog type xdp', 'map type lru_hash'] };
const lacking: FeatureReport = { missing: ['attach type tcx_ingress', 'helper bpf_set_retval in cgroup_sock'], checked: featureNames() };

test('chooseMode: --mode and the probe decide the datapath, with a reason', () => {
  const table: Array<[RequestedMode, FeatureReport, ModeChoice]> = [
    ['auto', complete, { mode: 'ebpf', reason: 'the kernel has all 2 features the eBPF datapath needs' }],
    ['auto', lacking, { mode: 'iptables', reason: 'missing for the eBPF datapath: attach type tcx_ingress, helper bpf_set_retval in cgroup_sock' }],
    ['ebpf', complete, { mode: 'ebpf', reason: 'forced by --mode ebpf; the kernel has all 2 features checked' }],
    [
      'ebpf',
      lacking,
      {
        error:
          '--mode ebpf: missing for the eBPF datapath: attach type tcx_ingress, helper bpf_set_retval in cgroup_sock (--mode auto falls back to iptables)',
      },
    ],
    ['iptables', complete, { mode: 'iptables', reason: 'forced by --mode iptables' }],
    ['iptables', lacking, { mode: 'iptables', reason: 'forced by --mode iptables' }],
  ];
  for (const [requested, report, expected] of table) {
    assert.deepEqual(chooseMode(requested, report), expected, `--mode ${requested} with missing [${report.missing.join(', ')}]`);
  }
});

test('chooseMode: an unknown mode is an error, not an exception', () => {
  assert.deepEqual(chooseMode('bpf' as RequestedMode, complete), { error: 'unknown mode "bpf" (expected auto, ebpf or iptables)' });
});

test('parseProbeOverride: "missing" alone counts every real feature as checked', () => {
  const report = parseProbeOverride('{"missing":["attach type cgroup/connect4"]}');
  assert.deepEqual(report, { missing: ['attach type cgroup/connect4'], checked: featureNames() });
  assert.ok(featureNames().includes('attach type cgroup/connect4'));
});

test('parseProbeOverride: an invented feature joins "checked"; an explicit "checked" is kept', () => {
  assert.deepEqual(parseProbeOverride('{"missing":["a time machine"]}'), {
    missing: ['a time machine'],
    checked: [...featureNames(), 'a time machine'],
  });
  assert.deepEqual(parseProbeOverride('{"missing":[],"checked":["prog type xdp"]}'), { missing: [], checked: ['prog type xdp'] });
});

test('parseProbeOverride: malformed input comes back as an error naming the expected shape', () => {
  for (const text of ['', 'nope', '[]', 'null', '{}', '{"missing":"prog type xdp"}', '{"missing":[1]}', '{"missing":[],"checked":{}}']) {
    const parsed = parseProbeOverride(text);
    assert.ok('error' in parsed, `accepted ${JSON.stringify(text)}`);
    assert.match(parsed.error, /^probe override: /);
    assert.match(parsed.error, /"missing"/);
  }
});

test('probeKernel({ override }) returns the override without asking the kernel, and throws on a bad one', () => {
  assert.deepEqual(probeKernel({ override: '{"missing":["prog type xdp"]}' }), {
    missing: ['prog type xdp'],
    checked: featureNames(),
  });
  assert.throws(() => probeKernel({ override: '{"missing":' }), /^Error: probe override: expected JSON like/);
});

const isRoot = process.getuid?.() === 0;

test('probeKernel on this kernel: every feature present', { skip: !isRoot && 'needs root to load BPF programs' }, () => {
  const report = probeKernel();
  assert.deepEqual(report, { missing: [], checked: featureNames() });
  assert.ok(report.checked.includes('attach type tcx_ingress'));
  assert.ok(report.checked.includes('helper bpf_set_retval in cgroup_sock_addr'));
  assert.deepEqual(chooseMode('auto', report), { mode: 'ebpf', reason: `the kernel has all ${featureNames().length} features the eBPF datapath needs` });
  // An empty override is no override.
  assert.deepEqual(probeKernel({ override: '' }), report);
});

test('helperAvailable tells a helper a program type may not call', { skip: !isRoot && 'needs root to load BPF programs' }, () => {
  // libbpf 1.1's libbpf_probe_bpf_helper says "supported" to both on 6.2+ kernels.
  assert.equal(helperAvailable('sched_cls', 'bpf_set_retval'), false);
  assert.equal(helperAvailable('xdp', 'bpf_redirect_neigh'), false);
  assert.equal(helperAvailable('cgroup_sock_addr', 'bpf_set_retval'), true);
  assert.equal(helperAvailable('sched_cls', 'bpf_fib_lookup'), true);
});

test('probeKernel without privilege: one finding, and auto falls back to iptables', { skip: !isRoot && 'needs root to drop to nobody' }, () => {
  const probeModule = fileURLToPath(new URL('../../src/datapath/probe.js', import.meta.url));
  const script = `import(${JSON.stringify(probeModule)}).then((m) => process.stdout.write(JSON.stringify(m.probeKernel())))`;
  const out = execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script], {
    encoding: 'utf8',
  });
  const report = JSON.parse(out) as FeatureReport;
  const privilege = 'privilege to load BPF programs (CAP_BPF and CAP_NET_ADMIN, or root)';
  assert.deepEqual(report, { missing: [privilege], checked: [privilege] });
  assert.deepEqual(chooseMode('auto', report), { mode: 'iptables', reason: `missing for the eBPF datapath: ${privilege}` });
});

test('kernelHasFunc finds kernel functions by name in the kernel BTF, and only functions', { skip: !existsSync('/sys/kernel/btf/vmlinux') && 'no kernel BTF at /sys/kernel/btf/vmlinux' }, () => {
  assert.equal(kernelHasFunc('bpf_cast_to_kern_ctx'), true);
  assert.equal(kernelHasFunc('tcp_v4_connect'), true);
  assert.equal(kernelHasFunc('sk_buff'), false, 'a struct is not a function');
  assert.equal(kernelHasFunc('kpx_no_such_function'), false);
});
