// Options the agent refuses before it touches anything: the CLI exits 2
// with one line naming the option and the reason.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const KPX = fileURLToPath(new URL('../../../bin/kpx', import.meta.url));

function run(...extra: string[]): { status: number | null; stderr: string } {
  // Paths that do not exist: a refusal must come before any of them is used.
  const r = spawnSync(KPX, ['run', '--manifests', '/nonexistent/kpx-test', '--cgroup', '/nonexistent/kpx-test', '--bpffs', '/nonexistent/kpx-test', ...extra], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { status: r.status, stderr: r.stderr };
}

test('--map-sizes refuses maps that cannot be sized, and malformed entries', () => {
  for (const [spec, reason] of [
    ['sock_peer=1024', /--map-sizes: sock_peer is not a map whose size can be set \(kpx_frontends, .*kpx_ct\)/],
    ['kpx_stats=8', /--map-sizes: kpx_stats is not a map whose size can be set/],
    ['nosuchmap=8', /--map-sizes: nosuchmap is not a map whose size can be set/],
    ['slots=lots', /--map-sizes: expected name=N, got "slots=lots"/],
    ['slots=0', /--map-sizes: expected name=N, got "slots=0"/],
  ] as const) {
    const r = run('--map-sizes', spec);
    assert.equal(r.status, 2, `${spec}: ${r.stderr}`);
    assert.match(r.stderr, reason, spec);
    assert.equal(r.stderr.trim().split('\n').length, 1, `${spec}: one line`);
  }
});

test('--healthz-bind-address wants host:port, or "" for no health server', () => {
  for (const value of ['10256', 'localhost:10256', '0.0.0.0:70000', '0.0.0.0:']) {
    const r = run('--healthz-bind-address', value);
    assert.equal(r.status, 2, `${value}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`--healthz-bind-address: expected host:port \\(e\\.g\\. 0\\.0\\.0\\.0:10256\\) or "" to serve nothing, got "${value}"`));
    assert.equal(r.stderr.trim().split('\n').length, 1, `${value}: one line`);
  }
});
