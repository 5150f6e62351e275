/**
 * model -> the exact entries every kpx map must hold.
 *
 * The Compiler keeps the desired tables and updates them per service port:
 * a service port that is the same object as in the previous update (the
 * model cache hands back unchanged ones) costs nothing, so a single change
 * costs one service port's entries whatever the number of Services. It
 * reports which keys it touched, so the diff against the kernel only looks
 * at those. compile() is the same thing from scratch, for tests and tools.
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
  serviceValue,
  type BackendValue,
  type ServiceValue,
  type StructCodec,
} from '../contract/codecs.js';
import { emptyPackedTables, tablesContent, type PackedTables } from '../contract/packed.js';
import { TABLES, tupleId, type TableName, type Tables } from '../contract/tables.js';
import { parseIPv4 } from '../model/cluster-ip.js';
import type { Backend, IgnoredService, Model, ModelDelta, ServicePort } from '../model/types.js';

/** Identity -> ID: services by serviceIdentity, backends by their addr:port/proto as tupleId. */
export interface IdAssignment {
  services: Map<string, number>;
  backends: Map<number, number>;
}

/** The key ids (TableSpec.keyId) an update touched, per table. */
export type TouchedKeys = Record<TableName, Set<number>>;

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

/** Recovers the IDs in use from what a table set holds (after a restart, what the kernel holds). */
export function idsFromTables(tables: PackedTables): IdAssignment {
  const services = new Map<string, number>();
  for (const id of tables.services.ids()) {
    const slot = tables.services.slot(id)!;
    services.set(serviceIdentity(serviceValue.decode(tables.services.values, slot * serviceValue.size)), id);
  }
  const backends = new Map<number, number>();
  for (const id of tables.backends.ids()) {
    const slot = tables.backends.slot(id)!;
    const v = backendValue.decode(tables.backends.values, slot * backendValue.size);
    backends.set(backendIdentity(v.addr, v.port, v.proto), id);
  }
  return { services, backends };
}

/** Hands out the lowest IDs that are neither in use nor freed during the current update. */
class IdPool {
  private readonly used = new Set<number>();
  private readonly quarantined = new Set<number>();
  /** Every ID below it is used or quarantined, so a search never starts lower. */
  private cursor = 1;

  constructor(initial: Iterable<number>) {
    for (const id of initial) this.used.add(id);
  }

  take(): number {
    while (this.used.has(this.cursor) || this.quarantined.has(this.cursor)) this.cursor++;
    this.used.add(this.cursor);
    return this.cursor;
  }

  free(id: number): void {
    this.used.delete(id);
    this.quarantined.add(id);
  }

  /** The update is done: freed IDs may be reused from the next one on. */
  endUpdate(): void {
    for (const id of this.quarantined) this.cursor = Math.min(this.cursor, id);
    this.quarantined.clear();
  }
}

type Source = ServicePort | IgnoredService;

/** What one service port (or ignored Service) put into the tables: its source says which entries. */
interface Compiled {
  source: Source;
  serviceId: number;
}

/** How many service ports list a backend, and how many of them say it is local. */
interface BackendRefs {
  identity: number;
  value: Omit<BackendValue, 'flags'>;
  listings: number;
  localListings: number;
  /** The flags of the entry in the tables; undefined while it has none. */
  writtenFlags: number | undefined;
}

interface Want {
  identity: string;
  source: Source;
  value: ServiceValue;
}

export class Compiler {
  readonly tables: PackedTables = emptyPackedTables();
  private readonly compiled = new Map<string, Compiled>();
  private readonly identityOf = new WeakMap<Source, string>();
  /** Backend IDs whose listings changed during the current update: their entry is rewritten or removed at its end. */
  private readonly relisted = new Set<number>();
  private holdsRecoveredIds: boolean;
  private readonly serviceIds: Map<string, number>;
  private readonly backendIds: Map<number, number>;
  /** By backend ID. */
  private readonly backendRefs = new Map<number, BackendRefs>();
  private readonly servicePool: IdPool;
  private readonly backendPool: IdPool;
  /** One key's bytes, per table: where a key is encoded to learn its id. */
  private readonly scratch = Object.fromEntries(
    (Object.keys(TABLES) as TableName[]).map((t) => [t, Buffer.alloc(TABLES[t].key.size)]),
  ) as Record<TableName, Buffer>;

  /** Starts from the IDs already in use, e.g. those recovered from the kernel after a restart. */
  constructor(previous: IdAssignment = { services: new Map(), backends: new Map() }) {
    this.serviceIds = new Map(previous.services);
    this.backendIds = new Map(previous.backends);
    this.servicePool = new IdPool(this.serviceIds.values());
    this.backendPool = new IdPool(this.backendIds.values());
    this.holdsRecoveredIds = this.serviceIds.size + this.backendIds.size > 0;
  }

  get ids(): IdAssignment {
    return { services: new Map(this.serviceIds), backends: new Map(this.backendIds) };
  }

  /** The tables as Map<hex, Entry>, for tools and tests. */
  content(): Tables {
    return tablesContent(this.tables);
  }

  /** Makes the tables hold the whole model: every source is looked at, unchanged ones (same objects) cost a lookup. */
  update(model: Model): TouchedKeys {
    const touched = emptyTouched();
    this.updateNodeAddrs(model.nodeAddresses, touched);
    // Unchanged sources (same objects as last time) are only counted as wanted: no values built, nothing touched.
    const wanted = new Map<string, Want | undefined>();
    for (const source of [...model.servicePorts, ...model.ignored]) {
      const known = this.identityOf.get(source);
      if (known !== undefined && this.compiled.get(known)?.source === source) wanted.set(known, undefined);
      else this.want(wanted, source);
    }
    const gone = [...this.compiled.keys()].filter((identity) => !wanted.has(identity));
    return this.apply(wanted, gone, touched);
  }

  /**
   * Applies what changed since the model this compiler last took: only the
   * sources named are looked at. The caller makes sure the delta follows
   * that model (ModelDelta.since).
   */
  updateDelta(delta: ModelDelta): TouchedKeys {
    const touched = emptyTouched();
    this.updateNodeAddrs(delta.nodeAddresses, touched);
    const wanted = new Map<string, Want | undefined>();
    for (const source of delta.upserted) this.want(wanted, source);
    const gone: string[] = [];
    for (const source of delta.removed) {
      const identity = this.identityOf.get(source);
      if (identity !== undefined && !wanted.has(identity) && this.compiled.get(identity)?.source === source) gone.push(identity);
    }
    return this.apply(wanted, gone, touched);
  }

  private want(wanted: Map<string, Want | undefined>, source: Source): void {
    let value: ServiceValue;
    if ('ref' in source) {
      value = {
        namespace: source.ref.namespace,
        name: source.ref.name,
        port_name: source.ref.portName,
        proto: IPPROTO[source.ref.protocol],
        skip_reason: SKIP.none,
      };
    } else {
      value = { namespace: source.namespace, name: source.name, port_name: '', proto: 0, skip_reason: SKIP[source.reason] };
    }
    const identity = serviceIdentity(value);
    this.identityOf.set(source, identity);
    wanted.set(identity, { identity, source, value });
  }

  private apply(wanted: Map<string, Want | undefined>, gone: string[], touched: TouchedKeys): TouchedKeys {
    // Removals first, so a frontend key that moves from one service to another in this update ends up with the new owner.
    for (const identity of gone) {
      const done = this.compiled.get(identity);
      if (done) {
        this.removeEntries(done, touched);
        this.compiled.delete(identity);
        this.servicePool.free(done.serviceId);
        this.serviceIds.delete(identity);
      }
    }
    const changed: Want[] = [];
    for (const want of wanted.values()) {
      if (!want) continue;
      changed.push(want);
      const done = this.compiled.get(want.identity);
      if (done) {
        this.removeEntries(done, touched);
        this.compiled.delete(want.identity);
      }
    }
    this.assignFreshIds(changed);
    for (const want of changed) this.compiled.set(want.identity, this.addEntries(want, touched));
    this.writeRelistedBackends(touched);
    if (this.holdsRecoveredIds) {
      // IDs recovered from a previous run that the first model no longer wants.
      for (const [identity, id] of this.serviceIds) {
        if (wanted.has(identity)) continue;
        this.serviceIds.delete(identity);
        this.servicePool.free(id);
      }
      for (const [identity, id] of this.backendIds) {
        if (this.backendRefs.has(id)) continue;
        this.backendIds.delete(identity);
        this.backendPool.free(id);
      }
      this.holdsRecoveredIds = false;
    }
    this.servicePool.endUpdate();
    this.backendPool.endUpdate();
    return touched;
  }

  /** New identities get IDs in identity order, so IDs do not depend on where things sit in the model. */
  private assignFreshIds(changed: Want[]): void {
    for (const identity of changed.map((w) => w.identity).filter((i) => !this.serviceIds.has(i)).sort()) {
      this.serviceIds.set(identity, this.servicePool.take());
    }
    const fresh = new Set<number>();
    for (const want of changed) {
      if (!('ref' in want.source)) continue;
      const proto = IPPROTO[want.source.ref.protocol];
      for (const b of want.source.backends) {
        const identity = backendIdentity(b.address, b.port, proto);
        if (!this.backendIds.has(identity)) fresh.add(identity);
      }
    }
    for (const identity of Float64Array.from(fresh).sort()) this.backendIds.set(identity, this.backendPool.take());
  }

  /**
   * Backends whose listings changed: rewritten when their flags differ from
   * the entry's, removed when nothing lists them any more. Removal comes
   * after every slot that could point at them is gone.
   */
  private writeRelistedBackends(touched: TouchedKeys): void {
    for (const id of this.relisted) {
      const refs = this.backendRefs.get(id)!;
      if (refs.listings === 0) {
        this.backendRefs.delete(id);
        this.backendIds.delete(refs.identity);
        this.backendPool.free(id);
        this.remove('backends', { id }, touched);
        continue;
      }
      const flags = refs.localListings > 0 ? BACKEND_FLAGS.local : 0;
      if (refs.writtenFlags === flags) continue;
      refs.writtenFlags = flags;
      this.put('backends', { id }, { ...refs.value, flags }, touched);
    }
    this.relisted.clear();
  }

  /** kpx_node_addrs holds exactly the model's node addresses; only the keys that come or go are touched. */
  private updateNodeAddrs(addresses: readonly string[], touched: TouchedKeys): void {
    const wanted = new Map(addresses.map((addr) => [this.keyId('nodeAddrs', { addr }), addr]));
    for (const id of [...this.tables.nodeAddrs.ids()]) {
      if (wanted.has(id)) continue;
      this.tables.nodeAddrs.delete(id);
      touched.nodeAddrs.add(id);
    }
    for (const [id, addr] of wanted) {
      if (!this.tables.nodeAddrs.has(id)) this.put('nodeAddrs', { addr }, { value: NODE_ADDR_PRESENT }, touched);
    }
  }

  /** The id of a key of table, from its bytes (one definition: TableSpec.keyId). */
  private keyId(table: TableName, key: object): number {
    const scratch = this.scratch[table];
    scratch.fill(0);
    (TABLES[table].key as StructCodec<object>).encodeInto(key, scratch, 0);
    return TABLES[table].keyId(scratch, 0);
  }

  private put(table: TableName, key: object, value: object, touched: TouchedKeys): void {
    const id = this.keyId(table, key);
    const t = this.tables[table];
    const slot = t.claim(id);
    this.scratch[table].copy(t.keys, slot * t.keySize);
    const at = slot * t.valueSize;
    t.values.fill(0, at, at + t.valueSize);
    (TABLES[table].value as StructCodec<object>).encodeInto(value, t.values, at);
    touched[table].add(id);
  }

  private remove(table: TableName, key: object, touched: TouchedKeys): void {
    const id = this.keyId(table, key);
    this.tables[table].delete(id);
    touched[table].add(id);
  }

  private removeEntries(done: Compiled, touched: TouchedKeys): void {
    this.remove('services', { id: done.serviceId }, touched);
    const source = done.source;
    if (!('ref' in source)) return;
    const proto = IPPROTO[source.ref.protocol];
    for (const fe of source.frontends) this.remove('frontends', { addr: fe.address, port: fe.port, proto }, touched);
    source.backends.forEach((b: Backend, slot: number) => {
      this.remove('slots', { service_id: done.serviceId, slot }, touched);
      const id = this.backendIds.get(backendIdentity(b.address, b.port, proto))!;
      const refs = this.backendRefs.get(id)!;
      refs.listings--;
      if (b.local) refs.localListings--;
      this.relisted.add(id);
    });
  }

  private addEntries(want: Want, touched: TouchedKeys): Compiled {
    const serviceId = this.serviceIds.get(want.identity)!;
    this.put('services', { id: serviceId }, want.value, touched);
    const source = want.source;
    if (!('ref' in source)) return { source, serviceId };

    const proto = IPPROTO[source.ref.protocol];
    source.backends.forEach((b: Backend, slot: number) => {
      const identity = backendIdentity(b.address, b.port, proto);
      const backendId = this.backendIds.get(identity)!;
      let refs = this.backendRefs.get(backendId);
      if (!refs) {
        refs = { identity, value: { addr: b.address, port: b.port, proto }, listings: 0, localListings: 0, writtenFlags: undefined };
        this.backendRefs.set(backendId, refs);
      }
      refs.listings++;
      if (b.local) refs.localListings++;
      this.relisted.add(backendId);
      this.put('slots', { service_id: serviceId, slot }, { backend_id: backendId, state: STATE[b.state] }, touched);
    });
    for (const fe of source.frontends) {
      this.put(
        'frontends',
        { addr: fe.address, port: fe.port, proto },
        { service_id: serviceId, backend_count: source.backends.length, kind: KIND[fe.kind] },
        touched,
      );
    }
    return { source, serviceId };
  }
}

/** The tables a model compiles to from scratch, given the IDs already in use. Pure. */
export function compile(model: Model, previous: IdAssignment): { tables: Tables; ids: IdAssignment } {
  const compiler = new Compiler(previous);
  compiler.update(model);
  return { tables: compiler.content(), ids: compiler.ids };
}
