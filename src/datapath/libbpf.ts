/**
 * The libbpf calls kpx makes, bound with koffi. libbpf 1.x returns negative
 * errno values from its low-level calls and NULL (with errno set) from the
 * object API; `check` turns both into exceptions that name the call.
 */
import koffi from 'koffi';

const lib = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');

koffi.opaque('bpf_object');
koffi.opaque('bpf_map');
koffi.opaque('bpf_program');
koffi.opaque('btf');
/**
 * struct bpf_object_open_opts (libbpf 1.x) up to `kconfig`, the one member
 * kpx sets; `sz` tells libbpf where the caller's struct ends.
 */
const ObjectOpenOpts = koffi.struct('bpf_object_open_opts', {
  sz: 'size_t',
  object_name: 'const char *',
  relaxed_maps: 'bool',
  pin_root_path: 'const char *',
  attach_prog_fd_removed: 'uint32_t',
  kconfig: 'const char *',
});

export type BpfObjectPtr = unknown;
export type BpfMapPtr = unknown;
export type BpfProgramPtr = unknown;

const fn = {
  objectOpenFile: lib.func('bpf_object *bpf_object__open_file(const char *path, const bpf_object_open_opts *opts)'),
  objectLoad: lib.func('int bpf_object__load(bpf_object *obj)'),
  objectClose: lib.func('void bpf_object__close(bpf_object *obj)'),
  nextMap: lib.func('bpf_map *bpf_object__next_map(const bpf_object *obj, const bpf_map *map)'),
  mapName: lib.func('const char *bpf_map__name(const bpf_map *map)'),
  mapIsInternal: lib.func('bool bpf_map__is_internal(const bpf_map *map)'),
  findMapByName: lib.func('bpf_map *bpf_object__find_map_by_name(const bpf_object *obj, const char *name)'),
  mapSetPinPath: lib.func('int bpf_map__set_pin_path(bpf_map *map, const char *path)'),
  mapSetMaxEntries: lib.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t max_entries)'),
  mapFd: lib.func('int bpf_map__fd(const bpf_map *map)'),
  mapType: lib.func('int bpf_map__type(const bpf_map *map)'),
  mapKeySize: lib.func('uint32_t bpf_map__key_size(const bpf_map *map)'),
  mapValueSize: lib.func('uint32_t bpf_map__value_size(const bpf_map *map)'),
  mapDefMaxEntries: lib.func('uint32_t bpf_map__max_entries(const bpf_map *map)'),
  mapFlags: lib.func('uint32_t bpf_map__map_flags(const bpf_map *map)'),
  findProgramByName: lib.func('bpf_program *bpf_object__find_program_by_name(const bpf_object *obj, const char *name)'),
  programFd: lib.func('int bpf_program__fd(const bpf_program *prog)'),
  programExpectedAttachType: lib.func('int bpf_program__expected_attach_type(const bpf_program *prog)'),
  linkCreate: lib.func('int bpf_link_create(int prog_fd, int target_fd, int attach_type, const void *opts)'),
  linkDetach: lib.func('int bpf_link_detach(int link_fd)'),
  linkUpdate: lib.func('int bpf_link_update(int link_fd, int new_prog_fd, const void *opts)'),
  objPin: lib.func('int bpf_obj_pin(int fd, const char *path)'),
  objGet: lib.func('int bpf_obj_get(const char *path)'),
  objGetInfoByFd: lib.func('int bpf_obj_get_info_by_fd(int fd, _Inout_ uint8_t *info, _Inout_ uint32_t *len)'),
  mapUpdateElem: lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  mapLookupElem: lib.func('int bpf_map_lookup_elem(int fd, const void *key, _Out_ uint8_t *value)'),
  mapDeleteElem: lib.func('int bpf_map_delete_elem(int fd, const void *key)'),
  mapGetNextKey: lib.func('int bpf_map_get_next_key(int fd, const void *key, _Out_ uint8_t *next)'),
  mapUpdateBatch: lib.func(
    'int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, const void *opts)',
  ),
  mapDeleteBatch: lib.func('int bpf_map_delete_batch(int fd, const void *keys, _Inout_ uint32_t *count, const void *opts)'),
  mapLookupBatch: lib.func(
    'int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, const void *opts)',
  ),
  btfLoadVmlinux: lib.func('btf *btf__load_vmlinux_btf(void)'),
  btfFindByNameKind: lib.func('int btf__find_by_name_kind(const btf *btf, const char *name, uint32_t kind)'),
  btfFree: lib.func('void btf__free(btf *btf)'),
  strerror: lib.func('int libbpf_strerror(int err, _Out_ char *buf, size_t size)'),
  ifNameToIndex: libc.func('unsigned int if_nametoindex(const char *ifname)'),
};

export class BpfError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    super(`${call}: ${describeErrno(errno)}`);
  }
}

function describeErrno(errno: number): string {
  const buf = Buffer.alloc(256);
  fn.strerror(-errno, buf, buf.length);
  const nul = buf.indexOf(0);
  return `${buf.subarray(0, nul < 0 ? buf.length : nul).toString()} (errno ${errno})`;
}

function check(call: string, rc: number): number {
  if (rc < 0) throw new BpfError(call, -rc);
  return rc;
}

function checkPtr<T>(call: string, ptr: T): T {
  if (ptr === null) throw new BpfError(call, koffi.errno());
  return ptr;
}

export const ENOENT = 2;
/** A full preallocated hash map refuses a new key with it. */
export const E2BIG = 7;
const ENOSPC = 28;

/**
 * Opens an object file. `kconfig` ("CONFIG_X=v" lines) gives its __kconfig
 * externs their values; libbpf otherwise reads the kernel's config file for
 * them and fails the load where there is none.
 */
export function openObject(path: string, kconfig?: string): BpfObjectPtr {
  const opts =
    kconfig === undefined
      ? null
      : { sz: koffi.sizeof(ObjectOpenOpts), object_name: null, relaxed_maps: false, pin_root_path: null, attach_prog_fd_removed: 0, kconfig };
  return checkPtr(`bpf_object__open_file(${path})`, fn.objectOpenFile(path, opts));
}

export function loadObject(obj: BpfObjectPtr): void {
  check('bpf_object__load', fn.objectLoad(obj));
}

export function closeObject(obj: BpfObjectPtr): void {
  fn.objectClose(obj);
}

/**
 * The maps an object declares in its .maps section, by name. Not the ones
 * libbpf makes for the object itself (.kconfig, .rodata): each object has
 * its own, and they are never shared or pinned.
 */
export function objectMaps(obj: BpfObjectPtr): Map<string, BpfMapPtr> {
  const maps = new Map<string, BpfMapPtr>();
  for (let map = fn.nextMap(obj, null); map !== null; map = fn.nextMap(obj, map)) {
    if (!fn.mapIsInternal(map)) maps.set(fn.mapName(map) as string, map);
  }
  return maps;
}

export function findMap(obj: BpfObjectPtr, name: string): BpfMapPtr {
  return checkPtr(`bpf_object__find_map_by_name(${name})`, fn.findMapByName(obj, name));
}

export function setMapPinPath(map: BpfMapPtr, path: string): void {
  check(`bpf_map__set_pin_path(${path})`, fn.mapSetPinPath(map, path));
}

export function setMapMaxEntries(map: BpfMapPtr, maxEntries: number): void {
  check('bpf_map__set_max_entries', fn.mapSetMaxEntries(map, maxEntries));
}

/** What a map is made as: what libbpf compares before it reuses a pinned map (bpf_map_info's first fields). */
export interface MapShape {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

/** The shape the object declares for a map (with any max_entries set since opening). */
export function declaredMapShape(map: BpfMapPtr): MapShape {
  return {
    type: fn.mapType(map) as number,
    keySize: fn.mapKeySize(map) as number,
    valueSize: fn.mapValueSize(map) as number,
    maxEntries: fn.mapDefMaxEntries(map) as number,
    flags: fn.mapFlags(map) as number,
  };
}

/** The shape of a map in the kernel. */
export function mapShape(mapFd: number): MapShape {
  const info = Buffer.alloc(96);
  const len = [info.length];
  check('bpf_obj_get_info_by_fd', fn.objGetInfoByFd(mapFd, info, len));
  return {
    type: info.readUInt32LE(0),
    keySize: info.readUInt32LE(8),
    valueSize: info.readUInt32LE(12),
    maxEntries: info.readUInt32LE(16),
    flags: info.readUInt32LE(20),
  };
}

export function mapFd(map: BpfMapPtr): number {
  return check('bpf_map__fd', fn.mapFd(map));
}

export function findProgram(obj: BpfObjectPtr, name: string): BpfProgramPtr {
  return checkPtr(`bpf_object__find_program_by_name(${name})`, fn.findProgramByName(obj, name));
}

export function programFd(prog: BpfProgramPtr): number {
  return check('bpf_program__fd', fn.programFd(prog));
}

export function programAttachType(prog: BpfProgramPtr): number {
  return fn.programExpectedAttachType(prog) as number;
}

export function linkCreate(progFd: number, targetFd: number, attachType: number): number {
  return check('bpf_link_create', fn.linkCreate(progFd, targetFd, attachType, null));
}

export function linkUpdate(linkFd: number, progFd: number): void {
  check('bpf_link_update', fn.linkUpdate(linkFd, progFd, null));
}

/** Detaches the link's program now, even while other holders keep the link open. */
export function linkDetach(linkFd: number): void {
  check('bpf_link_detach', fn.linkDetach(linkFd));
}

export function objPin(fd: number, path: string): void {
  check(`bpf_obj_pin(${path})`, fn.objPin(fd, path));
}

export function objGet(path: string): number {
  return check(`bpf_obj_get(${path})`, fn.objGet(path));
}

/** enum bpf_attach_type values newer than the 6.1 uapi headers Debian ships. */
export const ATTACH = { traceIter: 28, xdp: 37, tcxIngress: 46, tcxEgress: 47 } as const;

/** enum bpf_link_type values kpx creates. */
export const LINK_TYPE = { cgroup: 3, xdp: 6, tcx: 11 } as const;

/**
 * bpf_link_info, the fields kpx reads: type, id, prog_id (u32 each), then
 * the union at 16, whose cgroup member is { __u64 cgroup_id; __u32
 * attach_type; }, tcx member { __u32 ifindex; __u32 attach_type; } and xdp
 * member { __u32 ifindex; }. A link whose device is gone reports ifindex 0.
 */
export type LinkInfo =
  | { type: typeof LINK_TYPE.cgroup; progId: number; cgroupId: bigint; attachType: number }
  | { type: typeof LINK_TYPE.tcx; progId: number; ifindex: number; attachType: number }
  | { type: typeof LINK_TYPE.xdp; progId: number; ifindex: number; attachType: number }
  | { type: number; progId: number };

export function linkInfo(linkFd: number): LinkInfo {
  const info = Buffer.alloc(64);
  const len = [info.length];
  check('bpf_obj_get_info_by_fd', fn.objGetInfoByFd(linkFd, info, len));
  const type = info.readUInt32LE(0);
  const progId = info.readUInt32LE(8);
  switch (type) {
    case LINK_TYPE.cgroup:
      return { type, progId, cgroupId: info.readBigUInt64LE(16), attachType: info.readUInt32LE(24) };
    case LINK_TYPE.tcx:
      return { type, progId, ifindex: info.readUInt32LE(16), attachType: info.readUInt32LE(20) };
    case LINK_TYPE.xdp:
      return { type, progId, ifindex: info.readUInt32LE(16), attachType: ATTACH.xdp };
    default:
      return { type, progId };
  }
}

/** BTF_KIND_FUNC (linux/btf.h). */
const BTF_KIND_FUNC = 12;

/**
 * Whether the running kernel's BTF names a function `name` (false without
 * kernel BTF). For a kfunc, which exists only as one, that is whether the
 * kernel has it.
 */
export function kernelHasFunc(name: string): boolean {
  const btf = fn.btfLoadVmlinux();
  if (btf === null) return false;
  try {
    return (fn.btfFindByNameKind(btf, name, BTF_KIND_FUNC) as number) > 0;
  } finally {
    fn.btfFree(btf);
  }
}

/** bpf_prog_info.id: the kernel-wide ID tools such as bpftool address a program by. */
export function programId(progFd: number): number {
  const info = Buffer.alloc(256);
  const len = [info.length];
  check('bpf_obj_get_info_by_fd', fn.objGetInfoByFd(progFd, info, len));
  return info.readUInt32LE(4);
}

/** The index of a network interface in the caller's network namespace, or undefined. */
export function interfaceIndex(name: string): number | undefined {
  const index = fn.ifNameToIndex(name) as number;
  return index === 0 ? undefined : index;
}

export function mapLookup(fd: number, key: Buffer, valueSize: number): Buffer | undefined {
  const value = Buffer.alloc(valueSize);
  const rc = fn.mapLookupElem(fd, key, value) as number;
  if (rc === -ENOENT) return undefined;
  check('bpf_map_lookup_elem', rc);
  return value;
}

export function mapUpdate(fd: number, key: Buffer, value: Buffer): void {
  check('bpf_map_update_elem', fn.mapUpdateElem(fd, key, value, 0));
}

/** Deletes key; absent keys are fine (the goal is that it is gone). */
export function mapDelete(fd: number, key: Buffer): void {
  const rc = fn.mapDeleteElem(fd, key) as number;
  if (rc !== -ENOENT) check('bpf_map_delete_elem', rc);
}

/** Every key of the map, in the kernel's iteration order. */
export function mapKeys(fd: number, keySize: number): Buffer[] {
  const keys: Buffer[] = [];
  let prev: Buffer | null = null;
  for (;;) {
    const next = Buffer.alloc(keySize);
    const rc = fn.mapGetNextKey(fd, prev, next) as number;
    if (rc === -ENOENT) return keys;
    check('bpf_map_get_next_key', rc);
    keys.push(next);
    prev = next;
  }
}

/** A batch of entries read from a map: count keys and values, packed back to back. */
export interface EntryBatch {
  keys: Buffer;
  values: Buffer;
  count: number;
}

/**
 * Every entry of a map, a few thousand per syscall (one get_next_key and
 * one lookup per entry cost seconds at a few hundred thousand). The batch
 * token is a bucket index for a hash, a key for an array: 4 bytes for kpx's.
 */
export function mapEntryBatches(fd: number, keySize: number, valueSize: number): EntryBatch[] {
  const batches: EntryBatch[] = [];
  let inBatch: Buffer | null = null;
  let size = 4096;
  for (;;) {
    const outBatch = Buffer.alloc(8);
    const keys = Buffer.alloc(size * keySize);
    const values = Buffer.alloc(size * valueSize);
    const n = [size];
    const rc = fn.mapLookupBatch(fd, inBatch, outBatch, keys, values, n, null) as number;
    if (rc === -ENOSPC && n[0] === 0) {
      // One bucket holds more entries than the batch has room for: again, with more.
      size *= 2;
      continue;
    }
    if (rc < 0 && rc !== -ENOENT) throw new BpfError('bpf_map_lookup_batch', -rc);
    if (n[0]! > 0) batches.push({ keys, values, count: n[0]! });
    if (rc === -ENOENT) return batches;
    inBatch = outBatch;
  }
}

/** Writes count entries packed back to back in keys and values, in one syscall. */
export function mapUpdateBatch(fd: number, keys: Buffer, values: Buffer, count: number): void {
  const n = [count];
  const rc = fn.mapUpdateBatch(fd, keys, values, n, null) as number;
  if (rc < 0) throw new BpfError(`bpf_map_update_batch (${n[0]} of ${count} written)`, -rc);
}

export function mapDeleteBatch(fd: number, keys: Buffer, count: number): void {
  const n = [count];
  const rc = fn.mapDeleteBatch(fd, keys, n, null) as number;
  if (rc < 0) throw new BpfError(`bpf_map_delete_batch (${n[0]} of ${count} deleted)`, -rc);
}


/*
 * Feature probing. libbpf's type probes return 1 (supported), 0 (not) or a
 * negative errno when the probe itself failed. Its helper probe is not
 * used: libbpf 1.1 only knows the verifier's pre-6.2 wording for a helper a
 * program type may not call, and reports such helpers as supported on newer
 * kernels ("program of this type cannot use helper").
 */
const probeFn = {
  progType: lib.func('int libbpf_probe_bpf_prog_type(int prog_type, const void *opts)'),
  mapType: lib.func('int libbpf_probe_bpf_map_type(int map_type, const void *opts)'),
  progLoad: lib.func(
    'int bpf_prog_load(int prog_type, const char *prog_name, const char *license, const void *insns, size_t insn_cnt, const void *opts)',
  ),
};

export function probeProgramType(progType: number): boolean {
  return check(`libbpf_probe_bpf_prog_type(${progType})`, probeFn.progType(progType, null)) === 1;
}

export function probeMapType(mapType: number): boolean {
  return check(`libbpf_probe_bpf_map_type(${mapType})`, probeFn.mapType(mapType, null)) === 1;
}

/** A program the kernel refused to load, with what the verifier said. */
export class ProgramLoadError extends BpfError {
  constructor(
    call: string,
    errno: number,
    readonly verifierLog: string,
  ) {
    super(call, errno);
  }
}

/**
 * struct bpf_prog_load_opts of libbpf 1.1 on 64-bit: size_t sz at 0, int
 * attempts at 8, enum bpf_attach_type expected_attach_type at 12, __u32
 * log_level at 88, log_size at 92, char *log_buf at 96; 104 bytes in all,
 * every other field (BTF, attach targets) zero.
 */
const PROG_LOAD_OPTS_SIZE = 104;
const VERIFIER_LOG_SIZE = 16384;

/**
 * Loads raw instructions (8 bytes each) as a program of the given type and
 * expected attach type, returning its fd; nothing is attached. A refusal
 * throws ProgramLoadError carrying the verifier log.
 */
export function loadProgram(progType: number, expectedAttachType: number, insns: Buffer): number {
  const log = koffi.alloc('char', VERIFIER_LOG_SIZE);
  try {
    const opts = Buffer.alloc(PROG_LOAD_OPTS_SIZE);
    opts.writeBigUInt64LE(BigInt(PROG_LOAD_OPTS_SIZE), 0);
    opts.writeUInt32LE(expectedAttachType, 12);
    opts.writeUInt32LE(1, 88);
    opts.writeUInt32LE(VERIFIER_LOG_SIZE, 92);
    opts.writeBigUInt64LE(BigInt(koffi.address(log)), 96);
    const rc = probeFn.progLoad(progType, 'kpx_probe', 'Dual BSD/GPL', insns, insns.length / 8, opts) as number;
    if (rc >= 0) return rc;
    const text = koffi.decode(log, 'char', VERIFIER_LOG_SIZE) as string;
    throw new ProgramLoadError(`bpf_prog_load(type ${progType}, expected attach type ${expectedAttachType})`, -rc, text);
  } finally {
    koffi.free(log);
  }
}

/*
 * Measurement: BPF_PROG_TEST_RUN and the kernel's per-program run-time
 * statistics, for benchmarks and the packet-program tests.
 */
const runFn = {
  testRun: lib.func('int bpf_prog_test_run_opts(int prog_fd, void *opts)'),
  enableStats: lib.func('int bpf_enable_stats(int type)'),
  progFdById: lib.func('int bpf_prog_get_fd_by_id(uint32_t id)'),
};

/** bpf_prog_test_run_opts flag: XDP frames really go out (XDP_TX, XDP_REDIRECT) or into the stack (XDP_PASS). */
export const TEST_RUN_XDP_LIVE_FRAMES = 2;

export interface TestRunOptions {
  data: Buffer;
  /** The program's context (struct __sk_buff or xdp_md prefix). */
  ctx?: Buffer;
  /** Runs in one call; the kernel reports the mean time per run. */
  repeat?: number;
  flags?: number;
  /** Frames per batch in live-frames mode. */
  batchSize?: number;
  /** Room for the frame the program leaves; the input's length plus headroom by default. */
  dataOutSize?: number;
}

export interface TestRunResult {
  retval: number;
  /** Mean nanoseconds per run, as the kernel measured it around the program alone. */
  durationNs: number;
  /** The frame after the last run; empty in live-frames mode. */
  data: Buffer;
}

/**
 * struct bpf_test_run_opts of libbpf 1.1 on 64-bit: sz at 0, data_in 8,
 * data_out 16, data_size_in 24, data_size_out 28, ctx_in 32, ctx_out 40,
 * ctx_size_in 48, ctx_size_out 52, retval 56, repeat 60, duration 64,
 * flags 68, cpu 72, batch_size 76; 80 bytes.
 */
const TEST_RUN_OPTS_SIZE = 80;

/** The instructions of `r0 = value; exit`: a program that does nothing but answer. */
export function constantProgram(value: number): Buffer {
  const insns = Buffer.alloc(16);
  insns.writeUInt8(0xb7, 0); // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
  insns.writeInt32LE(value, 4);
  insns.writeUInt8(0x95, 8); // BPF_JMP | BPF_EXIT
  return insns;
}

/** Loads constantProgram(value), e.g. to measure what running a program costs. */
export function loadConstantProgram(progType: number, expectedAttachType: number, value: number): number {
  return loadProgram(progType, expectedAttachType, constantProgram(value));
}

/** Runs a loaded program on a frame in the kernel (BPF_PROG_TEST_RUN), in the caller's network namespace. */
export function testRun(progFd: number, opts: TestRunOptions): TestRunResult {
  const live = ((opts.flags ?? 0) & TEST_RUN_XDP_LIVE_FRAMES) !== 0;
  const outSize = live ? 0 : (opts.dataOutSize ?? opts.data.length + 256);
  const ctxSize = opts.ctx?.length ?? 0;
  const mem = koffi.alloc('uint8_t', TEST_RUN_OPTS_SIZE + opts.data.length + outSize + ctxSize);
  try {
    const base = BigInt(koffi.address(mem));
    const view = Buffer.from(koffi.view(mem, TEST_RUN_OPTS_SIZE + opts.data.length + outSize + ctxSize));
    view.fill(0);
    const dataIn = TEST_RUN_OPTS_SIZE;
    const dataOut = dataIn + opts.data.length;
    const ctxIn = dataOut + outSize;
    opts.data.copy(view, dataIn);
    opts.ctx?.copy(view, ctxIn);
    view.writeBigUInt64LE(BigInt(TEST_RUN_OPTS_SIZE), 0);
    view.writeBigUInt64LE(base + BigInt(dataIn), 8);
    if (outSize > 0) view.writeBigUInt64LE(base + BigInt(dataOut), 16);
    view.writeUInt32LE(opts.data.length, 24);
    view.writeUInt32LE(outSize, 28);
    if (ctxSize > 0) view.writeBigUInt64LE(base + BigInt(ctxIn), 32);
    view.writeUInt32LE(ctxSize, 48);
    view.writeInt32LE(opts.repeat ?? 1, 60);
    view.writeUInt32LE(opts.flags ?? 0, 68);
    view.writeUInt32LE(opts.batchSize ?? 0, 76);
    check('bpf_prog_test_run_opts', runFn.testRun(progFd, mem) as number);
    const outLength = view.readUInt32LE(28);
    return {
      retval: view.readUInt32LE(56),
      durationNs: view.readUInt32LE(64),
      data: Buffer.from(view.subarray(dataOut, dataOut + Math.min(outLength, outSize))),
    };
  } finally {
    koffi.free(mem);
  }
}

/**
 * Turns on the kernel's per-program run_time_ns/run_cnt accounting for as
 * long as the returned fd is open (BPF_ENABLE_STATS): closing it puts the
 * machine back as it was, unlike the kernel.bpf_stats_enabled sysctl.
 */
export function enableRunTimeStats(): number {
  const BPF_STATS_RUN_TIME = 0;
  return check('bpf_enable_stats', runFn.enableStats(BPF_STATS_RUN_TIME) as number);
}

/** bpf_prog_info.run_time_ns (offset 192) and run_cnt (200): counted only while stats are enabled. */
export function programRunStats(progFd: number): { runTimeNs: bigint; runCount: bigint } {
  const info = Buffer.alloc(256);
  const len = [info.length];
  check('bpf_obj_get_info_by_fd', fn.objGetInfoByFd(progFd, info, len));
  return { runTimeNs: info.readBigUInt64LE(192), runCount: info.readBigUInt64LE(200) };
}

/** A new fd for the program with this kernel-wide ID. */
export function programFdById(id: number): number {
  return check(`bpf_prog_get_fd_by_id(${id})`, runFn.progFdById(id) as number);
}
