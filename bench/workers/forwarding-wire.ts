/**
 * Run inside a lab's wire netns: every frame arriving on the device with
 * ifindex FROM leaves through ifindex TO as an XDP frame (native XDP,
 * bpf_redirect), past the wire bridge.
 *
 *   node forwarding-wire.js FROM TO
 *
 * Why, for bench/forwarding-rate: through the bridge a frame reaches a
 * node's eth0 as an skb, so an XDP program there runs on an skb turned back
 * into a frame (copied when the headroom is short), which no NIC does.
 * Redirected, the generator's frames reach node-a's eth0 as frames, as from
 * a NIC's ring: XDP sees them before any skb exists, and without XDP the
 * veth builds the skb as a driver would.
 * The attachment belongs to FROM: it goes when the veth (or its netns) does.
 */
import koffi from 'koffi';
import { loadProgram } from '../../src/datapath/libbpf.js';

const BPF_PROG_TYPE_XDP = 6;
const BPF_FUNC_REDIRECT = 23;
const XDP_FLAGS_DRV_MODE = 1 << 2;

/** r1 = to; r2 = 0; r0 = bpf_redirect(r1, r2); exit. */
function redirectTo(ifindex: number): Buffer {
  const insns = Buffer.alloc(32);
  insns.set([0xb7, 1], 0);
  insns.writeInt32LE(ifindex, 4);
  insns.set([0xb7, 2], 8);
  insns.set([0x85, 0], 16);
  insns.writeInt32LE(BPF_FUNC_REDIRECT, 20);
  insns.set([0x95, 0], 24);
  return insns;
}

const xdpAttach = koffi.load('libbpf.so.1').func('int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags, const void *opts)');

function main(args: string[]): void {
  const [from, to] = args.map(Number);
  if (!Number.isInteger(from) || !Number.isInteger(to)) throw new Error('usage: forwarding-wire FROM_IFINDEX TO_IFINDEX');
  const progFd = loadProgram(BPF_PROG_TYPE_XDP, 0, redirectTo(to!));
  const rc = xdpAttach(from!, progFd, XDP_FLAGS_DRV_MODE, null) as number;
  if (rc < 0) throw new Error(`bpf_xdp_attach(ifindex ${from}): errno ${-rc}`);
}

try {
  main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`forwarding-wire: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
