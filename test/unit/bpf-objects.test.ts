/**
 * The committed BPF objects are what their sources build to: the recorded
 * digest matches (cheap, always), and, where the toolchain is installed, a
 * rebuild with the flags of scripts/bpf-flags.sh gives the same bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findTool } from '../fixtures/tools.js';

// dist/test/unit/ -> repo root (the tests run from the compiled tree).
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

test('bpf/objects.sha256 matches scripts/bpf-digest.sh (committed objects are not stale)', () => {
  const actual = execFileSync(join(ROOT, 'scripts', 'bpf-digest.sh'), { cwd: ROOT, encoding: 'utf8' });
  const committed = readFileSync(join(ROOT, 'bpf', 'objects.sha256'), 'utf8');
  assert.ok(actual.trim().length > 0, 'scripts/bpf-digest.sh printed nothing');
  assert.equal(
    actual,
    committed,
    'bpf/objects.sha256 does not match the sources, headers, flags or objects under bpf/: ' +
      'the committed BPF objects are stale (or edited by hand) - run `make bpf` and commit bpf/*.o and bpf/objects.sha256',
  );
});

test('rebuilding bpf/*.c with scripts/bpf-flags.sh reproduces the committed objects byte for byte', (t) => {
  const missing = ['clang', 'llvm-strip'].filter((tool) => !findTool(tool));
  if (missing.length) {
    t.skip(`${missing.join(' and ')} not installed`);
    return;
  }
  // One definition of the flags: source the script and print the array, NUL separated.
  const flags = execFileSync('bash', ['-c', 'set -euo pipefail; source scripts/bpf-flags.sh; printf "%s\\0" "${KPX_BPF_CFLAGS[@]}"'], {
    cwd: ROOT,
    encoding: 'utf8',
  })
    .split('\0')
    .slice(0, -1);
  assert.ok(flags.includes('bpf'), `KPX_BPF_CFLAGS has no -target bpf: ${JSON.stringify(flags)}`);

  const sources = readdirSync(join(ROOT, 'bpf'))
    .filter((f) => f.endsWith('.c'))
    .sort();
  assert.ok(sources.length > 0, 'no bpf/*.c');
  const clangVersion = execFileSync('clang', ['--version'], { encoding: 'utf8' }).split('\n')[0];

  const tmp = mkdtempSync(join(tmpdir(), 'kpx-bpf-rebuild-'));
  try {
    for (const source of sources) {
      const name = source.slice(0, -2);
      const committedPath = join(ROOT, 'bpf', `${name}.o`);
      let committed: Buffer;
      try {
        committed = readFileSync(committedPath);
      } catch {
        assert.fail(`bpf/${source} has no committed bpf/${name}.o: run \`make bpf\``);
      }
      const rebuilt = join(tmp, `${name}.o`);
      // Same relative source path and working directory as scripts/build-bpf.sh.
      execFileSync('clang', [...flags, '-c', `bpf/${source}`, '-o', rebuilt], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
      execFileSync('llvm-strip', ['-g', rebuilt], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
      const bytes = readFileSync(rebuilt);
      assert.ok(
        bytes.equals(committed),
        `bpf/${name}.o differs from a rebuild of bpf/${source} (${bytes.length} vs ${committed.length} bytes, ${clangVersion}): ` +
          'the committed object is stale or was built by another clang - run `make bpf`',
      );
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
