#!/usr/bin/env bash
# Prints, for every object, the sha256 of its inputs (sources, headers, build
# flags) and of the object itself: the record bpf/objects.sha256 keeps.
set -euo pipefail
cd "$(dirname "$0")/.."
inputs=$(cat bpf/*.c bpf/include/*.h scripts/bpf-flags.sh | sha256sum | cut -d' ' -f1)
for obj in bpf/*.o; do
  echo "$inputs $(sha256sum "$obj" | cut -d' ' -f1) $obj"
done
