/**
 * The eBPF datapath: loads the prebuilt objects, pins their maps and links
 * under the bpffs folder and keeps the maps equal to the compiled model.
 * A restarted agent finds the pins, reuses the maps as they are and swaps
 * the programs inside the existing links, so traffic never sees a gap.
 * A pinned map this build cannot reuse (an upgrade changed its struct, or
 * --map-sizes its size) is replaced by a new one; the previous programs
 * keep serving from the old maps until the first sync has filled the new
 * ones, and only then do the new programs take over the links.
 */
import { closeSync, existsSync, mkdirSync, openSync, constants as fsc, readdirSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { Compiler, idsFromTables } from '../compile/compile.js';
import { frontendKey, IPPROTO, serviceValue } from '../contract/codecs.js';
import { FrontendFilter } from '../contract/filter.js';
import { emptyPackedTables, tablesContent, type PackedTables } from '../contract/packed.js';
import { ALL_MAPS, CARRIED_OVER, DERIVED_MAPS, KERNEL_OWNED_MAPS, serviceOfSlotId, TABLES, type TableName, type Tables } from '../contract/tables.js';
import type { ModelUpdate } from '../model/types.js';
import { diffTables, opBatch, type TableOp } from '../reconcile/table-diff.js';
import { kernelHz, objectKconfig } from './kernel-config.js';
import * as bpf from './libbpf.js';
import { MAP_TYPE } from './probe.js';
import { FatalDatapathError, type Datapath, type SyncResult } from './types.js';
import { StaleUdpSocketSweeper, sweepPinPath } from './udp-sockets.js';

/** The committed objects, found relative to this module in src/ and in dist/. */
export const BPF_DIR = fileURLToPath(new URL('../../' + (import.meta.url.includes('/dist/') ? '../' : '') + 'bpf/', import.meta.url));

/** Socket programs of kpx_sock.o; the attach type comes from each one's SEC() name. */
export const SOCK_PROGRAMS = ['kpx_connect4', 'kpx_sendmsg4', 'kpx_recvmsg4', 'kpx_getpeername4', 'kpx_post_bind4'] as const;

/** Packet programs of kpx_net.o, attached per external interface. */
export const NET_PROGRAMS = ['kpx_tc_ingress', 'kpx_tc_egress', 'kpx_xdp'] as const;

/** Both objects declare every map of kpx_maps.h; the second load reuses the first one's pins. */
const OBJECT_FILES = ['kpx_sock.o', 'kpx_net.o'] as const;

const LINK_PIN_PREFIX = 'link_';

export function linkPinPath(bpffs: string, program: string, iface?: string): string {
  return join(bpffs, `${LINK_PIN_PREFIX}${program}${iface === undefined ? '' : `@${iface}`}`);
}

export interface EbpfOptions {
  bpffs: string;
  /** cgroup2 folder for the socket programs; none: they are loaded but not attached. */
  cgroup?: string;
  /** External interfaces for the tc programs (and XDP with `xdp`). */
  interfaces?: readonly string[];
  xdp?: boolean;
  /** max_entries per map name; a pinned map of another size is replaced (a kernel-owned one then starts empty). */
  mapSizes?: Partial<Record<string, number>>;
  /** The kernel's CONFIG_HZ, 0 for unknown; by default read from its config (kernel-config.ts). */
  kernelHz?: number;
  log: Logger;
}

export class TableFullError extends Error {}

/** The first sync landed, but this agent's programs could not take over the links (the previous ones keep serving). */
export class LinkTakeoverError extends FatalDatapathError {}

/** What a pinned link must be attached to for a restarted agent to keep it. */
type LinkTarget =
  | { kind: 'cgroup'; path: string; id: bigint; attachType: number }
  | { kind: 'interface'; name: string; ifindex: number; attachType: number };

interface LinkSpec {
  program: string;
  pin: string;
  target: LinkTarget;
}

export class EbpfDatapath implements Datapath {
  readonly mode = 'ebpf';
  /**
   * The kernel's tables as read back at start, after a failed sync or for a
   * resync: a new compiler takes its IDs from them, and the next sync diffs
   * every key against them (repairing whatever drifted). Dropped once that
   * sync lands; later ones diff against Changes.before.
   */
  private kernelTables: PackedTables | undefined;
  private compiler: Compiler | undefined;
  /** The links this agent holds, once its first sync has landed. */
  private readonly linkFds: number[] = [];
  /** The model update the compiler holds. */
  private compiledSequence = -1;
  /**
   * kpx_filter as written, counting the kernel's frontends; none: rebuilt
   * from kernelTables and written whole by the next sync (the pinned value
   * may be stale, or the map new).
   */
  private filter: FrontendFilter | undefined;
  /** Key 0: the one entry of kpx_filter and of kpx_sync_seq. */
  private readonly oneEntryKey = Buffer.alloc(4);
  /** kpx_sync_seq as last written (read at start): odd while a sync writes the tables, or after one failed. */
  private syncSeq: bigint;
  private readonly syncSeqValue = Buffer.alloc(8);

  private constructor(
    private readonly objects: bpf.BpfObjectPtr[],
    private readonly mapFds: Record<TableName, number>,
    private readonly filterFd: number,
    private readonly syncSeqFd: number,
    private readonly capacity: Record<TableName, number>,
    /** Tables kept in arrays indexed by ID: a delete writes zeros, and an ID must be below the size. */
    private readonly arrays: ReadonlySet<TableName>,
    /** Links to attach or adopt once the first sync has landed. */
    private pendingLinks: (() => TakenOver) | undefined,
    /** The maps set aside for replacement, held open until the new programs take over. */
    private readonly setAside: SetAsidePin[],
    /** Kernel-wide program IDs by program name. */
    private readonly programIds: Map<string, number>,
    private readonly log: Logger,
  ) {
    this.kernelTables = readTables(mapFds);
    this.syncSeq = bpf.mapLookup(syncSeqFd, this.oneEntryKey, 8)?.readBigUInt64LE(0) ?? 0n;
  }

  /** Aborts connected UDP sockets whose backend left their Service; none without a cgroup or bpf_sock_destroy. */
  private udpSweeper: StaleUdpSocketSweeper | undefined;

  static open(opts: EbpfOptions): EbpfDatapath {
    mkdirSync(opts.bpffs, { recursive: true });
    const objects: bpf.BpfObjectPtr[] = [];
    const madeMapPins: string[] = [];
    const setAside: SetAsidePin[] = [];
    try {
      const adopted = existsSync(join(opts.bpffs, TABLES.frontends.map));
      const programs = new Map<string, bpf.BpfProgramPtr>();
      const kconfig = objectKconfig(opts.kernelHz ?? kernelHz());
      for (const file of OBJECT_FILES) {
        const obj = bpf.openObject(join(BPF_DIR, file), kconfig);
        objects.push(obj);
        const maps = bpf.objectMaps(obj);
        for (const [name, map] of maps) {
          bpf.setMapPinPath(map, join(opts.bpffs, name));
          const size = opts.mapSizes?.[name];
          if (size !== undefined) bpf.setMapMaxEntries(map, size);
        }
        setAsideMismatchedPins(maps, opts.bpffs, opts.log, setAside);
        const missing = [...maps.keys()].map((name) => join(opts.bpffs, name)).filter((pin) => !existsSync(pin));
        bpf.loadObject(obj);
        madeMapPins.push(...missing);
        for (const name of file === 'kpx_sock.o' ? SOCK_PROGRAMS : NET_PROGRAMS) programs.set(name, bpf.findProgram(obj, name));
      }
      const wanted = linkSpecs(opts, programs);
      // Called once the first sync has landed (takeOverLinks): until then
      // whatever programs hold the links keep serving, from the pinned maps,
      // or from the old ones if a map was replaced, so an agent that dies
      // before its maps are filled never leaves programs on half-filled maps.
      const attachAfterFirstSync = (): TakenOver => {
        const linkFds: number[] = [];
        const made: string[] = [];
        const swapped: SwappedLink[] = [];
        try {
          for (const spec of wanted) {
            const pin = attachOrAdopt(spec, bpf.programFd(programs.get(spec.program)), opts.log, linkFds, swapped);
            if (pin) made.push(pin);
          }
          const removed = sweepLinkPins(opts.bpffs, new Set(wanted.map((l) => l.pin)));
          return { linkFds, newLinks: made.length, removedLinks: removed };
        } catch (err) {
          // Undo this attempt: links it created go with their pins and fds
          // (an unpinned link is released with its last fd), links it swapped
          // get their previous programs back.
          for (const pin of made) unlinkQuiet(pin);
          for (const link of swapped) swapBack(link, opts.log);
          for (const fd of linkFds) closeSync(fd);
          throw err;
        } finally {
          for (const { previousProgramFd } of swapped) closeSync(previousProgramFd);
        }
      };
      const mapFds = {} as Record<TableName, number>;
      const capacity = {} as Record<TableName, number>;
      const arrays = new Set<TableName>();
      for (const table of Object.keys(TABLES) as TableName[]) {
        mapFds[table] = bpf.mapFd(bpf.findMap(objects[0], TABLES[table].map));
        const shape = bpf.mapShape(mapFds[table]);
        capacity[table] = shape.maxEntries;
        if (shape.type === MAP_TYPE.array) arrays.add(table);
      }
      const programIds = new Map([...programs].map(([name, prog]) => [name, bpf.programId(bpf.programFd(prog))]));
      const [filterFd, syncSeqFd] = DERIVED_MAPS.map((name) => bpf.mapFd(bpf.findMap(objects[0], name))) as [number, number];
      const dp = new EbpfDatapath(objects, mapFds, filterFd, syncSeqFd, capacity, arrays, attachAfterFirstSync, setAside, programIds, opts.log);
      dp.udpSweeper = openUdpSweeper(opts);
      opts.log.info(
        {
          bpffs: opts.bpffs,
          cgroup: opts.cgroup,
          interfaces: opts.interfaces ?? [],
          xdp: opts.xdp ?? false,
          adopted,
          entries: countEntries(dp.kernelTables!),
          replacedMaps: setAside.map((s) => s.name),
        },
        adopted ? 'ebpf datapath adopted pinned maps' : 'ebpf datapath loaded',
      );
      return dp;
    } catch (err) {
      // Undo only what this call made: the map pins it created, and the pins it set aside.
      for (const pin of madeMapPins) unlinkQuiet(pin);
      restoreSetAside(setAside, opts.log);
      for (const obj of objects) bpf.closeObject(obj);
      throw err;
    }
  }

  /** The kernel-wide ID of one of the loaded programs (for BPF_PROG_TEST_RUN through bpftool). */
  programId(program: string): number {
    const id = this.programIds.get(program);
    if (id === undefined) throw new Error(`no program ${program}`);
    return id;
  }

  sync(update: ModelUpdate): SyncResult {
    // A new compiler (at start, or after a failed sync) starts from the IDs
    // the kernel holds; its first update names no keys, and that sync diffs
    // every key against the kernel.
    const fresh = !this.compiler;
    const kernelTables = fresh ? (this.kernelTables ??= readTables(this.mapFds)) : undefined;
    const compiler = (this.compiler ??= new Compiler(idsFromTables(kernelTables!, this.capacity)));
    let changes;
    try {
      const delta = update.delta;
      changes =
        !fresh && delta !== undefined && delta.since === this.compiledSequence ? compiler.updateDelta(delta) : compiler.update(update.full());
      this.compiledSequence = update.sequence;
    } catch (err) {
      this.compiler = undefined;
      throw err;
    }
    const desired = compiler.tables;
    for (const table of Object.keys(TABLES) as TableName[]) {
      if (desired[table].size > this.capacity[table]) {
        this.compiler = undefined;
        throw new TableFullError(
          `map ${TABLES[table].map} is full: ${desired[table].size} entries needed, ${this.capacity[table]} available; nothing was written (raise its size)`,
        );
      }
    }
    // The kernel's side: all of it when it was read back, else what the touched keys held.
    const held = this.kernelTables ?? changes?.before;
    if (!held) throw new Error('ebpf sync: no kernel side to diff against');
    const ops = diffTables(desired, held, this.kernelTables ? undefined : changes?.touched);
    for (const op of ops) {
      if (op.op !== 'upsert' || !this.arrays.has(op.table)) continue;
      const t = desired[op.table];
      for (let i = 0; i < op.slots.length; i++) {
        const id = t.idAt(op.slots[i]!);
        if (id < this.capacity[op.table]) continue;
        this.compiler = undefined;
        throw new TableFullError(`map ${TABLES[op.table].map} is full: ID ${id} is past its ${this.capacity[op.table]} entries; nothing was written (raise its size)`);
      }
    }
    let written = 0;
    let removed = 0;
    try {
      const known = this.filter;
      // Without a known filter, from the kernel's whole content: it is what the filter must cover.
      const filter = known ?? FrontendFilter.of((this.kernelTables ?? readTables(this.mapFds)).frontends);
      // Cleared so that a failure from here on rebuilds it from what the kernel holds.
      this.filter = undefined;
      // Odd from the first write until the last one landed: kpx_iter.o acts on no half-written update, and
      // kpx_sendmsg4 keeps no translation from one.
      this.writeSyncSeq(this.syncSeq | 1n);
      if (this.countFrontends(filter, ops, desired, held) || !known) this.writeFilter(filter);
      for (const op of ops) {
        if (op.op === 'upsert') written += this.upsert(op, desired, held);
        else removed += this.remove(op, desired, held);
      }
      if (filter.settle()) this.writeFilter(filter);
      this.filter = filter;
      this.writeSyncSeq(this.syncSeq + 1n);
    } catch (err) {
      // Part of the ops may have landed: trust only what the kernel says,
      // and start a new compiler from the IDs it holds. This one has freed
      // IDs the kernel may still reach, and would hand them out again.
      this.compiler = undefined;
      // Cleared first: if the read fails too, the next sync reads again.
      this.kernelTables = undefined;
      this.kernelTables = readTables(this.mapFds);
      throw err;
    }
    this.kernelTables = undefined;
    if (this.pendingLinks) this.takeOverLinks(this.pendingLinks);
    // After a start or a repair, every connected socket may be stale; else only those of UDP service ports that changed.
    if (this.udpSweeper && (fresh || changesUdpBackends(ops, desired, held))) this.udpSweeper.request();
    return { written, removed, full: fresh };
  }

  /**
   * For a resync after syncs that landed: the compiler's tables stay what
   * the model wants and its freed IDs are gone from the kernel; only the
   * kernel's side is read afresh (it may have drifted).
   */
  reread(): void {
    this.kernelTables = readTables(this.mapFds);
    this.filter = undefined;
  }

  /** Counts the ops' new and deleted frontends into the filter; true when that set a bit. */
  private countFrontends(filter: FrontendFilter, ops: TableOp[], desired: PackedTables, held: PackedTables): boolean {
    let set = false;
    for (const op of ops) {
      if (op.table !== 'frontends') continue;
      const from = op.op === 'upsert' ? desired.frontends : held.frontends;
      for (let i = 0; i < op.slots.length; i++) {
        const slot = op.slots[i]!;
        const at = slot * from.keySize;
        if (op.op === 'delete') filter.remove(from.keys, at);
        else if (!held.frontends.has(from.idAt(slot))) set = filter.add(from.keys, at) || set;
      }
    }
    return set;
  }

  private writeFilter(filter: FrontendFilter): void {
    bpf.mapUpdate(this.filterFd, this.oneEntryKey, filter.value);
  }

  private writeSyncSeq(seq: bigint): void {
    if (seq === this.syncSeq) return;
    this.syncSeqValue.writeBigUInt64LE(seq, 0);
    bpf.mapUpdate(this.syncSeqFd, this.oneEntryKey, this.syncSeqValue);
    this.syncSeq = seq;
  }

  /** The new programs take over the links now that their maps hold the model; the old maps go with the old programs. */
  private takeOverLinks(attach: () => TakenOver): void {
    // Right before the swap, so the old programs' flows are copied as late as they can be.
    for (const aside of this.setAside) this.carryOver(aside);
    let taken: TakenOver;
    try {
      taken = attach();
    } catch (err) {
      throw new LinkTakeoverError(`the first sync landed, but the programs could not take over the links: ${(err as Error).message}`, { cause: err });
    }
    const { linkFds, newLinks, removedLinks } = taken;
    this.linkFds.push(...linkFds);
    this.pendingLinks = undefined;
    // Until the swap the previous programs served from their own tables (set-aside maps, or a model this
    // agent has since changed) and kept sendto translations under the current sequence: make those stale.
    this.writeSyncSeq(this.syncSeq + 2n);
    const replacedMaps = this.setAside.map((s) => s.name);
    for (const { fd } of this.setAside.splice(0)) closeSync(fd);
    this.log.info({ newLinks, removedLinks, replacedMaps }, 'the first sync landed: this agent\'s programs took over the links');
  }

  /** Copies a replaced kernel-owned map's entries into its replacement, where CARRIED_OVER allows; a failure only costs them. */
  private carryOver({ name, fd }: SetAsidePin): void {
    const map = this.objects.map((obj) => bpf.objectMaps(obj).get(name)).find((m) => m !== undefined);
    if (!map) return;
    const newFd = bpf.mapFd(map);
    const old = bpf.mapShape(fd);
    const now = bpf.mapShape(newFd);
    if (!carriesOver(name, old, now)) return;
    let carried = 0;
    try {
      for (const batch of bpf.mapEntryBatches(fd, old.keySize, old.valueSize)) {
        const values = Buffer.alloc(batch.count * now.valueSize);
        for (let i = 0; i < batch.count; i++) batch.values.copy(values, i * now.valueSize, i * old.valueSize, (i + 1) * old.valueSize);
        bpf.mapUpdateBatch(newFd, batch.keys, values, batch.count);
        carried += batch.count;
      }
      this.log.info({ map: name, entries: carried }, 'entries of the replaced map carried over');
    } catch (err) {
      this.log.warn({ map: name, carried, err: (err as Error).message }, 'could not carry over the replaced map\'s entries; the rest start over');
    }
  }

  close(): void {
    // Closed before the first sync after a map was replaced: the old maps go back to their pins, for the next agent.
    restoreSetAside(this.setAside, this.log);
    this.udpSweeper?.close();
    for (const fd of this.linkFds.splice(0)) closeSync(fd);
    for (const obj of this.objects.splice(0)) bpf.closeObject(obj);
  }

  private upsert(op: TableOp, desired: PackedTables, held: PackedTables): number {
    const { keys, values, count } = opBatch(op, desired, held);
    try {
      bpf.mapUpdateBatch(this.mapFds[op.table], keys, values!, count);
    } catch (err) {
      // New entries go in before the old ones go out, so a map can fill up part-way although the model fits.
      if (err instanceof bpf.BpfError && err.errno === bpf.E2BIG) {
        throw new TableFullError(
          `map ${TABLES[op.table].map} filled up during the update: its ${this.capacity[op.table]} entries must hold the new ones before the old ones are removed (raise its size)`,
        );
      }
      throw err;
    }
    this.log.trace({ map: TABLES[op.table].map, count }, 'map upsert');
    return count;
  }

  private remove(op: TableOp, desired: PackedTables, held: PackedTables): number {
    const fd = this.mapFds[op.table];
    const { keys, count } = opBatch(op, desired, held);
    if (this.arrays.has(op.table)) {
      // An array entry cannot go: all zeros is its absence.
      bpf.mapUpdateBatch(fd, keys, Buffer.alloc(count * TABLES[op.table].value.size), count);
      return count;
    }
    try {
      bpf.mapDeleteBatch(fd, keys, count);
    } catch (err) {
      // A batch stops at the first missing key; finish one by one.
      if (!(err instanceof bpf.BpfError) || err.errno !== bpf.ENOENT) throw err;
      const size = keys.length / count;
      for (let i = 0; i < count; i++) bpf.mapDelete(fd, keys.subarray(i * size, (i + 1) * size));
    }
    return count;
  }
}

/** The links the options ask for: socket programs on the cgroup, packet programs on each interface. */
function linkSpecs(opts: EbpfOptions, programs: Map<string, bpf.BpfProgramPtr>): LinkSpec[] {
  const specs: LinkSpec[] = [];
  if (opts.cgroup !== undefined) {
    const id = statSync(opts.cgroup, { bigint: true }).ino;
    for (const program of SOCK_PROGRAMS) {
      const attachType = bpf.programAttachType(programs.get(program));
      specs.push({ program, pin: linkPinPath(opts.bpffs, program), target: { kind: 'cgroup', path: opts.cgroup, id, attachType } });
    }
  }
  for (const name of opts.interfaces ?? []) {
    const ifindex = bpf.interfaceIndex(name);
    if (ifindex === undefined) throw new Error(`--interfaces: no interface ${name} in this network namespace`);
    const packetPrograms: Array<[string, number]> = [
      ['kpx_tc_ingress', bpf.ATTACH.tcxIngress],
      ['kpx_tc_egress', bpf.ATTACH.tcxEgress],
    ];
    if (opts.xdp) packetPrograms.push(['kpx_xdp', bpf.ATTACH.xdp]);
    for (const [program, attachType] of packetPrograms) {
      specs.push({ program, pin: linkPinPath(opts.bpffs, program, name), target: { kind: 'interface', name, ifindex, attachType } });
    }
  }
  return specs;
}

function linkMatches(info: bpf.LinkInfo, target: LinkTarget): boolean {
  if (target.kind === 'cgroup') return 'cgroupId' in info && info.cgroupId === target.id && info.attachType === target.attachType;
  return 'ifindex' in info && info.ifindex === target.ifindex && info.attachType === target.attachType;
}

/**
 * A pinned link whose program this agent swapped for its own, and an fd of
 * the program it had: taken before the swap, as the link may have been that
 * program's last holder. Kept until the takeover is done, to go back to if
 * it fails.
 */
interface SwappedLink {
  linkFd: number;
  previousProgramFd: number;
}

function swapBack({ linkFd, previousProgramFd }: SwappedLink, log: Logger): void {
  try {
    bpf.linkUpdate(linkFd, previousProgramFd);
  } catch (err) {
    log.error({ err: (err as Error).message }, 'could not give a link its previous program back');
  }
}

/**
 * Attaches a program through a pinned link, or swaps it into the link a
 * previous agent pinned for the same target (noted in swapped), so traffic
 * never sees a gap. Returns the pin it created.
 */
function attachOrAdopt(spec: LinkSpec, progFd: number, log: Logger, linkFds: number[], swapped: SwappedLink[]): string | undefined {
  if (existsSync(spec.pin)) {
    const linkFd = bpf.objGet(spec.pin);
    linkFds.push(linkFd);
    const info = bpf.linkInfo(linkFd);
    if (linkMatches(info, spec.target)) {
      const previousProgramFd = bpf.programFdById(info.progId);
      swapped.push({ linkFd, previousProgramFd });
      bpf.linkUpdate(linkFd, progFd);
      return undefined;
    }
    // Another cgroup, or an interface that was recreated (its old link is defunct).
    log.warn({ program: spec.program, pin: spec.pin }, 'pinned link is attached elsewhere; replacing it');
    bpf.linkDetach(linkFd);
    unlinkSync(spec.pin);
    closeSync(linkFds.pop()!);
  }
  const target = spec.target;
  const targetFd = target.kind === 'cgroup' ? openSync(target.path, fsc.O_RDONLY | fsc.O_DIRECTORY) : undefined;
  try {
    const linkFd = bpf.linkCreate(progFd, target.kind === 'cgroup' ? targetFd! : target.ifindex, target.attachType);
    linkFds.push(linkFd);
    bpf.objPin(linkFd, spec.pin);
    return spec.pin;
  } finally {
    if (targetFd !== undefined) closeSync(targetFd);
  }
}

/** What the first sync's link takeover did: the links it holds, how many it made, and the stale link pins it removed. */
interface TakenOver {
  linkFds: number[];
  newLinks: number;
  removedLinks: string[];
}

/** A pinned map this build cannot reuse, unpinned and held open until the new programs take over. */
interface SetAsidePin {
  name: string;
  pin: string;
  fd: number;
}

function sameShape(a: bpf.MapShape, b: bpf.MapShape): boolean {
  return a.type === b.type && a.keySize === b.keySize && a.valueSize === b.valueSize && a.maxEntries === b.maxEntries && a.flags === b.flags;
}

/**
 * Unpins every pinned map whose shape differs from what the object declares
 * (libbpf would refuse to reuse it and the load would fail), keeping a
 * handle to it in setAside as it goes, so a failure part-way can put back
 * what was taken. The load then creates and pins a new map in its place.
 * If any control-plane table is replaced, all of them are: the old programs
 * must go on reading one consistent set of tables (IDs, slots, counts)
 * while the first sync fills the new set.
 */
function setAsideMismatchedPins(maps: Map<string, bpf.BpfMapPtr>, bpffs: string, log: Logger, setAside: SetAsidePin[]): void {
  // kpx_filter goes with the tables: a filter speaks for one set of frontends, and the programs on the links read both.
  const tableMaps = new Set<string>([...Object.values(TABLES).map((t) => t.map), ...DERIVED_MAPS]);
  const mismatched = new Map<string, { pinned: bpf.MapShape; declared: bpf.MapShape }>();
  for (const [name, map] of maps) {
    const pin = join(bpffs, name);
    if (!existsSync(pin)) continue;
    const fd = bpf.objGet(pin);
    try {
      const pinned = bpf.mapShape(fd);
      const declared = bpf.declaredMapShape(map);
      if (!sameShape(pinned, declared)) mismatched.set(name, { pinned, declared });
    } finally {
      closeSync(fd);
    }
  }
  const tablesReplaced = [...mismatched.keys()].some((name) => tableMaps.has(name));
  for (const name of maps.keys()) {
    const pin = join(bpffs, name);
    const shapes = mismatched.get(name);
    if (!existsSync(pin) || (shapes === undefined && !(tablesReplaced && tableMaps.has(name)))) continue;
    // Recorded before the unpin: if that fails, restoring re-pins the same map.
    setAside.push({ name, pin, fd: bpf.objGet(pin) });
    unlinkSync(pin);
    const why = shapes === undefined ? 'replaced with the other control-plane tables' : 'differs from this build: replaced';
    const kernelOwned = (KERNEL_OWNED_MAPS as readonly string[]).includes(name);
    log.warn(
      { map: name, ...shapes },
      !kernelOwned
        ? `pinned map ${why}; the old programs serve from it until the first sync fills the new one`
        : shapes && carriesOver(name, shapes.pinned, shapes.declared)
          ? `pinned map ${why}; its entries are carried over when this agent's programs take over`
          : `pinned map ${why}, and what it held (flows, socket mappings, counters) starts over`,
    );
  }
}

/** Whether a replaced map's entries go into its replacement: the same kind of map and key, and a value CARRIED_OVER says is a prefix. */
function carriesOver(name: string, pinned: bpf.MapShape, declared: bpf.MapShape): boolean {
  const prefixSizes = CARRIED_OVER[name as keyof typeof CARRIED_OVER];
  return (
    prefixSizes !== undefined &&
    pinned.type === declared.type &&
    pinned.keySize === declared.keySize &&
    (pinned.valueSize === declared.valueSize || prefixSizes.includes(pinned.valueSize))
  );
}

/** Puts set-aside maps back on their pins (in place of any new map there), each on its own: one failure stops none of the others. */
function restoreSetAside(setAside: SetAsidePin[], log: Logger): void {
  for (const { name, pin, fd } of setAside.splice(0)) {
    try {
      unlinkQuiet(pin);
      bpf.objPin(fd, pin);
    } catch (err) {
      log.error({ map: name, err: (err as Error).message }, 'could not put the previous map back on its pin');
    } finally {
      closeSync(fd);
    }
  }
}

/** Detaches and removes pinned links that the current options no longer ask for (an interface dropped, XDP turned off). */
function sweepLinkPins(bpffs: string, wanted: Set<string>): string[] {
  const removed: string[] = [];
  for (const name of readdirSync(bpffs)) {
    const pin = join(bpffs, name);
    if (!name.startsWith(LINK_PIN_PREFIX) || wanted.has(pin)) continue;
    detachPinned(pin);
    removed.push(pin);
  }
  return removed;
}

function detachPinned(pin: string): void {
  const fd = bpf.objGet(pin);
  try {
    bpf.linkDetach(fd);
  } finally {
    closeSync(fd);
  }
  unlinkSync(pin);
}

function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone is what we wanted.
  }
}

export function readTables(mapFds: Record<TableName, number>): PackedTables {
  const tables = emptyPackedTables();
  for (const table of Object.keys(TABLES) as TableName[]) {
    const { key, value } = TABLES[table];
    // Every index of an array reads back; the all-zero ones are absent.
    const array = bpf.mapShape(mapFds[table]).type === MAP_TYPE.array;
    for (const batch of bpf.mapEntryBatches(mapFds[table], key.size, value.size)) {
      for (let i = 0; i < batch.count; i++) {
        if (array && allZero(batch.values, i * value.size, value.size)) continue;
        tables[table].set(batch.keys.subarray(i * key.size, (i + 1) * key.size), batch.values.subarray(i * value.size, (i + 1) * value.size));
      }
    }
  }
  return tables;
}

function allZero(buf: Buffer, at: number, length: number): boolean {
  for (let i = at; i < at + length; i++) if (buf[i] !== 0) return false;
  return true;
}

function countEntries(tables: PackedTables): Record<TableName, number> {
  const out = {} as Record<TableName, number>;
  for (const table of Object.keys(tables) as TableName[]) out[table] = tables[table].size;
  return out;
}

/** Read-only access to the pinned maps of a bpffs folder, for `kpx list` and tests. */
export function readPinnedTables(bpffs: string): Tables {
  const fds = {} as Record<TableName, number>;
  try {
    for (const table of Object.keys(TABLES) as TableName[]) fds[table] = bpf.objGet(join(bpffs, TABLES[table].map));
    return tablesContent(readTables(fds));
  } finally {
    for (const fd of Object.values(fds)) closeSync(fd);
  }
}

/**
 * Removes everything kpx pinned under bpffs: links first, detached at once
 * (even if a running agent still holds them), then maps. With a cgroup, a
 * socket link attached elsewhere is an error rather than something to remove.
 */
export function removePins(bpffs: string, cgroup?: string): string[] {
  if (!existsSync(bpffs)) return [];
  const removed: string[] = [];
  const cgroupId = cgroup === undefined ? undefined : statSync(cgroup, { bigint: true }).ino;
  for (const name of readdirSync(bpffs).filter((n) => n.startsWith(LINK_PIN_PREFIX))) {
    const pin = join(bpffs, name);
    if (cgroupId !== undefined) {
      const fd = bpf.objGet(pin);
      try {
        const info = bpf.linkInfo(fd);
        if ('cgroupId' in info && info.cgroupId !== cgroupId) {
          throw new Error(`${pin} is attached to another cgroup than ${cgroup}; not removing it`);
        }
      } finally {
        closeSync(fd);
      }
    }
    detachPinned(pin);
    removed.push(pin);
  }
  for (const pin of [sweepPinPath(bpffs), ...ALL_MAPS.map((map) => join(bpffs, map))]) {
    if (!existsSync(pin)) continue;
    unlinkSync(pin);
    removed.push(pin);
  }
  return removed;
}

/**
 * The sweeper of stale connected UDP sockets (udp-sockets.ts), where the
 * socket programs are attached and the kernel has bpf_sock_destroy (6.5).
 * Without it everything else works: such sockets keep a dropped backend.
 */
function openUdpSweeper(opts: EbpfOptions): StaleUdpSocketSweeper | undefined {
  if (opts.cgroup === undefined) return undefined;
  const keep = 'connected UDP sockets keep a backend their Service dropped';
  try {
    if (!bpf.kernelHasFunc('bpf_sock_destroy')) {
      opts.log.warn(`the kernel has no bpf_sock_destroy: ${keep}`);
      return undefined;
    }
    return StaleUdpSocketSweeper.open({ bpffs: opts.bpffs, objectPath: join(BPF_DIR, 'kpx_iter.o'), cgroup: opts.cgroup, log: opts.log });
  } catch (err) {
    opts.log.warn({ err: (err as Error).message }, `could not set up the stale UDP socket sweep: ${keep}`);
    return undefined;
  }
}

const SERVICE_PROTO_AT = serviceValue.offsetsOf(['namespace', 'name', 'port_name', 'proto', 'skip_reason', 'pad']).proto;
const FRONTEND_PROTO_AT = frontendKey.offsetsOf(['addr', 'port', 'proto', 'pad']).proto;

/**
 * Whether the ops change which backends a UDP service port has: its
 * frontends, its slots, or the node addresses its NodePorts answer on.
 */
function changesUdpBackends(ops: readonly TableOp[], desired: PackedTables, held: PackedTables): boolean {
  const protoOf = new Map<number, number | undefined>();
  const serviceProto = (service: number): number | undefined => {
    if (protoOf.has(service)) return protoOf.get(service);
    let proto: number | undefined;
    for (const tables of [desired, held]) {
      const slot = tables.services.slot(service);
      if (slot === undefined) continue;
      proto = tables.services.values[slot * serviceValue.size + SERVICE_PROTO_AT];
      break;
    }
    protoOf.set(service, proto);
    return proto;
  };
  for (const op of ops) {
    if (op.table === 'nodeAddrs') return true;
    if (op.table !== 'frontends' && op.table !== 'slots') continue;
    const from = op.op === 'upsert' ? desired[op.table] : held[op.table];
    for (let i = 0; i < op.slots.length; i++) {
      const slot = op.slots[i]!;
      const proto = op.table === 'frontends' ? from.keys[slot * from.keySize + FRONTEND_PROTO_AT] : serviceProto(serviceOfSlotId(from.idAt(slot)));
      if (proto === IPPROTO.UDP) return true;
    }
  }
  return false;
}
