/**
 * The eBPF datapath: loads the prebuilt objects, pins their maps and links
 * under the bpffs folder and keeps the maps equal to the compiled model.
 * A restarted agent finds the pins, reuses the maps as they are and swaps
 * the programs inside the existing links, so traffic never sees a gap.
 */
import { closeSync, existsSync, mkdirSync, openSync, constants as fsc, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { Compiler, idsFromTables } from '../compile/compile.js';
import { ALL_MAPS, TABLES, allKeys, emptyTables, type TableName, type Tables } from '../contract/tables.js';
import type { Model } from '../model/types.js';
import { diffTables, markApplied, type TableOp } from '../reconcile/table-diff.js';
import * as bpf from './libbpf.js';
import type { Datapath, SyncResult } from './types.js';

/** The committed objects, found relative to this module in src/ and in dist/. */
export const BPF_DIR = fileURLToPath(new URL('../../' + (import.meta.url.includes('/dist/') ? '../' : '') + 'bpf/', import.meta.url));

/** Socket programs of kpx_sock.o; the attach type comes from each one's SEC() name. */
export const SOCK_PROGRAMS = ['kpx_connect4', 'kpx_sendmsg4', 'kpx_recvmsg4', 'kpx_getpeername4'] as const;

export function linkPinPath(bpffs: string, program: string): string {
  return join(bpffs, `link_${program}`);
}

export interface EbpfOptions {
  bpffs: string;
  cgroup: string;
  /** max_entries per map name, for maps created by this load. */
  mapSizes?: Partial<Record<string, number>>;
  log: Logger;
}

export class TableFullError extends Error {}

export class EbpfDatapath implements Datapath {
  readonly mode = 'ebpf';
  private applied: Tables;
  private compiler: Compiler | undefined;

  private constructor(
    private readonly obj: bpf.BpfObjectPtr,
    private readonly mapFds: Record<TableName, number>,
    private readonly capacity: Record<TableName, number>,
    private readonly linkFds: number[],
    private readonly log: Logger,
  ) {
    this.applied = readTables(mapFds);
  }

  static open(opts: EbpfOptions): EbpfDatapath {
    mkdirSync(opts.bpffs, { recursive: true });
    const obj = bpf.openObject(join(BPF_DIR, 'kpx_sock.o'));
    const linkFds: number[] = [];
    const madeLinkPins: string[] = [];
    let adopted = false;
    let loaded = false;
    try {
      for (const name of ALL_MAPS) {
        const map = bpf.findMap(obj, name);
        bpf.setMapPinPath(map, join(opts.bpffs, name));
        const size = opts.mapSizes?.[name];
        if (size !== undefined) bpf.setMapMaxEntries(map, size);
      }
      adopted = existsSync(join(opts.bpffs, TABLES.frontends.map));
      bpf.loadObject(obj);
      loaded = true;
      const cgroupId = statSync(opts.cgroup, { bigint: true }).ino;
      for (const program of SOCK_PROGRAMS) {
        const made = attachOrAdopt(obj, program, opts, cgroupId, linkFds);
        if (made) madeLinkPins.push(made);
      }
      const mapFds = {} as Record<TableName, number>;
      const capacity = {} as Record<TableName, number>;
      for (const table of Object.keys(TABLES) as TableName[]) {
        mapFds[table] = bpf.mapFd(bpf.findMap(obj, TABLES[table].map));
        capacity[table] = bpf.mapMaxEntries(mapFds[table]);
      }
      const dp = new EbpfDatapath(obj, mapFds, capacity, linkFds, opts.log);
      opts.log.info(
        { bpffs: opts.bpffs, cgroup: opts.cgroup, adopted, entries: countEntries(dp.applied), newLinks: madeLinkPins.length },
        adopted ? 'ebpf datapath adopted pinned maps' : 'ebpf datapath loaded',
      );
      return dp;
    } catch (err) {
      // Undo only what this call made: the links it created, and the map pins
      // when it created them (a failed load already unpins its own).
      for (const pin of madeLinkPins) unlinkQuiet(pin);
      if (loaded && !adopted) for (const name of ALL_MAPS) unlinkQuiet(join(opts.bpffs, name));
      for (const fd of linkFds) closeSync(fd);
      bpf.closeObject(obj);
      throw err;
    }
  }

  sync(model: Model): SyncResult {
    // After a start or a failure the compiler starts over from the IDs the
    // kernel holds, and the first diff covers every key on both sides.
    const fresh = !this.compiler;
    const compiler = (this.compiler ??= new Compiler(idsFromTables(this.applied)));
    let touched;
    try {
      touched = compiler.update(model);
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
    const keys = fresh ? allKeys(desired, this.applied) : touched;
    const ops = diffTables(desired, this.applied, keys);
    let written = 0;
    let removed = 0;
    try {
      for (const op of ops) {
        if (op.op === 'upsert') written += this.upsert(op);
        else removed += this.remove(op);
      }
    } catch (err) {
      // Part of the ops may have landed: trust only what the kernel says.
      this.reread();
      throw err;
    }
    markApplied(desired, this.applied, keys);
    return { written, removed };
  }

  reread(): void {
    this.applied = readTables(this.mapFds);
    this.compiler = undefined;
  }

  close(): void {
    for (const fd of this.linkFds.splice(0)) closeSync(fd);
    bpf.closeObject(this.obj);
  }

  private upsert(op: Extract<TableOp, { op: 'upsert' }>): number {
    const spec = TABLES[op.table];
    const keys = Buffer.concat(op.entries.map((e) => e.key));
    const values = Buffer.concat(op.entries.map((e) => e.value));
    bpf.mapUpdateBatch(this.mapFds[op.table], keys, values, op.entries.length);
    this.log.trace({ map: spec.map, count: op.entries.length }, 'map upsert');
    return op.entries.length;
  }

  private remove(op: Extract<TableOp, { op: 'delete' }>): number {
    const fd = this.mapFds[op.table];
    try {
      bpf.mapDeleteBatch(fd, Buffer.concat(op.keys), op.keys.length);
    } catch (err) {
      // A batch stops at the first missing key; finish one by one.
      if (!(err instanceof bpf.BpfError) || err.errno !== bpf.ENOENT) throw err;
      for (const key of op.keys) bpf.mapDelete(fd, key);
    }
    return op.keys.length;
  }
}

/** Attaches program to the cgroup through a pinned link, or swaps it into the link a previous agent pinned. Returns the pin it created. */
function attachOrAdopt(
  obj: bpf.BpfObjectPtr,
  program: string,
  opts: EbpfOptions,
  cgroupId: bigint,
  linkFds: number[],
): string | undefined {
  const prog = bpf.findProgram(obj, program);
  const progFd = bpf.programFd(prog);
  const pin = linkPinPath(opts.bpffs, program);
  if (existsSync(pin)) {
    const linkFd = bpf.objGet(pin);
    linkFds.push(linkFd);
    const info = bpf.cgroupLinkInfo(linkFd);
    if (info.cgroupId === cgroupId) {
      bpf.linkUpdate(linkFd, progFd);
      return undefined;
    }
    opts.log.warn({ program, pin }, 'pinned link is attached to another cgroup; replacing it');
    unlinkSync(pin);
    closeSync(linkFds.pop()!);
  }
  const cgroupFd = openSync(opts.cgroup, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    const linkFd = bpf.linkCreate(progFd, cgroupFd, bpf.programAttachType(prog));
    linkFds.push(linkFd);
    bpf.objPin(linkFd, pin);
    return pin;
  } finally {
    closeSync(cgroupFd);
  }
}

function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone is what we wanted.
  }
}

export function readTables(mapFds: Record<TableName, number>): Tables {
  const tables = emptyTables();
  for (const table of Object.keys(TABLES) as TableName[]) {
    const spec = TABLES[table];
    const fd = mapFds[table];
    for (const key of bpf.mapKeys(fd, spec.key.size)) {
      const value = bpf.mapLookup(fd, key, spec.value.size);
      if (value) tables[table].set(key.toString('hex'), { key, value });
    }
  }
  return tables;
}

function countEntries(tables: Tables): Record<TableName, number> {
  const out = {} as Record<TableName, number>;
  for (const table of Object.keys(tables) as TableName[]) out[table] = tables[table].size;
  return out;
}

/** Read-only access to the pinned maps of a bpffs folder, for `kpx list` and tests. */
export function readPinnedTables(bpffs: string): Tables {
  const fds = {} as Record<TableName, number>;
  try {
    for (const table of Object.keys(TABLES) as TableName[]) fds[table] = bpf.objGet(join(bpffs, TABLES[table].map));
    return readTables(fds);
  } finally {
    for (const fd of Object.values(fds)) closeSync(fd);
  }
}

/**
 * Removes everything kpx pinned under bpffs: links first, detached at once
 * (even if a running agent still holds them), then maps. With a cgroup, a
 * link attached elsewhere is an error rather than something to remove.
 */
export function removePins(bpffs: string, cgroup?: string): string[] {
  const removed: string[] = [];
  const cgroupId = cgroup === undefined ? undefined : statSync(cgroup, { bigint: true }).ino;
  for (const program of SOCK_PROGRAMS) {
    const pin = linkPinPath(bpffs, program);
    if (!existsSync(pin)) continue;
    const fd = bpf.objGet(pin);
    try {
      if (cgroupId !== undefined && bpf.cgroupLinkInfo(fd).cgroupId !== cgroupId) {
        throw new Error(`${pin} is attached to another cgroup than ${cgroup}; not removing it`);
      }
      bpf.linkDetach(fd);
    } finally {
      closeSync(fd);
    }
    unlinkSync(pin);
    removed.push(pin);
  }
  for (const map of ALL_MAPS) {
    const pin = join(bpffs, map);
    if (!existsSync(pin)) continue;
    unlinkSync(pin);
    removed.push(pin);
  }
  return removed;
}
