/**
 * model -> the exact entries every kpx map must hold. Pure and deterministic:
 * the same model and the same previous IDs give the same bytes.
 *
 * Service and backend IDs are stable: an identity keeps its ID for as long as
 * it exists, and an ID freed by this sync is not handed out in the same sync,
 * so an entry being removed is never reused for something else while a
 * lookup may still reach it.
 */
import {
  IPPROTO,
  KIND,
  SKIP,
  STATE,
  backendValue,
  frontendKey,
  frontendValue,
  serviceValue,
  slotKey,
  slotValue,
  u32Key,
  type BackendValue,
  type ServiceValue,
} from '../contract/codecs.js';
import { emptyTables, type TableContent, type Tables } from '../contract/tables.js';
import type { Model } from '../model/types.js';

/** Identity -> ID, for services (service ports and ignored Services) and backends. */
export interface IdAssignment {
  services: Map<string, number>;
  backends: Map<string, number>;
}

export function serviceIdentity(v: ServiceValue): string {
  if (v.skip_reason !== SKIP.none) return `${v.namespace}/${v.name}#ignored`;
  return `${v.namespace}/${v.name}:${v.port_name}/${v.proto}`;
}

export function backendIdentity(v: BackendValue): string {
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

/** Keeps the previous ID of every wanted identity; gives new ones the lowest ID no one holds or held. */
export function assignIds(previous: Map<string, number>, wanted: Iterable<string>): Map<string, number> {
  const result = new Map<string, number>();
  const taken = new Set(previous.values());
  const fresh: string[] = [];
  for (const identity of wanted) {
    if (result.has(identity)) continue;
    const id = previous.get(identity);
    if (id === undefined) fresh.push(identity);
    else result.set(identity, id);
  }
  let next = 1;
  for (const identity of fresh.sort()) {
    while (taken.has(next)) next++;
    result.set(identity, next);
    taken.add(next);
  }
  return result;
}

function put(table: TableContent, key: Buffer, value: Buffer): void {
  table.set(key.toString('hex'), { key, value });
}

export function compile(model: Model, previous: IdAssignment): { tables: Tables; ids: IdAssignment } {
  const services: Array<{ value: ServiceValue; identity: string }> = [];
  for (const sp of model.servicePorts) {
    const value: ServiceValue = {
      namespace: sp.ref.namespace,
      name: sp.ref.name,
      port_name: sp.ref.portName,
      proto: IPPROTO[sp.ref.protocol],
      skip_reason: SKIP.none,
    };
    services.push({ value, identity: serviceIdentity(value) });
  }
  for (const ignored of model.ignored) {
    const value: ServiceValue = {
      namespace: ignored.namespace,
      name: ignored.name,
      port_name: '',
      proto: 0,
      skip_reason: SKIP[ignored.reason],
    };
    services.push({ value, identity: serviceIdentity(value) });
  }
  const serviceIds = assignIds(
    previous.services,
    services.map((s) => s.identity),
  );

  const backendValues = new Map<string, BackendValue>();
  for (const sp of model.servicePorts) {
    for (const b of sp.backends) {
      const value: BackendValue = { addr: b.address, port: b.port, proto: IPPROTO[sp.ref.protocol] };
      backendValues.set(backendIdentity(value), value);
    }
  }
  const backendIds = assignIds(previous.backends, backendValues.keys());

  const tables = emptyTables();
  for (const { value, identity } of services) {
    put(tables.services, u32Key.encode({ id: serviceIds.get(identity)! }), serviceValue.encode(value));
  }
  for (const [identity, value] of backendValues) {
    put(tables.backends, u32Key.encode({ id: backendIds.get(identity)! }), backendValue.encode(value));
  }
  model.servicePorts.forEach((sp, i) => {
    const serviceId = serviceIds.get(services[i]!.identity)!;
    const proto = IPPROTO[sp.ref.protocol];
    sp.backends.forEach((b, slot) => {
      const backendId = backendIds.get(backendIdentity({ addr: b.address, port: b.port, proto }))!;
      put(
        tables.slots,
        slotKey.encode({ service_id: serviceId, slot }),
        slotValue.encode({ backend_id: backendId, state: STATE[b.state] }),
      );
    });
    for (const fe of sp.frontends) {
      put(
        tables.frontends,
        frontendKey.encode({ addr: fe.address, port: fe.port, proto }),
        frontendValue.encode({ service_id: serviceId, backend_count: sp.backends.length, kind: KIND[fe.kind] }),
      );
    }
  });
  return { tables, ids: { services: serviceIds, backends: backendIds } };
}
