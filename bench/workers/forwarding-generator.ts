/**
 * Packet generator for bench/forwarding-rate (pktgen is not in this kernel):
 * run inside a lab host's netns, it transmits one UDP frame over and over
 * out of a device, as fast as the kernel takes them. An XDP program that
 * returns XDP_TX, run by BPF_PROG_TEST_RUN in live-frames mode with
 * ingress_ifindex = the device: the kernel turns XDP_TX into a redirect
 * back to that device, so every run is one frame on its wire.
 *
 * The program writes the whole frame before each XDP_TX. Live frames live in
 * pages the kernel recycles once the receiver frees them, and it copies the
 * input frame into a page only when the page is new: a recycled page still
 * holds what the receivers made of it (a router's rewritten MACs and TTL, a
 * NAT's addresses), and sent as is it would be a different packet.
 *
 *   node forwarding-generator.js --device eth0 --park DEV --src-mac M --dst-mac M
 *        --src A --dst A --sport N --dport N --size BYTES --seconds S
 *   node forwarding-generator.js --probe
 *        whether the kernel runs live frames at all: one test run of a program
 *        that drops its frame. Prints {"liveFrames": true}, or {"liveFrames":
 *        false, "refusal": the kernel's error} when the kernel refuses the
 *        flag (some VM kernels answer EPERM, whatever the caller's
 *        capabilities; kernels before 5.18 EINVAL).
 *
 * Every XDP test run adds its program to the kernel's XDP dispatcher and
 * removes it again, each time waiting for an RCU grace period, unless the
 * program is attached somewhere already. So the program is attached to
 * --park, a device that is down (no frame ever runs it there), through a
 * bpf_link that goes when this process does.
 *
 * Prints one JSON line: {"sent": frames handed to the device, "seconds": wall
 * time, "cpuSeconds": this process's CPU time, which includes the softirq
 * work its test runs raise: the kernel does it when the run re-enables
 * bottom halves, on the same CPU, and tick-based accounting (no
 * CONFIG_IRQ_TIME_ACCOUNTING) charges softirq time to the task it interrupts}.
 */
import { parseArgs } from 'node:util';
import { ATTACH, BpfError, interfaceIndex, linkCreate, loadProgram, testRun, TEST_RUN_XDP_LIVE_FRAMES } from '../../src/datapath/libbpf.js';
import { udpFrame } from '../../test/fixtures/packets.js';

const BPF_PROG_TYPE_XDP = 6;
const XDP_DROP = 1;
const XDP_TX = 3;
const EPERM = 1;
const EINVAL = 22;
const ETH_IP_UDP_HEADERS = 14 + 20 + 8;
/** The first test run's frames, to learn the time per frame. */
const FIRST_CALL_FRAMES = 20_000;
/**
 * Every test run takes the kernel's XDP dispatcher mutex, which other
 * processes' XDP test runs hold across RCU grace periods: few long runs,
 * sized by the time per frame the kernel measured in the last one.
 */
const CALL_SECONDS = 0.5;
/** Frames the kernel runs between two flushes to the device (its default too). */
const BATCH_SIZE = 64;

const { values } = parseArgs({
  options: {
    device: { type: 'string' },
    park: { type: 'string' },
    'src-mac': { type: 'string' },
    'dst-mac': { type: 'string' },
    src: { type: 'string' },
    dst: { type: 'string' },
    sport: { type: 'string' },
    dport: { type: 'string' },
    size: { type: 'string' },
    seconds: { type: 'string' },
    probe: { type: 'boolean' },
  },
});

function required(name: Exclude<keyof typeof values, 'probe'>): string {
  const v = values[name];
  if (v === undefined) throw new Error(`--${name} is required`);
  return v;
}

/** One eBPF instruction: opcode, dst and src registers, offset, immediate. */
function insn(code: number, dst: number, src: number, off: number, imm: number): Buffer {
  const b = Buffer.alloc(8);
  b[0] = code;
  b[1] = (src << 4) | dst;
  b.writeInt16LE(off, 2);
  b.writeInt32LE(imm, 4);
  return b;
}

/**
 * r2 = ctx->data; r3 = ctx->data_end; if (r2 + len > r3) return XDP_DROP;
 * store the frame at r2, 4 bytes (then 1) at a time; return XDP_TX.
 */
function writeFrameThenTx(frame: Buffer): Buffer {
  const stores: Buffer[] = [];
  let at = 0;
  for (; at + 4 <= frame.length; at += 4) stores.push(insn(0x62 /* st w */, 2, 0, at, frame.readInt32LE(at)));
  for (; at < frame.length; at++) stores.push(insn(0x72 /* st b */, 2, 0, at, frame[at]!));
  return Buffer.concat([
    insn(0x61 /* ldx w */, 2, 1, 0, 0),
    insn(0x61 /* ldx w */, 3, 1, 4, 0),
    insn(0xbf /* mov64 reg */, 4, 2, 0, 0),
    insn(0x07 /* add64 imm */, 4, 0, 0, frame.length),
    insn(0x2d /* jgt reg */, 4, 3, stores.length + 2, 0),
    ...stores,
    insn(0xb7 /* mov64 imm */, 0, 0, 0, XDP_TX),
    insn(0x95 /* exit */, 0, 0, 0, 0),
    insn(0xb7 /* mov64 imm */, 0, 0, 0, XDP_DROP),
    insn(0x95 /* exit */, 0, 0, 0, 0),
  ]);
}

function ifindexOf(device: string): number {
  const ifindex = interfaceIndex(device);
  if (ifindex === undefined) throw new Error(`no device ${device} in this netns`);
  return ifindex;
}

function probeLiveFrames(): void {
  const dropProgram = Buffer.concat([insn(0xb7 /* mov64 imm */, 0, 0, 0, XDP_DROP), insn(0x95 /* exit */, 0, 0, 0, 0)]);
  const progFd = loadProgram(BPF_PROG_TYPE_XDP, ATTACH.xdp, dropProgram);
  let verdict: { liveFrames: boolean; refusal?: string } = { liveFrames: true };
  try {
    testRun(progFd, { data: Buffer.alloc(ETH_IP_UDP_HEADERS), flags: TEST_RUN_XDP_LIVE_FRAMES, batchSize: 1 });
  } catch (err) {
    if (!(err instanceof BpfError) || (err.errno !== EPERM && err.errno !== EINVAL)) throw err;
    verdict = { liveFrames: false, refusal: err.message };
  }
  process.stdout.write(`${JSON.stringify(verdict)}\n`);
}

function main(): void {
  if (values.probe) return probeLiveFrames();
  const ifindex = ifindexOf(required('device'));
  const parkIfindex = ifindexOf(required('park'));
  const size = Number(required('size'));
  const frame = udpFrame({
    ethSrc: required('src-mac'),
    ethDst: required('dst-mac'),
    src: required('src'),
    dst: required('dst'),
    sport: Number(required('sport')),
    dport: Number(required('dport')),
    payload: Buffer.alloc(Math.max(0, size - ETH_IP_UDP_HEADERS)),
  });
  // struct xdp_md: data_end (offset 4) is the frame's length, ingress_ifindex (12) the device it "arrived" on.
  const ctx = Buffer.alloc(24);
  ctx.writeUInt32LE(frame.length, 4);
  ctx.writeUInt32LE(ifindex, 12);
  const progFd = loadProgram(BPF_PROG_TYPE_XDP, ATTACH.xdp, writeFrameThenTx(frame));
  linkCreate(progFd, parkIfindex, ATTACH.xdp);

  const seconds = Number(required('seconds'));
  const cpuStart = process.cpuUsage();
  const start = performance.now();
  const deadline = start + seconds * 1000;
  let sent = 0;
  let frames = FIRST_CALL_FRAMES;
  for (let now = start; now < deadline; now = performance.now()) {
    const { durationNs } = testRun(progFd, { data: frame, ctx, repeat: frames, flags: TEST_RUN_XDP_LIVE_FRAMES, batchSize: BATCH_SIZE });
    sent += frames;
    const callSeconds = Math.min(CALL_SECONDS, (deadline - performance.now()) / 1000);
    frames = Math.max(BATCH_SIZE, Math.round((callSeconds * 1e9) / Math.max(1, durationNs)));
  }
  const elapsed = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  process.stdout.write(`${JSON.stringify({ sent, seconds: elapsed, cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`);
}

try {
  main();
} catch (err) {
  process.stderr.write(`forwarding-generator: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
