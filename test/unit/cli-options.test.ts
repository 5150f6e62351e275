// Options the agent refuses before it touches anything: the CLI exits 2
// with one line naming the option and the reason.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { parseBindAddress } from '../../src/http-listener.js';

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

test('--healthz-bind-address and --metrics-bind-address want IP:port, an IP, or "" for no server', () => {
  for (const [flag, port] of [['--healthz-bind-address', 10256], ['--metrics-bind-address', 10249]] as const) {
    for (const value of ['10256', 'localhost:10256', '0.0.0.0:70000', '0.0.0.0:', '999.1.1.1', '[::1', 'fe80::1:10256:x']) {
      const r = run(flag, value);
      assert.equal(r.status, 2, `${flag} ${value}: ${r.stderr}`);
      const escaped = value.replace(/[.[\]]/g, '\\$&');
      assert.match(r.stderr, new RegExp(`${flag}: expected IP:port \\(e\\.g\\. 0\\.0\\.0\\.0:${port}\\), an IP, or "" to serve nothing, got "${escaped}"`));
      assert.equal(r.stderr.trim().split('\n').length, 1, `${flag} ${value}: one line`);
    }
  }
});

test('parseBindAddress: IP:port, [IPv6]:port, a bare IP with the default port, port 0, or nothing', () => {
  assert.deepEqual(parseBindAddress('0.0.0.0:10256', 10256), { host: '0.0.0.0', port: 10256 });
  assert.deepEqual(parseBindAddress('127.0.0.1', 10249), { host: '127.0.0.1', port: 10249 });
  assert.deepEqual(parseBindAddress('[::]:10256', 10256), { host: '::', port: 10256 });
  assert.deepEqual(parseBindAddress('::', 10256), { host: '::', port: 10256 });
  assert.deepEqual(parseBindAddress('[::1]', 10249), { host: '::1', port: 10249 });
  assert.deepEqual(parseBindAddress('127.0.0.1:0', 10249), { host: '127.0.0.1', port: 0 });
  assert.equal(parseBindAddress('', 10256), undefined);
});
