#!/usr/bin/env bash
# Brings a fresh Debian machine to where kpx builds and its tests run:
# installs the system packages that are missing, then the npm dependencies.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A need=(
  [clang]=clang [llvm-strip]=llvm [bpftool]=bpftool [ip]=iproute2
  [iptables]=iptables [nsenter]=util-linux [curl]=curl [ethtool]=ethtool
  [conntrack]=conntrack
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
[[ -e /usr/include/bpf/bpf_helpers.h ]] || missing+=(libbpf-dev)
# grep reads to the end: with -q it could stop early, and pipefail would take
# ldconfig's SIGPIPE for a missing library.
ldconfig -p | grep 'libbpf\.so\.1 ' >/dev/null || missing+=(libbpf1)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then echo "setup: run as root to install system packages" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
