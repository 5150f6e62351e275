/**
 * The libbpf calls kpx makes, bound with koffi. libbpf 1.x returns negative
 * errno values from its low-level calls and NULL (with errno set) from the
 * object API; `check` turns both into exceptions that name the call.
 */
import koffi from 'koffi';

const lib = koffi.load('libbpf.so.1');

koffi.opaque('bpf_object');
koffi.opaque('bpf_map');
koffi.opaque('bpf_program');

export type BpfObjectPtr = unknown;
export type BpfMapPtr = unknown;
export type BpfProgramPtr = unknown;

const fn = {
  objectOpenFile: lib.func('bpf_object *bpf_object__open_file(const char *path, const void *opts)'),
  objectLoad: lib.func('int bpf_object__load(bpf_object *obj)'),
  objectClose: lib.func('void bpf_object__close(bpf_object *obj)'),
  findMapByName: lib.func('bpf_map *bpf_object__find_map_by_name(const bpf_object *obj, const char *name)'),
  mapSetPinPath: lib.func('int bpf_map__set_pin_path(bpf_map *map, const char *path)'),
  mapSetMaxEntries: lib.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t max_entries)'),
  mapFd: lib.func('int bpf_map__fd(const bpf_map *map)'),
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
  strerror: lib.func('int libbpf_strerror(int err, _Out_ char *buf, size_t size)'),
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

export function openObject(path: string): BpfObjectPtr {
  return checkPtr(`bpf_object__open_file(${path})`, fn.objectOpenFile(path, null));
}

export function loadObject(obj: BpfObjectPtr): void {
  check('bpf_object__load', fn.objectLoad(obj));
}

export function closeObject(obj: BpfObjectPtr): void {
  fn.objectClose(obj);
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

/** bpf_link_info for a cgroup link: the fields kpx reads. */
export interface CgroupLinkInfo {
  progId: number;
  cgroupId: bigint;
  attachType: number;
}

export function cgroupLinkInfo(linkFd: number): CgroupLinkInfo {
  // struct bpf_link_info: type, id, prog_id (u32 each), then the union at 16;
  // its cgroup member is { __u64 cgroup_id; __u32 attach_type; }.
  const info = Buffer.alloc(64);
  const len = [info.length];
  check('bpf_obj_get_info_by_fd', fn.objGetInfoByFd(linkFd, info, len));
  return { progId: info.readUInt32LE(8), cgroupId: info.readBigUInt64LE(16), attachType: info.readUInt32LE(24) };
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

/** max_entries of a map (struct bpf_map_info: type, id, key_size, value_size, max_entries). */
export function mapMaxEntries(mapFd: number): number {
  const info = Buffer.alloc(96);
  const len = [info.length];
  check('bpf_obj_get_info_by_fd', fn.objGetInfoByFd(mapFd, info, len));
  return info.readUInt32LE(16);
}
