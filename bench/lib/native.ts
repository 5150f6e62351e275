/**
 * Small C programs that benchmarks run inside lab namespaces (bench/native/),
 * built at bench time: a Node client would measure Node, not the kernel.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** bench/native in the source tree, also when running from dist/. */
const SOURCE_DIR = fileURLToPath(new URL('../native/', import.meta.url.replace('/dist/bench/', '/bench/')));
/** dist/bench/native, next to this compiled module: build output stays out of the source tree. */
const BUILD_DIR = fileURLToPath(new URL('../native/', import.meta.url));

function compiler(): string {
  for (const cc of ['cc', 'clang', 'gcc']) {
    try {
      execFileSync('which', [cc], { stdio: 'ignore' });
      return cc;
    } catch { /* try the next one */ }
  }
  throw new Error('no C compiler (cc, clang or gcc) found; scripts/setup.sh installs clang');
}

/** Compiles bench/native/<name>.c (when its binary is missing or older than it or native.h) and returns the binary's path. */
export function buildNative(name: string): string {
  const source = `${SOURCE_DIR}${name}.c`;
  const binary = `${BUILD_DIR}${name}`;
  const newestInput = Math.max(statSync(source).mtimeMs, statSync(`${SOURCE_DIR}native.h`).mtimeMs);
  if (existsSync(binary) && statSync(binary).mtimeMs >= newestInput) return binary;
  mkdirSync(BUILD_DIR, { recursive: true });
  execFileSync(compiler(), ['-O2', '-Wall', '-Wextra', '-Werror', '-o', binary, source], { stdio: ['ignore', 'inherit', 'inherit'] });
  return binary;
}
