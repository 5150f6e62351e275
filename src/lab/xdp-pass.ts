// Run inside a lab netns: attaches a program that only returns XDP_PASS, in
// native mode, to each veth named on the command line.
//   node xdp-pass.js DEV [DEV...]
// Why: a veth hands XDP_TX frames to its peer's ring, but wakes the peer only
// if the peer has an XDP program of its own (GRO gives the peer NAPI, which
// is enough for XDP_REDIRECT, not for XDP_TX). So the wire side of a node's
// eth0 gets this, and kpx's XDP_TX on eth0 reaches the wire at once.
// The attachment belongs to the device: it goes when the veth (or its netns) does.
import koffi from 'koffi';

const BPF_PROG_TYPE_XDP = 6;
const XDP_FLAGS_DRV_MODE = 1 << 2;
/** r0 = XDP_PASS (2); exit. */
const INSNS = Buffer.from([0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]);

const libbpf = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');
const progLoad = libbpf.func(
  'int bpf_prog_load(int prog_type, const char *prog_name, const char *license, const void *insns, size_t insn_cnt, const void *opts)',
);
const xdpAttach = libbpf.func('int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags, const void *opts)');
const ifNameToIndex = libc.func('unsigned int if_nametoindex(const char *ifname)');

function main(devices: string[]): void {
  if (devices.length === 0) throw new Error('usage: xdp-pass DEV [DEV...]');
  const progFd = progLoad(BPF_PROG_TYPE_XDP, 'lab_xdp_pass', 'GPL', INSNS, INSNS.length / 8, null) as number;
  if (progFd < 0) throw new Error(`bpf_prog_load: errno ${-progFd}`);
  for (const dev of devices) {
    const ifindex = ifNameToIndex(dev) as number;
    if (ifindex === 0) throw new Error(`no device ${dev} in this netns`);
    const rc = xdpAttach(ifindex, progFd, XDP_FLAGS_DRV_MODE, null) as number;
    if (rc < 0) throw new Error(`bpf_xdp_attach(${dev}): errno ${-rc}`);
  }
}

try {
  main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`xdp-pass: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
