/**
 * model -> the exact entries every kpx map must hold.
 *
 * The Compiler keeps the desired tables and updates them per service port:
 * a service port that is the same object as in the previous update (the
 * model cache hands back unchanged ones) costs nothing, so a single change
 * costs one service port's entries whatever the number of Services. It
 * reports which keys it touched and what they held before (Changes), so the
 * diff against the kernel only looks at those. compile() is the same thing
 * from scratch, for tests and tools.
 *
 * Service and backend IDs are stable: an identity keeps its ID for as long
 * as it exists, and an ID freed by an update is not handed out by the same
 * update, so an entry being removed is never reused for something else while
 * a lookup may still reach it.
 *
 * The tables are packed (contract/packed.ts) and every entry is found by
 * its key id, so a full compile allocates little beyond the arenas.
 *
 * A backend is one entry per addr:port/proto, shared by every service port
 * that lists it. Whether it runs on this node is a fact of the address, so
 * it is flagged local when any listing says so (a selectorless Endpoints
 * object may leave nodeName out where an EndpointSlice for the same pod has it).
 */
import {
  BACKEND_FLAGS,
  IPPROTO,
  KIND,
  NODE_ADDR_PRESENT,
  SKIP,
  STATE,
  backendValue,
  frontendKey,
  frontendValue,
  nodeAddrKey,
  serviceValue,
  slotKey,
  slotValue,
  u32Key,
  u32Value,
  readHostU32,
  writeBe16,
  writeBeU32,
  writeHostU16,
  writeHostU32,
  type ServiceValue,
} from '../contract/codecs.js';
import { emptyPackedTables, IdIndex, tablesContent, type PackedTable, type PackedTables } from '../contract/packed.js';
import { slotId, TABLES, tupleAddress, tupleId, type TableName, type Tables } from '../contract/tables.js';
import { parseIPv4 } from '../model/cluster-ip.js';
import type { Backend, IgnoredService, Model, ModelDelta, ServicePort } from '../model/types.js';

/** Identity -> ID: services by serviceIdentity, backends by their addr:port/proto as tupleId. */
export interface IdAssignment {
  services: Map<string, number>;
  backends: Map<number, number>;
}

/** The key ids (TableSpec.keyId) an update touched, per table. */
export type TouchedKeys = Record<TableName, Set<number>>;

/**
 * What an update changed: the keys it touched and, for those that held an
 * entry, that entry as it was before (a key the update added is absent from
 * before). After a sync that landed, the tables are what the kernel holds,
 * so before is the kernel's side of the diff: no second copy of every table
 * is kept.
 */
export interface Changes {
  touched: TouchedKeys;
  before: PackedTables;
}

function emptyTouched(): TouchedKeys {
  return { frontends: new Set(), slots: new Set(), backends: new Set(), services: new Set(), nodeAddrs: new Set() };
}

export function serviceIdentity(v: ServiceValue): string {
  return identityFrom(v.namespace, v.name, v.port_name, v.proto, v.skip_reason);
}

function identityFrom(namespace: string, name: string, portName: string, proto: number, skipReason: number): string {
  if (skipReason !== SKIP.none) return `${namespace}/${name}#ignored`;
  return `${namespace}/${name}:${portName}/${proto}`;
}

/** The identity of a model source's service entry: serviceIdentity of the value it compiles to. */
function sourceIdentity(source: Source): string {
  return 'ref' in source
    ? identityFrom(source.ref.namespace, source.ref.name, source.ref.portName, IPPROTO[source.ref.protocol], SKIP.none)
    : identityFrom(source.namespace, source.name, '', 0, SKIP[source.reason]);
}

/** A backend's identity: its address, port and protocol as one number. */
export function backendIdentity(address: string, port: number, proto: number): number {
  const addr = parseIPv4(address);
  if (addr === null) throw new Error(`backend address is not IPv4: ${address}`);
  return tupleId(addr, port, proto);
}

/**
 * Recovers the IDs in use from what a table set holds (after a restart, what
 * the kernel holds). An ID at or above its map's capacity is not one kpx
 * hands out (IDs are dense from 1): left out, its entry is removed by the
 * diff, and the pools and per-ID arrays stay the size of the maps.
 */
export function idsFromTables(tables: PackedTables, capacity?: Record<TableName, number>): IdAssignment {
  const kept = (table: TableName, id: number) => capacity === undefined || id < capacity[table];
  const services = new Map<string, number>();
  for (const id of tables.services.ids()) {
    if (!kept('services', id)) continue;
    const slot = tables.services.slot(id)!;
    services.set(serviceIdentity(serviceValue.decode(tables.services.values, slot * serviceValue.size)), id);
  }
  const backends = new Map<number, number>();
  for (const id of tables.backends.ids()) {
    if (!kept('backends', id)) continue;
    const slot = tables.backends.slot(id)!;
    const v = backendValue.decode(tables.backends.values, slot * backendValue.size);
    backends.set(backendIdentity(v.addr, v.port, v.proto), id);
  }
  return { services, backends };
}

/** Hands out the lowest IDs that are neither in use nor freed during the current update. */
class IdPool {
  /**
   * The IDs below `next` that are free, as a binary min-heap: taking the
   * lowest costs a log, where scanning up from the lowest free one walked
   * past every ID in use (a few ms per change at 10,000 Services).
   */
  private readonly available: number[] = [];
  private readonly quarantined: number[] = [];
  /** No ID at or above it was ever handed out. */
  private next = 1;

  constructor(initial: Iterable<number>) {
    const used = new Set(initial);
    for (const id of used) this.next = Math.max(this.next, id + 1);
    // Ascending order is already a valid heap.
    for (let id = 1; id < this.next; id++) if (!used.has(id)) this.available.push(id);
  }

  take(): number {
    return this.available.length > 0 ? heapPop(this.available) : this.next++;
  }

  free(id: number): void {
    this.quarantined.push(id);
  }

  /** The update is done: freed IDs may be reused from the next one on. */
  endUpdate(): void {
    for (const id of this.quarantined) heapPush(this.available, id);
    this.quarantined.length = 0;
  }
}

function heapPush(heap: number[], value: number): void {
  let at = heap.push(value) - 1;
  while (at > 0) {
    const parent = (at - 1) >> 1;
    if (heap[parent]! <= value) break;
    heap[at] = heap[parent]!;
    at = parent;
  }
  heap[at] = value;
}

function heapPop(heap: number[]): number {
  const top = heap[0]!;
  const last = heap.pop()!;
  if (heap.length === 0) return top;
  let at = 0;
  for (;;) {
    const left = 2 * at + 1;
    if (left >= heap.length) break;
    const child = left + 1 < heap.length && heap[left + 1]! < heap[left]! ? left + 1 : left;
    if (heap[child]! >= last) break;
    heap[at] = heap[child]!;
    at = child;
  }
  heap[at] = last;
  return top;
}

type Source = ServicePort | IgnoredService;

/*
 * Where the compiler writes each member of its entries: the codecs' offsets
 * (the one definition, checked against BTF). Entries are written member by
 * member with byte stores: a full sync writes a few hundred thousand, and a
 * codec's encoder (an object per entry, Buffer methods that check their
 * arguments, addresses parsed again) cost several times as much. Every
 * member, pads included, is written: a reused slot holds its previous entry.
 */
const SLOT_KEY = slotKey.offsetsOf(['service_id', 'slot']);
const SLOT = slotValue.offsetsOf(['backend_id', 'addr', 'port', 'state', 'pad']);
const FRONTEND_KEY = frontendKey.offsetsOf(['addr', 'port', 'proto', 'pad']);
const FRONTEND = frontendValue.offsetsOf(['service_id', 'backend_count', 'kind', 'pad']);
const BACKEND = backendValue.offsetsOf(['addr', 'port', 'proto', 'flags']);
const ID_KEY = u32Key.offsetsOf(['id']).id;

const NO_IDENTITIES = new Float64Array(0);

interface Want {
  identity: string;
  source: Source;
  /** Its service ID, once assignFreshIds has run. */
  serviceId: number;
  /** Where the source's backendIdentity values start in Compiler.wantedBackends, in slot order. */
  backendsAt: number;
}

/**
 * Per backend ID: the entry's fields, how many service ports list it, how
 * many of those say it is local, and the flags written. IDs are dense (the
 * pool hands out the lowest free), so these are arrays indexed by ID rather
 * than one object per backend, which a full sync would make by the hundred
 * thousand and the garbage collector would then copy.
 */
class BackendListings {
  private capacity = 0;
  /** As parseIPv4 reads it. */
  address = new Uint32Array(0);
  port = new Uint16Array(0);
  proto = new Uint8Array(0);
  listings = new Uint32Array(0);
  localListings = new Uint32Array(0);
  /** The flags of the written entry; NOT_WRITTEN while it has none. */
  writtenFlags = new Int16Array(0);
  static readonly NOT_WRITTEN = -1;
  /**
   * The IDs whose listings changed during the current update (each once,
   * so they fit): their entry is rewritten or removed at its end. A typed
   * array: a first sync relists every backend.
   */
  private relisted = new Int32Array(0);
  private relistedCount = 0;
  private relistedFlag = new Uint8Array(0);

  relist(id: number): void {
    if (this.relistedFlag[id] === 1) return;
    this.relistedFlag[id] = 1;
    this.relisted[this.relistedCount++] = id;
  }

  /** The relisted IDs, forgotten as such; valid until the next relist(). */
  takeRelisted(): Int32Array {
    const relisted = this.relisted.subarray(0, this.relistedCount);
    this.relistedCount = 0;
    for (let i = 0; i < relisted.length; i++) this.relistedFlag[relisted[i]!] = 0;
    return relisted;
  }

  has(id: number): boolean {
    return id < this.capacity && this.listings[id]! > 0;
  }

  /** Makes room for id and records its entry's fields (those of its identity, the same while the ID is held). */
  ensure(id: number, address: number, port: number, proto: number): void {
    if (id >= this.capacity) this.grow(Math.max(id + 1, this.capacity * 2, 1024));
    this.address[id] = address;
    this.port[id] = port;
    this.proto[id] = proto;
  }

  /** The ID is given up: a later holder starts with no entry. */
  release(id: number): void {
    this.writtenFlags[id] = BackendListings.NOT_WRITTEN;
  }

  private grow(capacity: number): void {
    const grown = <A extends Uint16Array | Uint8Array | Uint32Array | Int16Array | Int32Array>(old: A, make: (n: number) => A): A => {
      const next = make(capacity);
      next.set(old);
      return next;
    };
    this.address = grown(this.address, (n) => new Uint32Array(n));
    this.port = grown(this.port, (n) => new Uint16Array(n));
    this.proto = grown(this.proto, (n) => new Uint8Array(n));
    this.listings = grown(this.listings, (n) => new Uint32Array(n));
    this.localListings = grown(this.localListings, (n) => new Uint32Array(n));
    this.writtenFlags = grown(this.writtenFlags, (n) => new Int16Array(n).fill(BackendListings.NOT_WRITTEN));
    this.relistedFlag = grown(this.relistedFlag, (n) => new Uint8Array(n));
    this.relisted = grown(this.relisted, (n) => new Int32Array(n));
    this.capacity = capacity;
  }
}

export class Compiler {
  readonly tables: PackedTables = emptyPackedTables();
  /** What each identity's entries were compiled from; its service ID is in serviceIds. */
  private readonly compiled = new Map<string, Source>();
  private readonly identityOf = new WeakMap<Source, string>();
  private holdsRecoveredIds: boolean;
  private readonly serviceIds: Map<string, number>;
  /** backendIdentity -> backend ID. */
  private readonly backendIds = new IdIndex();
  private readonly backends = new BackendListings();
  private readonly servicePool: IdPool;
  private readonly backendPool: IdPool;
  /** What the current update changed; not kept during the first, where every key is new. */
  private changes: Changes | undefined;
  private updated = false;
  /**
   * The backendIdentity of every backend the current update wants, in one
   * list rather than an array per source, sized for the update (begin):
   * outside the JavaScript heap, which a first sync fills enough.
   */
  private wantedBackends = NO_IDENTITIES;
  private wantedCount = 0;
  /** Where a node address key is encoded to learn its id. */
  private readonly nodeAddrScratch = Buffer.alloc(TABLES.nodeAddrs.key.size);
  /** A service entry's value, filled in and encoded for each: the strings need the codec. */
  private readonly serviceScratch: ServiceValue = { namespace: '', name: '', port_name: '', proto: 0, skip_reason: 0 };

  /** Starts from the IDs already in use, e.g. those recovered from the kernel after a restart. */
  constructor(previous: IdAssignment = { services: new Map(), backends: new Map() }) {
    this.serviceIds = new Map(previous.services);
    for (const [identity, id] of previous.backends) this.backendIds.add(identity, id);
    this.servicePool = new IdPool(this.serviceIds.values());
    this.backendPool = new IdPool(previous.backends.values());
    this.holdsRecoveredIds = this.serviceIds.size + this.backendIds.size > 0;
  }

  get ids(): IdAssignment {
    const backends = new Map<number, number>();
    this.backendIds.forEach((identity, id) => backends.set(identity, id));
    return { services: new Map(this.serviceIds), backends };
  }

  /** The tables as Map<hex, Entry>, for tools and tests. */
  content(): Tables {
    return tablesContent(this.tables);
  }

  /**
   * Makes the tables hold the whole model: every source is looked at,
   * unchanged ones (same objects) cost a lookup. Returns what changed, or
   * undefined for the compiler's first update, where every key is new.
   */
  update(model: Model): Changes | undefined {
    this.begin(model.servicePorts);
    this.reserve(model);
    this.updateNodeAddrs(model.nodeAddresses);
    const wanted = new Map<string, Want | undefined>();
    this.wantAll(wanted, model.servicePorts);
    this.wantAll(wanted, model.ignored);
    const gone = [...this.compiled.keys()].filter((identity) => !wanted.has(identity));
    return this.apply(wanted, gone);
  }

  /**
   * Unchanged sources (same objects as last time) are only counted as
   * wanted: no values built, nothing touched. Indexed loops here and below:
   * a first sync runs them before V8 optimizes them, and unoptimized
   * for...of makes an object per step.
   */
  private wantAll(wanted: Map<string, Want | undefined>, sources: readonly Source[]): void {
    for (let i = 0; i < sources.length; i++) {
      const source = sources[i]!;
      const known = this.identityOf.get(source);
      if (known !== undefined && this.compiled.get(known) === source) wanted.set(known, undefined);
      else this.want(wanted, source);
    }
  }

  /**
   * Applies what changed since the model this compiler last took: only the
   * sources named are looked at. The caller makes sure the delta follows
   * that model (ModelDelta.since). Returns what changed, as update().
   */
  updateDelta(delta: ModelDelta): Changes | undefined {
    this.begin(delta.upserted);
    this.updateNodeAddrs(delta.nodeAddresses);
    const wanted = new Map<string, Want | undefined>();
    for (const source of delta.upserted) this.want(wanted, source);
    const gone: string[] = [];
    for (const source of delta.removed) {
      const identity = this.identityOf.get(source);
      if (identity !== undefined && !wanted.has(identity) && this.compiled.get(identity) === source) gone.push(identity);
    }
    return this.apply(wanted, gone);
  }

  /**
   * Room for the whole model's services, frontends and slots, made at
   * once: a first sync would otherwise grow them a dozen times (backends
   * are shared, their number is not known yet). Not in updateDelta: in the
   * path of a single change these calls cost more than they save (25 us
   * a change at 10,000 Services, through what V8 then optimizes less).
   */
  private reserve(model: Model): void {
    let slots = 0;
    let frontends = 0;
    for (let i = 0; i < model.servicePorts.length; i++) {
      slots += slotCount(model.servicePorts[i]!);
      frontends += model.servicePorts[i]!.frontends.length;
    }
    const services = model.servicePorts.length + model.ignored.length;
    this.tables.services.reserve(services - this.tables.services.size);
    this.tables.frontends.reserve(frontends - this.tables.frontends.size);
    this.tables.slots.reserve(slots - this.tables.slots.size);
  }

  /** Starts an update, with room in wantedBackends for the backends of the sources it may want. */
  private begin(sources: readonly Source[]): void {
    this.changes = this.updated ? { touched: emptyTouched(), before: emptyPackedTables() } : undefined;
    this.updated = true;
    let backends = 0;
    for (let i = 0; i < sources.length; i++) {
      const source = sources[i]!;
      if ('ref' in source) backends += slotCount(source);
    }
    this.wantedBackends = backends > 0 ? new Float64Array(backends) : NO_IDENTITIES;
    this.wantedCount = 0;
  }

  private want(wanted: Map<string, Want | undefined>, source: Source): void {
    const backendsAt = this.wantedCount;
    if ('ref' in source) {
      const proto = IPPROTO[source.ref.protocol];
      const slots = slotCount(source);
      for (let slot = 0; slot < slots; slot++) {
        const backend = slotBackend(source, slot);
        this.wantedBackends[this.wantedCount++] = backendIdentity(backend.address, backend.port, proto);
      }
    }
    const identity = sourceIdentity(source);
    this.identityOf.set(source, identity);
    wanted.set(identity, { identity, source, serviceId: 0, backendsAt });
  }

  private apply(wanted: Map<string, Want | undefined>, gone: string[]): Changes | undefined {
    // Removals first, so a frontend key that moves from one service to another in this update ends up with the new owner.
    for (const identity of gone) {
      const done = this.compiled.get(identity);
      if (done) {
        const serviceId = this.serviceIds.get(identity)!;
        this.removeEntries(done, serviceId);
        this.compiled.delete(identity);
        this.servicePool.free(serviceId);
        this.serviceIds.delete(identity);
      }
    }
    const changed: Want[] = [];
    wanted.forEach((want) => {
      if (!want) return;
      changed.push(want);
      const done = this.compiled.get(want.identity);
      if (done) {
        this.removeEntries(done, this.serviceIds.get(want.identity)!);
        this.compiled.delete(want.identity);
      }
    });
    this.assignFreshIds(changed);
    for (let i = 0; i < changed.length; i++) {
      this.addEntries(changed[i]!);
      this.compiled.set(changed[i]!.identity, changed[i]!.source);
    }
    this.writeRelistedBackends();
    if (this.holdsRecoveredIds) {
      // IDs recovered from a previous run that the first model no longer wants.
      for (const [identity, id] of this.serviceIds) {
        if (wanted.has(identity)) continue;
        this.serviceIds.delete(identity);
        this.servicePool.free(id);
      }
      const unlisted: number[] = [];
      this.backendIds.forEach((identity, id) => {
        if (!this.backends.has(id)) unlisted.push(identity, id);
      });
      for (let i = 0; i < unlisted.length; i += 2) {
        this.backendIds.delete(unlisted[i]!);
        this.backendPool.free(unlisted[i + 1]!);
      }
      this.holdsRecoveredIds = false;
    }
    this.servicePool.endUpdate();
    this.backendPool.endUpdate();
    this.wantedBackends = NO_IDENTITIES;
    const changes = this.changes;
    this.changes = undefined;
    return changes;
  }

  /** New identities get IDs in identity order, so IDs do not depend on where things sit in the model. */
  private assignFreshIds(changed: Want[]): void {
    const freshServices: Want[] = [];
    for (let i = 0; i < changed.length; i++) {
      const want = changed[i]!;
      const id = this.serviceIds.get(want.identity);
      if (id === undefined) freshServices.push(want);
      else want.serviceId = id;
    }
    if (!inIdentityOrder(freshServices)) freshServices.sort(byIdentity);
    for (let i = 0; i < freshServices.length; i++) {
      const want = freshServices[i]!;
      want.serviceId = this.servicePool.take();
      this.serviceIds.set(want.identity, want.serviceId);
    }
    const identities = this.wantedBackends;
    const fresh = new Float64Array(this.wantedCount);
    let count = 0;
    for (let w = 0; w < changed.length; w++) {
      const { source, backendsAt } = changed[w]!;
      const end = backendsAt + ('ref' in source ? slotCount(source) : 0);
      for (let i = backendsAt; i < end; i++) if (!this.backendIds.has(identities[i]!)) fresh[count++] = identities[i]!;
    }
    const listed = fresh.subarray(0, count);
    const sorted = ascending(listed) ? listed : listed.sort();
    // Room for them at once, as reserve() makes for the other tables: a first sync would grow these a dozen times.
    this.backendIds.reserve(this.backendIds.size + count, this.backendIds.size + count + 1);
    this.tables.backends.reserve(count);
    for (let i = 0; i < sorted.length; i++) {
      if (i > 0 && sorted[i] === sorted[i - 1]) continue;
      this.backendIds.add(sorted[i]!, this.backendPool.take());
    }
  }

  /**
   * Backends whose listings changed: rewritten when their flags differ from
   * the entry's, removed when nothing lists them any more. Removal comes
   * after every slot that could point at them is gone.
   */
  private writeRelistedBackends(): void {
    const b = this.backends;
    const relisted = b.takeRelisted();
    for (let i = 0; i < relisted.length; i++) {
      const id = relisted[i]!;
      if (b.listings[id] === 0) {
        b.release(id);
        this.backendIds.delete(this.backendIds.keyOf(id));
        this.backendPool.free(id);
        this.remove(this.tables.backends, id);
        continue;
      }
      const flags = b.localListings[id]! > 0 ? BACKEND_FLAGS.local : 0;
      if (b.writtenFlags[id] === flags) continue;
      b.writtenFlags[id] = flags;
      const t = this.tables.backends;
      const slot = this.claim(t, id);
      writeHostU32(t.keys, slot * t.keySize + ID_KEY, id);
      const at = slot * t.valueSize;
      writeBeU32(t.values, at + BACKEND.addr, b.address[id]!);
      writeBe16(t.values, at + BACKEND.port, b.port[id]!);
      t.values[at + BACKEND.proto] = b.proto[id]!;
      t.values[at + BACKEND.flags] = flags;
    }
  }

  /** kpx_node_addrs holds exactly the model's node addresses; only the keys that come or go are touched. */
  private updateNodeAddrs(addresses: readonly string[]): void {
    const t = this.tables.nodeAddrs;
    const key = this.nodeAddrScratch;
    const wanted = new Map<number, string>();
    for (const addr of addresses) {
      nodeAddrKey.encodeInto({ addr }, key, 0);
      wanted.set(TABLES.nodeAddrs.keyId(key, 0), addr);
    }
    for (const id of t.ids()) {
      if (!wanted.has(id)) this.remove(t, id);
    }
    for (const [id, addr] of wanted) {
      if (t.has(id)) continue;
      const slot = this.claim(t, id);
      nodeAddrKey.encodeInto({ addr }, t.keys, slot * t.keySize);
      u32Value.encodeInto({ value: NODE_ADDR_PRESENT }, t.values, slot * t.valueSize);
    }
  }

  /** The slot of the entry with key id in table t, made if new; the caller writes all its bytes. */
  private claim(t: PackedTable, id: number): number {
    this.touching(t.table, id);
    return t.claim(id);
  }

  private remove(t: PackedTable, id: number): void {
    this.touching(t.table, id);
    t.delete(id);
  }

  /** Notes a key about to change; the first time in an update, keeps its entry as it was. */
  private touching(table: TableName, id: number): void {
    const changes = this.changes;
    if (!changes || changes.touched[table].has(id)) return;
    changes.touched[table].add(id);
    const slot = this.tables[table].slot(id);
    if (slot === undefined) return;
    const before = changes.before[table];
    const at = before.claim(id);
    this.tables[table].copyEntry(slot, before.keys, before.values, at);
  }

  /** Takes out what source put in; the backend IDs its slots name are read from the slots themselves. */
  private removeEntries(source: Source, serviceId: number): void {
    this.remove(this.tables.services, serviceId);
    if (!('ref' in source)) return;
    const proto = IPPROTO[source.ref.protocol];
    for (const fe of source.frontends) this.remove(this.tables.frontends, tupleId(ipv4Of(fe.address), fe.port, proto));
    const b = this.backends;
    const slots = this.tables.slots;
    const count = slotCount(source);
    for (let slot = 0; slot < count; slot++) {
      const keyId = slotId(serviceId, slot);
      const id = readHostU32(slots.values, slots.slot(keyId)! * slots.valueSize + SLOT.backend_id);
      this.remove(slots, keyId);
      b.listings[id]!--;
      if (slotBackend(source, slot).local) b.localListings[id]!--;
      b.relist(id);
    }
  }

  private addEntries(want: Want): void {
    const serviceId = want.serviceId;
    const source = want.source;
    this.putService(serviceId, source);
    if (!('ref' in source)) return;

    const proto = IPPROTO[source.ref.protocol];
    const b = this.backends;
    const slots = this.tables.slots;
    const identities = this.wantedBackends;
    const count = slotCount(source);
    for (let slot = 0; slot < count; slot++) {
      const backend = slotBackend(source, slot);
      const identity = identities[want.backendsAt + slot]!;
      const backendId = this.backendIds.get(identity);
      const address = tupleAddress(identity);
      b.ensure(backendId, address, backend.port, proto);
      b.listings[backendId]!++;
      if (backend.local) b.localListings[backendId]!++;
      b.relist(backendId);
      // claim() may grow the arenas: read them only after.
      const at = this.claim(slots, slotId(serviceId, slot));
      const keyAt = at * slots.keySize;
      writeHostU32(slots.keys, keyAt + SLOT_KEY.service_id, serviceId);
      writeHostU32(slots.keys, keyAt + SLOT_KEY.slot, slot);
      const valueAt = at * slots.valueSize;
      writeHostU32(slots.values, valueAt + SLOT.backend_id, backendId);
      writeBeU32(slots.values, valueAt + SLOT.addr, address);
      writeBe16(slots.values, valueAt + SLOT.port, backend.port);
      slots.values[valueAt + SLOT.state] = STATE[backend.state];
      slots.values[valueAt + SLOT.pad] = 0;
    }
    const frontends = this.tables.frontends;
    for (let i = 0; i < source.frontends.length; i++) {
      const fe = source.frontends[i]!;
      const address = ipv4Of(fe.address);
      const at = this.claim(frontends, tupleId(address, fe.port, proto));
      const keyAt = at * frontends.keySize;
      writeBeU32(frontends.keys, keyAt + FRONTEND_KEY.addr, address);
      writeBe16(frontends.keys, keyAt + FRONTEND_KEY.port, fe.port);
      frontends.keys[keyAt + FRONTEND_KEY.proto] = proto;
      frontends.keys[keyAt + FRONTEND_KEY.pad] = 0;
      const valueAt = at * frontends.valueSize;
      writeHostU32(frontends.values, valueAt + FRONTEND.service_id, serviceId);
      writeHostU16(frontends.values, valueAt + FRONTEND.backend_count, source.backends.length);
      frontends.values[valueAt + FRONTEND.kind] = KIND[fe.kind];
      frontends.values[valueAt + FRONTEND.pad] = 0;
    }
  }

  private putService(serviceId: number, source: Source): void {
    const t = this.tables.services;
    const slot = this.claim(t, serviceId);
    writeHostU32(t.keys, slot * t.keySize + ID_KEY, serviceId);
    const value = this.serviceScratch;
    if ('ref' in source) {
      value.namespace = source.ref.namespace;
      value.name = source.ref.name;
      value.port_name = source.ref.portName;
      value.proto = IPPROTO[source.ref.protocol];
      value.skip_reason = SKIP.none;
    } else {
      value.namespace = source.namespace;
      value.name = source.name;
      value.port_name = '';
      value.proto = 0;
      value.skip_reason = SKIP[source.reason];
    }
    const at = slot * t.valueSize;
    // The strings leave the rest of their members as they are. Uint8Array's own fill, a builtin:
    // Buffer's checks its arguments in JavaScript first, slow in a first sync's unoptimized code.
    Uint8Array.prototype.fill.call(t.values, 0, at, at + t.valueSize);
    serviceValue.encodeInto(value, t.values, at);
  }
}

/**
 * A service port's slots: its backends (0..backend_count-1, where new flows
 * are spread), then its draining endpoints, which no lookup spreads over
 * but whose flows stay (bpf/kpx_iter.c looks for them, and their backend
 * entries stay listed for the packet programs).
 */
function slotCount(sp: ServicePort): number {
  return sp.draining ? sp.backends.length + sp.draining.length : sp.backends.length;
}

function slotBackend(sp: ServicePort, slot: number): Backend {
  return slot < sp.backends.length ? sp.backends[slot]! : sp.draining![slot - sp.backends.length]!;
}

/*
 * Fresh identities are often in order already, as a first sync's are
 * (Services by name, their endpoints by address): checking costs a
 * comparison an element, sorting some 0.5 us a string and 50 ns a number.
 */

function byIdentity(a: Want, b: Want): number {
  return a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0;
}

function inIdentityOrder(wants: Want[]): boolean {
  for (let i = 1; i < wants.length; i++) if (wants[i - 1]!.identity > wants[i]!.identity) return false;
  return true;
}

function ascending(list: Float64Array): boolean {
  for (let i = 1; i < list.length; i++) if (list[i - 1]! > list[i]!) return false;
  return true;
}

/** A model address (IPv4 by construction) as parseIPv4 reads it. */
function ipv4Of(address: string): number {
  const n = parseIPv4(address);
  if (n === null) throw new Error(`not an IPv4 address: ${address}`);
  return n;
}

/** The tables a model compiles to from scratch, given the IDs already in use. Pure. */
export function compile(model: Model, previous: IdAssignment): { tables: Tables; ids: IdAssignment } {
  const compiler = new Compiler(previous);
  compiler.update(model);
  return { tables: compiler.content(), ids: compiler.ids };
}
