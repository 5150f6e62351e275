/**
 * The measuring half of bench/packet-cost.ts. Runs inside the bench's
 * network namespace (started with `nsenter --net=...`), since the programs'
 * FIB lookups happen in the namespace of the process that test-runs them.
 * The maps are already synced; this process seeds flows, runs the programs
 * with BPF_PROG_TEST_RUN and checks that every figure is for the path it
 * names. Input: one JSON argument (WorkerInput); output: one JSON line
 * (WorkerOutput).
 *
 * BPF_PROG_TEST_RUN with a repeat count runs the program again and again on
 * the same frame, which the first run has already rewritten. So each
 * established flow gets a mirror entry: keyed by the tuple the flow rewrites
 * to, rewriting back to the original tuple, with the flow's own flags. Run
 * after run the frame goes back and forth between the two, each run a real
 * hit on the path. A flow that is redirected loses a TTL per run, so a call
 * repeats at most 254 times from TTL 255.
 */
import { closeSync } from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';
import { CT_FIB, CT_FLAGS, IPPROTO, backendValue, ctKey, ctValue, filterValue, ipv4ToBytes, readHostU32, u32Key, type CtKey, type CtValue } from '../../src/contract/codecs.js';
import { filterAddrBit } from '../../src/contract/filter.js';
import { readPinnedTables } from '../../src/datapath/ebpf.js';
import * as bpf from '../../src/datapath/libbpf.js';
import { PROG_TYPE } from '../../src/datapath/probe.js';
import { possibleCpus, readStats, type Stats } from '../../src/datapath/stats.js';
import { CLIENT, NODE_B, NODE_ETH0, programContext, type NetProgram } from '../../test/fixtures/bpf-test-bed.js';
import { tcpFrame, udpFrame } from '../../test/fixtures/packets.js';
import { TARGET_PORT, endpointIP } from '../lib/cluster.js';
import { openFloorObject, type FloorObject } from '../lib/floor.js';
import { percentile } from '../lib/report.js';
import {
  CASES,
  LOCAL_NODE_PORT,
  NODE_PORT_ADDRESS,
  SNAT_ADDRESS,
  TC,
  UDP_NODE_PORT,
  XDP,
  type CaseResult,
  type CaseRun,
  type PathCase,
  type WorkerInput,
  type WorkerOutput,
} from './packet-cost-plan.js';

/** Established frames carry data, as most of a flow's packets do; SYNs carry none. */
const PAYLOAD = Buffer.alloc(100, 0x61);
const TTL_MAX = 255;
/** Source ports of the new flows; the established flows use ESTABLISHED_SPORT + case index. */
const NEW_FLOW_SPORT = 10000;
const ESTABLISHED_SPORT = 50000;
/** The SNAT port of the hand-made reply flows. */
const REPLY_SNAT_PORT = 61000;
/** A port of the node that no Service answers on. */
const NO_SERVICE_PORT = 22;

interface Tuple {
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

/** A deterministic choice of Services for the new flows (xorshift32), the same in every run. */
function* randomIndexes(seed: number, below: number): Generator<number> {
  let x = seed;
  for (;;) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    yield (x >>> 0) % below;
  }
}

class Worker {
  private readonly ct: number;
  private readonly stats: number;
  private readonly cpus = possibleCpus();
  private readonly programs = new Map<NetProgram, number>();
  private readonly empty: Record<'tc' | 'xdp', number>;
  /** kpx_floor.o on the agent's pinned maps: its insert lands in the real kpx_ct. */
  private readonly floor: FloorObject;
  private readonly ctInsertFloor: Record<'tc' | 'xdp', number>;
  private readonly pongBackends: Map<string, number>;

  constructor(private readonly input: WorkerInput) {
    this.ct = bpf.objGet(join(input.bpffs, 'kpx_ct'));
    this.stats = bpf.objGet(join(input.bpffs, 'kpx_stats'));
    for (const [name, id] of Object.entries(input.programIds) as Array<[NetProgram, number]>) this.programs.set(name, bpf.programFdById(id));
    this.empty = {
      tc: bpf.loadConstantProgram(PROG_TYPE.sched_cls, 0, TC.OK),
      xdp: bpf.loadConstantProgram(PROG_TYPE.xdp, bpf.ATTACH.xdp, XDP.PASS),
    };
    this.floor = openFloorObject(input.bpffs);
    this.ctInsertFloor = { tc: this.floor.programFd('kpx_floor_ct_insert_tc'), xdp: this.floor.programFd('kpx_floor_ct_insert_xdp') };
    // The backends whose address is the NodePort address: the pong Services' endpoints.
    this.pongBackends = new Map();
    for (const { key, value } of readPinnedTables(input.bpffs).backends.values()) {
      const backend = backendValue.decode(value);
      if (backend.addr === NODE_PORT_ADDRESS.ip) this.pongBackends.set(`${backend.port}/${backend.proto}`, u32Key.decode(key).id);
    }
  }

  close(): void {
    for (const fd of [this.ct, this.stats, ...this.programs.values(), this.empty.tc, this.empty.xdp]) closeSync(fd);
    this.floor.close();
  }

  run(): WorkerOutput {
    const measures = CASES.map((c, index) => this.prepare(c, index));
    const results: CaseResult[] = CASES.map((c) => ({ program: c.program, path: c.path, runs: [] }));
    // Runs outermost, so drift on a shared machine touches every case alike.
    for (let run = 0; run < this.input.runs; run++) {
      measures.forEach((measure, i) => {
        const result = results[i]!;
        if (result.invalid) return;
        const outcome = measure();
        if (typeof outcome === 'string') result.invalid = outcome;
        else result.runs.push(outcome);
      });
    }
    for (const result of results) if (result.invalid) result.runs = [];
    return { cases: results };
  }

  /** Seeds what the case needs and returns one run of it: figures, or why they would be wrong. */
  private prepare(c: PathCase, index: number): () => CaseRun | string {
    const fd = this.programs.get(c.program)!;
    const empty = c.program === 'kpx_xdp' ? this.empty.xdp : this.empty.tc;
    const ctx = (frame: Buffer) => programContext(c.program, frame.length, this.input.ifindex);
    if (c.method === 'new-flow') return () => this.newFlows(c, fd, empty, this.ctInsertFloor[c.program === 'kpx_xdp' ? 'xdp' : 'tc'], ctx);

    const sport = ESTABLISHED_SPORT + index;
    const frame = this.seedFlow(c, sport);
    const clash = c.flow === 'none' && c.program !== 'kpx_tc_egress' ? this.filterLetsIn(NODE_PORT_ADDRESS.ip, NO_SERVICE_PORT) : undefined;
    if (clash) return () => clash;
    const calls = this.input.calls[c.program === 'kpx_xdp' ? 'xdp' : 'tc'];
    // The median call: a call the machine disturbed (an interrupt, another process) does not move it.
    const repeated = (prog: number, verdict?: number): number | string => {
      const durations: number[] = [];
      const context = ctx(frame);
      for (let call = 0; call < calls; call++) {
        const r = bpf.testRun(prog, { data: frame, ctx: context, repeat: this.input.repeat });
        if (verdict !== undefined && r.retval !== verdict) return `verdict ${r.retval}, expected ${verdict}`;
        durations.push(r.durationNs);
      }
      return percentile(durations.sort((a, b) => a - b), 50);
    };
    return () => {
      const before = this.readStats();
      const ns = repeated(fd, c.verdict);
      if (typeof ns === 'string') return ns;
      const wrong = this.checkCounters(c, before, this.input.repeat * calls);
      if (wrong) return wrong;
      return { ns, emptyNs: repeated(empty) as number };
    };
  }

  /** One run of a new-flow case: each call a SYN (or datagram) of a flow the maps have never seen; the median call. */
  private newFlows(c: PathCase, fd: number, empty: number, floor: number, ctx: (frame: Buffer) => Buffer): CaseRun | string {
    const services = randomIndexes(0x9e3779b9, this.input.tcpNodePorts.length);
    const dport = () => (c.protocol === 'UDP' ? UDP_NODE_PORT : c.spread ? this.input.tcpNodePorts[services.next().value as number]! : this.input.tcpNodePort);
    const frames = Array.from({ length: this.input.newFlows }, (_, k) => {
      const tuple = { src: CLIENT.ip, dst: NODE_PORT_ADDRESS.ip, sport: NEW_FLOW_SPORT + k, dport: dport() };
      return { tuple, frame: this.frame(c.protocol, tuple, { from: 'client', ttl: 64, syn: true }) };
    });
    const context = ctx(frames[0]!.frame);
    const durations = (prog: number, verdict?: number): number[] | string => {
      const out: number[] = [];
      for (const { frame } of frames) {
        const r = bpf.testRun(prog, { data: frame, ctx: context });
        if (verdict !== undefined && r.retval !== verdict) return `verdict ${r.retval}, expected ${verdict}`;
        out.push(r.durationNs);
      }
      return out.sort((a, b) => a - b);
    };
    const before = this.readStats();
    const measured = durations(fd, c.verdict);
    const wrong = typeof measured === 'string' ? measured : this.checkCounters(c, before, frames.length);
    // The next run starts from the same empty table, with every SNAT port free again.
    for (const { tuple } of frames) this.forgetFlow(tuple, c.protocol);
    if (typeof measured === 'string' || wrong) return (wrong ?? measured) as string;
    const floorNs = percentile(durations(floor) as number[], 50);
    for (const { tuple } of frames) this.forgetFlow(tuple, c.protocol);
    return { ns: percentile(measured, 50), emptyNs: percentile(durations(empty) as number[], 50), floorNs };
  }

  /**
   * Seeds the flow of a ping-pong or same-frame case and returns the frame
   * to run: its first packet through the program under test for flows of
   * remote and local backends, by hand for the replies of remote backends.
   */
  private seedFlow(c: PathCase, sport: number): Buffer {
    if (c.flow === 'none') {
      // To the node's address at a port no Service has (ssh), or back from it; nothing to seed.
      const toNode: Tuple = { src: CLIENT.ip, dst: NODE_PORT_ADDRESS.ip, sport, dport: NO_SERVICE_PORT };
      return c.program === 'kpx_tc_egress'
        ? this.frame(c.protocol, reverse(toNode), { from: 'backend', ttl: TTL_MAX })
        : this.frame(c.protocol, toNode, { from: 'client', ttl: TTL_MAX });
    }
    const proto = IPPROTO[c.protocol];
    const dport = c.flow === 'local' ? LOCAL_NODE_PORT : c.protocol === 'UDP' ? UDP_NODE_PORT : this.input.tcpNodePort;
    const client: Tuple = { src: CLIENT.ip, dst: NODE_PORT_ADDRESS.ip, sport, dport };

    if (c.flow === 'reply') {
      // As the program writes it for a remote backend (test/bpf checks that layout), with an SNAT address that is not local.
      const measured = this.input.tcpNodePorts.indexOf(this.input.tcpNodePort);
      const backend: Tuple = { src: endpointIP(measured, 0), dst: SNAT_ADDRESS.ip, sport: TARGET_PORT, dport: REPLY_SNAT_PORT };
      const flags = CT_FLAGS.reply | CT_FLAGS.redirect;
      this.putMirror(backend, reverse(client), 0, flags, proto);
      this.putMirror(reverse(client), backend, 0, flags, proto);
      return this.frame(c.protocol, backend, { from: 'node-b', ttl: TTL_MAX });
    }

    // The first packet, through the program that owns the flow (tc ingress for egress's replies).
    const creator = c.program === 'kpx_tc_egress' ? 'kpx_tc_ingress' : c.program;
    const first = this.frame(c.protocol, client, { from: 'client', ttl: 64, syn: true });
    bpf.testRun(this.programs.get(creator)!, { data: first, ctx: programContext(creator, first.length, this.input.ifindex) });
    const forward = this.lookup(client, proto);
    if (!forward) throw new Error(`${c.program} ${c.path}: the first packet created no flow`);
    const forwardOut = outTuple(forward);

    if (c.method === 'same-frame') return this.frame(c.protocol, client, { from: 'client', ttl: TTL_MAX });
    if (c.program === 'kpx_tc_egress') {
      // The local backend's reply and its mirror: the reply entry rewrites the source back to the NodePort.
      const reply = reverse(forwardOut);
      const replyEntry = this.lookup(reply, proto);
      if (!replyEntry) throw new Error(`${c.path}: no reply entry`);
      this.putMirror(outTuple(replyEntry), reply, 0, replyEntry.flags, proto);
      return this.frame(c.protocol, reply, { from: 'backend', ttl: TTL_MAX });
    }
    const pong = this.pongBackends.get(`${dport}/${proto}`);
    if (pong === undefined) throw new Error(`no pong backend ${NODE_PORT_ADDRESS.ip}:${dport}/${c.protocol} in kpx_backends`);
    this.putMirror(forwardOut, client, pong, forward.flags, proto);
    return this.frame(c.protocol, client, { from: 'client', ttl: TTL_MAX });
  }

  /** Why a packet for addr:port would pass kpx_filter (a bit it shares with a frontend), so a 'none' case would time the lookups it means to skip. */
  private filterLetsIn(addr: string, port: number): string | undefined {
    const fd = bpf.objGet(join(this.input.bpffs, 'kpx_filter'));
    try {
      const value = bpf.mapLookup(fd, u32Key.encode({ id: 0 }), filterValue.size);
      if (!value) return 'kpx_filter has no entry';
      const { addr_bits, nodeport_bits } = filterValue.decode(value);
      // __u64 words in host order.
      const word = (bits: Buffer, at: number) => (endianness() === 'LE' ? bits.readBigUInt64LE(at) : bits.readBigUInt64BE(at));
      const isSet = (bits: Buffer, bit: number) => (word(bits, (bit >> 6) * 8) >> BigInt(bit & 63)) & 1n;
      if (isSet(addr_bits, filterAddrBit(readHostU32(ipv4Bytes(addr), 0)))) return `kpx_filter: ${addr} shares its address bit with a frontend`;
      if (isSet(nodeport_bits, port)) return `kpx_filter: port ${port} is a NodePort`;
      return undefined;
    } finally {
      closeSync(fd);
    }
  }

  private putMirror(key: Tuple, out: Tuple, backendId: number, flags: number, proto: number): void {
    const value: CtValue = {
      saddr: out.src,
      daddr: out.dst,
      sport: out.sport,
      dport: out.dport,
      backend_id: backendId,
      // CLOCK_MONOTONIC: the programs' clock (kpx_now_ns) to within its offset from boot, so the entry is fresh.
      last_seen_ns: process.hrtime.bigint(),
      flags,
      // No FIB result: the first packet of the run looks it up and keeps it, as a refreshed entry's does; the rest use it.
      fib: CT_FIB.none,
      fib_ifindex: 0,
      fib_nexthop: '0.0.0.0',
      fib_dmac: '00:00:00:00:00:00',
      fib_smac: '00:00:00:00:00:00',
    };
    bpf.mapUpdate(this.ct, ctKey.encode(toKey(key, proto)), ctValue.encode(value));
  }

  private lookup(t: Tuple, proto: number): CtValue | undefined {
    const value = bpf.mapLookup(this.ct, ctKey.encode(toKey(t, proto)), ctValue.size);
    return value && ctValue.decode(value);
  }

  /** Removes a new flow's two entries. */
  private forgetFlow(t: Tuple, protocol: 'TCP' | 'UDP'): void {
    const proto = IPPROTO[protocol];
    const forward = this.lookup(t, proto);
    if (forward) bpf.mapDelete(this.ct, ctKey.encode(toKey(reverse(outTuple(forward)), proto)));
    bpf.mapDelete(this.ct, ctKey.encode(toKey(t, proto)));
  }

  private frame(protocol: 'TCP' | 'UDP', t: Tuple, opts: { from: 'client' | 'node-b' | 'backend'; ttl: number; syn?: boolean }): Buffer {
    // Frames from outside arrive on eth0 from the client's or node-b's MAC; a local backend's reply leaves through it.
    const ethSrc = opts.from === 'client' ? CLIENT.mac : opts.from === 'node-b' ? NODE_B.mac : NODE_ETH0.mac;
    const ethDst = opts.from === 'backend' ? CLIENT.mac : NODE_ETH0.mac;
    const spec = { ethSrc, ethDst, src: t.src, dst: t.dst, sport: t.sport, dport: t.dport, ttl: opts.ttl };
    if (protocol === 'UDP') return udpFrame({ ...spec, payload: PAYLOAD });
    return opts.syn ? tcpFrame({ ...spec, flags: ['syn'] }) : tcpFrame({ ...spec, flags: ['ack'], payload: PAYLOAD });
  }

  private readStats(): Stats {
    return readStats(this.stats, this.cpus);
  }

  /** The case's counter rose by exactly `runs` and no other moved (none at all for 'none'): every run took the path. */
  private checkCounters(c: PathCase, before: Stats, runs: number): string | undefined {
    const after = this.readStats();
    const moved = (Object.keys(after) as Array<keyof Stats>).filter((name) => after[name] !== before[name]);
    const wrong = moved.filter((name) => name !== c.counter).map((name) => `${name} +${after[name] - before[name]}`);
    const counted = c.counter === 'none' ? 0n : after[c.counter] - before[c.counter];
    if (counted === (c.counter === 'none' ? 0n : BigInt(runs)) && wrong.length === 0) return undefined;
    return `kpx_stats: ${c.counter} +${counted} for ${runs} runs${wrong.length > 0 ? `, ${wrong.join(', ')}` : ''}`;
  }
}

function ipv4Bytes(addr: string): Buffer {
  const out = Buffer.alloc(4);
  ipv4ToBytes(addr, out, 0);
  return out;
}

function toKey(t: Tuple, proto: number): CtKey {
  return { saddr: t.src, daddr: t.dst, sport: t.sport, dport: t.dport, proto };
}

function outTuple(v: CtValue): Tuple {
  return { src: v.saddr, dst: v.daddr, sport: v.sport, dport: v.dport };
}

/** The tuple of the packets that answer t. */
function reverse(t: Tuple): Tuple {
  return { src: t.dst, dst: t.src, sport: t.dport, dport: t.sport };
}

const worker = new Worker(JSON.parse(process.argv[2] ?? '{}') as WorkerInput);
try {
  process.stdout.write(JSON.stringify(worker.run()) + '\n');
} finally {
  worker.close();
}
