# Sourced by build-bpf.sh and by the staleness test: one definition of how
# objects are built. -fdebug-compilation-dir keeps the checkout path out of BTF.
KPX_BPF_CFLAGS=(-O2 -g -target bpf -Wall -Werror -fdebug-compilation-dir=.
  -I"/usr/include/$(uname -m)-linux-gnu")
