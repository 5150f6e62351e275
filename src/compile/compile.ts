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
  type BackendValue,
  type FrontendKey,
  type FrontendValue,
  type Id,
  type ServiceValue,
  type SlotKey,
  type SlotValue,
} from '../contract/codecs.js';
import { copyBytes, emptyPackedTables, IdIndex, tablesContent, type PackedTables } from '../contract/packed.js';
import { TABLES, tupleId, type TableName, type Tables } from '../contract/tables.js';
import { parseIPv4 } from '../model/cluster-ip.js';
import type { IgnoredService, Model, ModelDelta, ServicePort } from '../model/types.js';

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
  if (v.skip_reason !== SKIP.none) return `${v.namespace}/${v.name}#ignored`;
  return `${v.namespace}/${v.name}:${v.port_name}/${v.proto}`;
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

/** Where a kpx_slot value holds its backend ID: a service port's entries are removed by reading them back. */
const SLOT_BACKEND_ID_OFFSET = slotValue.fields.find((f) => f.c === 'backend_id')!.offset;

interface Want {
  identity: string;
  source: Source;
  value: ServiceValue;
  /** backendIdentity of each of the source's backends, in slot order. */
  backendIdentities: number[];
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
  port = new Uint16Array(0);
  proto = new Uint8Array(0);
  address: string[] = [];
  listings = new Uint32Array(0);
  localListings = new Uint32Array(0);
  /** The flags of the written entry; NOT_WRITTEN while it has none. */
  writtenFlags = new Int16Array(0);
  static readonly NOT_WRITTEN = -1;
  /** The IDs whose listings changed during the current update (each once): their entry is rewritten or removed at its end. */
  private relisted: number[] = [];
  private relistedFlag = new Uint8Array(0);

  relist(id: number): void {
    if (this.relistedFlag[id] === 1) return;
    this.relistedFlag[id] = 1;
    this.relisted.push(id);
  }

  /** The relisted IDs, forgotten as such. */
  takeRelisted(): number[] {
    const relisted = this.relisted;
    this.relisted = [];
    for (let i = 0; i < relisted.length; i++) this.relistedFlag[relisted[i]!] = 0;
    return relisted;
  }

  has(id: number): boolean {
    return id < this.capacity && this.listings[id]! > 0;
  }

  /** Makes room for id and records its entry's fields (those of its identity, the same while the ID is held). */
  ensure(id: number, address: string, port: number, proto: number): void {
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
    const grown = <A extends Uint16Array | Uint8Array | Uint32Array | Int16Array>(old: A, make: (n: number) => A): A => {
      const next = make(capacity);
      next.set(old);
      return next;
    };
    // Filled to capacity: IDs are not taken in order, and an array written past its end gets holes or turns into a dictionary.
    const address = this.address.slice();
    while (address.length < capacity) address.push('');
    this.address = address;
    this.port = grown(this.port, (n) => new Uint16Array(n));
    this.proto = grown(this.proto, (n) => new Uint8Array(n));
    this.listings = grown(this.listings, (n) => new Uint32Array(n));
    this.localListings = grown(this.localListings, (n) => new Uint32Array(n));
    this.writtenFlags = grown(this.writtenFlags, (n) => new Int16Array(n).fill(BackendListings.NOT_WRITTEN));
    this.relistedFlag = grown(this.relistedFlag, (n) => new Uint8Array(n));
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
  /** One key's bytes, per table: where a key is encoded to learn its id. */
  private readonly scratch = Object.fromEntries(
    (Object.keys(TABLES) as TableName[]).map((t) => [t, Buffer.alloc(TABLES[t].key.size)]),
  ) as Record<TableName, Buffer>;
  /** One key and value per table, filled in and encoded for each entry: a full sync writes a few hundred thousand. */
  private readonly idScratch: Id = { id: 0 };
  private readonly slotKeyScratch: SlotKey = { service_id: 0, slot: 0 };
  private readonly frontendKeyScratch: FrontendKey = { addr: '', port: 0, proto: 0 };
  private readonly slotScratch: SlotValue = { backend_id: 0, addr: '', port: 0, state: 0 };
  private readonly backendScratch: BackendValue = { addr: '', port: 0, proto: 0, flags: 0 };
  private readonly frontendScratch: FrontendValue = { service_id: 0, backend_count: 0, kind: 0 };

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
    this.begin();
    this.reserve(model);
    this.updateNodeAddrs(model.nodeAddresses);
    // Unchanged sources (same objects as last time) are only counted as wanted: no values built, nothing touched.
    const wanted = new Map<string, Want | undefined>();
    for (const sources of [model.servicePorts, model.ignored]) {
      for (const source of sources) {
        const known = this.identityOf.get(source);
        if (known !== undefined && this.compiled.get(known) === source) wanted.set(known, undefined);
        else this.want(wanted, source);
      }
    }
    const gone = [...this.compiled.keys()].filter((identity) => !wanted.has(identity));
    return this.apply(wanted, gone);
  }

  /**
   * Applies what changed since the model this compiler last took: only the
   * sources named are looked at. The caller makes sure the delta follows
   * that model (ModelDelta.since). Returns what changed, as update().
   */
  updateDelta(delta: ModelDelta): Changes | undefined {
    this.begin();
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
    for (const sp of model.servicePorts) {
      slots += sp.backends.length;
      frontends += sp.frontends.length;
    }
    const services = model.servicePorts.length + model.ignored.length;
    this.tables.services.reserve(services - this.tables.services.size);
    this.tables.frontends.reserve(frontends - this.tables.frontends.size);
    this.tables.slots.reserve(slots - this.tables.slots.size);
  }

  private begin(): void {
    this.changes = this.updated ? { touched: emptyTouched(), before: emptyPackedTables() } : undefined;
    this.updated = true;
  }

  private want(wanted: Map<string, Want | undefined>, source: Source): void {
    let value: ServiceValue;
    let backendIdentities: number[] = [];
    if ('ref' in source) {
      const proto = IPPROTO[source.ref.protocol];
      value = {
        namespace: source.ref.namespace,
        name: source.ref.name,
        port_name: source.ref.portName,
        proto,
        skip_reason: SKIP.none,
      };
      backendIdentities = source.backends.map((b) => backendIdentity(b.address, b.port, proto));
    } else {
      value = { namespace: source.namespace, name: source.name, port_name: '', proto: 0, skip_reason: SKIP[source.reason] };
    }
    const identity = serviceIdentity(value);
    this.identityOf.set(source, identity);
    wanted.set(identity, { identity, source, value, backendIdentities });
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
    for (const want of wanted.values()) {
      if (!want) continue;
      changed.push(want);
      const done = this.compiled.get(want.identity);
      if (done) {
        this.removeEntries(done, this.serviceIds.get(want.identity)!);
        this.compiled.delete(want.identity);
      }
    }
    this.assignFreshIds(changed);
    for (const want of changed) {
      this.addEntries(want);
      this.compiled.set(want.identity, want.source);
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
    const changes = this.changes;
    this.changes = undefined;
    return changes;
  }

  /** New identities get IDs in identity order, so IDs do not depend on where things sit in the model. */
  private assignFreshIds(changed: Want[]): void {
    for (const identity of changed.map((w) => w.identity).filter((i) => !this.serviceIds.has(i)).sort()) {
      this.serviceIds.set(identity, this.servicePool.take());
    }
    const fresh: number[] = [];
    for (let w = 0; w < changed.length; w++) {
      const identities = changed[w]!.backendIdentities;
      for (let i = 0; i < identities.length; i++) if (!this.backendIds.has(identities[i]!)) fresh.push(identities[i]!);
    }
    const sorted = Float64Array.from(fresh).sort();
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
    const value = this.backendScratch;
    const relisted = b.takeRelisted();
    for (let i = 0; i < relisted.length; i++) {
      const id = relisted[i]!;
      if (b.listings[id] === 0) {
        b.release(id);
        this.backendIds.delete(this.backendIds.keyOf(id));
        this.backendPool.free(id);
        this.remove('backends', this.backendKeyId(id));
        continue;
      }
      const flags = b.localListings[id]! > 0 ? BACKEND_FLAGS.local : 0;
      if (b.writtenFlags[id] === flags) continue;
      b.writtenFlags[id] = flags;
      const at = this.claim('backends', this.backendKeyId(id));
      value.addr = b.address[id]!;
      value.port = b.port[id]!;
      value.proto = b.proto[id]!;
      value.flags = flags;
      backendValue.encodeInto(value, this.tables.backends.values, at);
    }
  }

  /** kpx_node_addrs holds exactly the model's node addresses; only the keys that come or go are touched. */
  private updateNodeAddrs(addresses: readonly string[]): void {
    const wanted = new Map<number, string>();
    for (const addr of addresses) {
      const key = this.scratch.nodeAddrs;
      zero(key, 0, key.length);
      nodeAddrKey.encodeInto({ addr }, key, 0);
      wanted.set(TABLES.nodeAddrs.keyId(key, 0), addr);
    }
    for (const id of this.tables.nodeAddrs.ids()) {
      if (!wanted.has(id)) this.remove('nodeAddrs', id);
    }
    for (const [id, addr] of wanted) {
      if (this.tables.nodeAddrs.has(id)) continue;
      const key = this.scratch.nodeAddrs;
      zero(key, 0, key.length);
      nodeAddrKey.encodeInto({ addr }, key, 0);
      const at = this.claim('nodeAddrs', id);
      u32Value.encodeInto({ value: NODE_ADDR_PRESENT }, this.tables.nodeAddrs.values, at);
    }
  }

  /*
   * Each key is encoded into its table's scratch buffer, its id read from
   * those bytes (TableSpec.keyId, the one definition), and claim() copies
   * the bytes into the entry's slot and zeroes its value for the caller.
   */
  private serviceKeyId(id: number): number {
    const key = this.scratch.services;
    this.idScratch.id = id;
    u32Key.encodeInto(this.idScratch, key, 0);
    return TABLES.services.keyId(key, 0);
  }

  private backendKeyId(id: number): number {
    const key = this.scratch.backends;
    this.idScratch.id = id;
    u32Key.encodeInto(this.idScratch, key, 0);
    return TABLES.backends.keyId(key, 0);
  }

  private slotKeyId(serviceId: number, slot: number): number {
    const key = this.scratch.slots;
    const value = this.slotKeyScratch;
    value.service_id = serviceId;
    value.slot = slot;
    slotKey.encodeInto(value, key, 0);
    return TABLES.slots.keyId(key, 0);
  }

  private frontendKeyId(addr: string, port: number, proto: number): number {
    const key = this.scratch.frontends;
    zero(key, 0, key.length);
    const value = this.frontendKeyScratch;
    value.addr = addr;
    value.port = port;
    value.proto = proto;
    frontendKey.encodeInto(value, key, 0);
    return TABLES.frontends.keyId(key, 0);
  }

  /** The value offset of the entry with key id (whose bytes are in the table's scratch), its value zeroed. */
  private claim(table: TableName, id: number): number {
    this.touching(table, id);
    const t = this.tables[table];
    const slot = t.claim(id);
    copyBytes(this.scratch[table], 0, t.keys, slot * t.keySize, t.keySize);
    const at = slot * t.valueSize;
    zero(t.values, at, t.valueSize);
    return at;
  }

  private remove(table: TableName, id: number): void {
    this.touching(table, id);
    this.tables[table].delete(id);
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
    this.remove('services', this.serviceKeyId(serviceId));
    if (!('ref' in source)) return;
    const proto = IPPROTO[source.ref.protocol];
    for (const fe of source.frontends) this.remove('frontends', this.frontendKeyId(fe.address, fe.port, proto));
    const b = this.backends;
    const slots = this.tables.slots;
    for (let slot = 0; slot < source.backends.length; slot++) {
      const keyId = this.slotKeyId(serviceId, slot);
      const id = readHostU32(slots.values, slots.slot(keyId)! * slots.valueSize + SLOT_BACKEND_ID_OFFSET);
      this.remove('slots', keyId);
      b.listings[id]!--;
      if (source.backends[slot]!.local) b.localListings[id]!--;
      b.relist(id);
    }
  }

  private addEntries(want: Want): void {
    const serviceId = this.serviceIds.get(want.identity)!;
    // claim() may grow the arena: read it only after.
    const serviceAt = this.claim('services', this.serviceKeyId(serviceId));
    serviceValue.encodeInto(want.value, this.tables.services.values, serviceAt);
    const source = want.source;
    if (!('ref' in source)) return;

    const proto = IPPROTO[source.ref.protocol];
    const b = this.backends;
    const slots = this.tables.slots;
    const slotValueOf = this.slotScratch;
    for (let slot = 0; slot < source.backends.length; slot++) {
      const backend = source.backends[slot]!;
      const identity = want.backendIdentities[slot]!;
      const backendId = this.backendIds.get(identity);
      b.ensure(backendId, backend.address, backend.port, proto);
      b.listings[backendId]!++;
      if (backend.local) b.localListings[backendId]!++;
      b.relist(backendId);
      const at = this.claim('slots', this.slotKeyId(serviceId, slot));
      slotValueOf.backend_id = backendId;
      slotValueOf.addr = backend.address;
      slotValueOf.port = backend.port;
      slotValueOf.state = STATE[backend.state];
      slotValue.encodeInto(slotValueOf, slots.values, at);
    }
    const frontendValueOf = this.frontendScratch;
    frontendValueOf.service_id = serviceId;
    frontendValueOf.backend_count = source.backends.length;
    for (const fe of source.frontends) {
      const at = this.claim('frontends', this.frontendKeyId(fe.address, fe.port, proto));
      frontendValueOf.kind = KIND[fe.kind];
      frontendValue.encodeInto(frontendValueOf, this.tables.frontends.values, at);
    }
  }
}

function zero(buf: Buffer, at: number, length: number): void {
  for (let i = at; i < at + length; i++) buf[i] = 0;
}

/** The tables a model compiles to from scratch, given the IDs already in use. Pure. */
export function compile(model: Model, previous: IdAssignment): { tables: Tables; ids: IdAssignment } {
  const compiler = new Compiler(previous);
  compiler.update(model);
  return { tables: compiler.content(), ids: compiler.ids };
}
