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
  type BackendValue,
  type ServiceValue,
} from '../contract/codecs.js';
import { emptyTables, type TableName, type Tables } from '../contract/tables.js';
import type { IgnoredService, Model, ModelDelta, ServicePort } from '../model/types.js';

/** Identity -> ID, for services (service ports and ignored Services) and backends. */
export interface IdAssignment {
  services: Map<string, number>;
  backends: Map<string, number>;
}

/** The keys (hex) an update touched, per table. */
export type TouchedKeys = Record<TableName, Set<string>>;

function emptyTouched(): TouchedKeys {
  return { frontends: new Set(), slots: new Set(), backends: new Set(), services: new Set(), nodeAddrs: new Set() };
}

export function serviceIdentity(v: ServiceValue): string {
  if (v.skip_reason !== SKIP.none) return `${v.namespace}/${v.name}#ignored`;
  return `${v.namespace}/${v.name}:${v.port_name}/${v.proto}`;
}

export function backendIdentity(v: Pick<BackendValue, 'addr' | 'port' | 'proto'>): string {
  return `${v.addr}:${v.port}/${v.proto}`;
}

/** Recovers the IDs in use from what a table set holds (after a restart, what the kernel holds). */
export function idsFromTables(tables: Tables): IdAssignment {
  const services = new Map<string, number>();
  for (const { key, value } of tables.services.values()) {
    services.set(serviceIdentity(serviceValue.decode(value)), u32Key.decode(key).id);
  }
  const backends = new Map<string, number>();
  for (const { key, value } of tables.backends.values()) {
    backends.set(backendIdentity(backendValue.decode(value)), u32Key.decode(key).id);
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

/** A backend listed by one service port. */
interface BackendListing {
  identity: string;
  local: boolean;
}

/** What one service port (or ignored Service) put into the tables. */
interface Compiled {
  source: Source;
  serviceId: number;
  frontendKeys: string[];
  slotKeys: string[];
  backends: BackendListing[];
}

/** How many service ports list a backend, and how many of them say it is local. */
interface BackendRefs {
  value: Omit<BackendValue, 'flags'>;
  listings: number;
  localListings: number;
}

interface Want {
  identity: string;
  source: Source;
  value: ServiceValue;
}

export class Compiler {
  readonly tables: Tables = emptyTables();
  private readonly compiled = new Map<string, Compiled>();
  private readonly identityOf = new WeakMap<Source, string>();
  /** Backends whose listings changed during the current update: their entry is rewritten or removed at its end. */
  private readonly relisted = new Set<string>();
  private holdsRecoveredIds: boolean;
  private readonly serviceIds: Map<string, number>;
  private readonly backendIds: Map<string, number>;
  private readonly backendRefs = new Map<string, BackendRefs>();
  private readonly servicePool: IdPool;
  private readonly backendPool: IdPool;

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
        touched.services.add(this.serviceKey(done.serviceId));
        this.tables.services.delete(this.serviceKey(done.serviceId));
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
        if (this.backendRefs.has(identity)) continue;
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
    const freshBackends = new Set<string>();
    for (const want of changed) {
      if (!('ref' in want.source)) continue;
      const proto = IPPROTO[want.source.ref.protocol];
      for (const b of want.source.backends) {
        const identity = backendIdentity({ addr: b.address, port: b.port, proto });
        if (!this.backendIds.has(identity)) freshBackends.add(identity);
      }
    }
    for (const identity of [...freshBackends].sort()) this.backendIds.set(identity, this.backendPool.take());
  }

  /**
   * Backends whose listings changed: rewritten when their flags differ from
   * the entry's, removed when nothing lists them any more. Removal comes
   * after every slot that could point at them is gone.
   */
  private writeRelistedBackends(touched: TouchedKeys): void {
    for (const identity of this.relisted) {
      const refs = this.backendRefs.get(identity)!;
      const id = this.backendIds.get(identity)!;
      const key = u32Key.encode({ id });
      const hex = key.toString('hex');
      if (refs.listings === 0) {
        this.backendRefs.delete(identity);
        this.backendIds.delete(identity);
        this.backendPool.free(id);
        this.tables.backends.delete(hex);
        touched.backends.add(hex);
        continue;
      }
      const value = backendValue.encode({ ...refs.value, flags: refs.localListings > 0 ? BACKEND_FLAGS.local : 0 });
      if (this.tables.backends.get(hex)?.value.equals(value)) continue;
      this.tables.backends.set(hex, { key, value });
      touched.backends.add(hex);
    }
    this.relisted.clear();
  }

  /** kpx_node_addrs holds exactly the model's node addresses; only the keys that come or go are touched. */
  private updateNodeAddrs(addresses: readonly string[], touched: TouchedKeys): void {
    const wanted = new Map<string, Buffer>();
    for (const addr of addresses) {
      const key = nodeAddrKey.encode({ addr });
      wanted.set(key.toString('hex'), key);
    }
    for (const hex of this.tables.nodeAddrs.keys()) {
      if (wanted.has(hex)) continue;
      this.tables.nodeAddrs.delete(hex);
      touched.nodeAddrs.add(hex);
    }
    for (const [hex, key] of wanted) {
      if (this.tables.nodeAddrs.has(hex)) continue;
      this.tables.nodeAddrs.set(hex, { key, value: u32Value.encode({ value: NODE_ADDR_PRESENT }) });
      touched.nodeAddrs.add(hex);
    }
  }

  private serviceKey(id: number): string {
    return u32Key.encode({ id }).toString('hex');
  }

  private removeEntries(done: Compiled, touched: TouchedKeys): void {
    for (const hex of done.frontendKeys) {
      this.tables.frontends.delete(hex);
      touched.frontends.add(hex);
    }
    for (const hex of done.slotKeys) {
      this.tables.slots.delete(hex);
      touched.slots.add(hex);
    }
    for (const { identity, local } of done.backends) {
      const refs = this.backendRefs.get(identity)!;
      refs.listings--;
      if (local) refs.localListings--;
      this.relisted.add(identity);
    }
  }

  private addEntries(want: Want, touched: TouchedKeys): Compiled {
    const serviceId = this.serviceIds.get(want.identity)!;
    const done: Compiled = { source: want.source, serviceId, frontendKeys: [], slotKeys: [], backends: [] };
    const put = (table: TableName, key: Buffer, value: Buffer, keys?: string[]) => {
      const hex = key.toString('hex');
      this.tables[table].set(hex, { key, value });
      touched[table].add(hex);
      keys?.push(hex);
    };
    put('services', u32Key.encode({ id: serviceId }), serviceValue.encode(want.value));
    if (!('ref' in want.source)) return done;

    const sp = want.source;
    const proto = IPPROTO[sp.ref.protocol];
    sp.backends.forEach((b, slot) => {
      const value = { addr: b.address, port: b.port, proto };
      const identity = backendIdentity(value);
      const backendId = this.backendIds.get(identity)!;
      let refs = this.backendRefs.get(identity);
      if (!refs) this.backendRefs.set(identity, (refs = { value, listings: 0, localListings: 0 }));
      refs.listings++;
      if (b.local) refs.localListings++;
      this.relisted.add(identity);
      done.backends.push({ identity, local: b.local });
      put(
        'slots',
        slotKey.encode({ service_id: serviceId, slot }),
        slotValue.encode({ backend_id: backendId, state: STATE[b.state] }),
        done.slotKeys,
      );
    });
    for (const fe of sp.frontends) {
      put(
        'frontends',
        frontendKey.encode({ addr: fe.address, port: fe.port, proto }),
        frontendValue.encode({ service_id: serviceId, backend_count: sp.backends.length, kind: KIND[fe.kind] }),
        done.frontendKeys,
      );
    }
    return done;
  }
}

/** The tables a model compiles to from scratch, given the IDs already in use. Pure. */
export function compile(model: Model, previous: IdAssignment): { tables: Tables; ids: IdAssignment } {
  const compiler = new Compiler(previous);
  compiler.update(model);
  return { tables: compiler.tables, ids: compiler.ids };
}
