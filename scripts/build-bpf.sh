#!/usr/bin/env bash
# Builds the BPF objects under bpf/ and records the digest of their sources,
# so a test can tell when a committed object is stale. The flags are fixed
# and path-independent, so the same clang gives the same bytes anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bpf-flags.sh
for src in bpf/*.c; do
  obj="${src%.c}.o"
  clang "${KPX_BPF_CFLAGS[@]}" -c "$src" -o "$obj"
  llvm-strip -g "$obj"
  echo "built $obj"
done
scripts/bpf-digest.sh > bpf/objects.sha256
