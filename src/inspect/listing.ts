/**
 * Turns map contents back into Services, for `kpx list`: what the kernel
 * holds, independent of any agent's memory. Pure.
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
} from '../contract/codecs.js';
import type { Tables } from '../contract/tables.js';

export interface ListedServicePort {
  namespace: string;
  name: string;
  portName: string;
  protocol: string;
  /** Set when kpx deliberately does not program the Service. */
  ignored?: string;
  frontends: Array<{ kind: string; address: string; port: number }>;
  backends: Array<{ address: string; port: number; state: string }>;
}

function nameOf<T extends Record<string, number>>(table: T, value: number): string {
  return Object.entries(table).find(([, v]) => v === value)?.[0] ?? `unknown(${value})`;
}

export function listServicePorts(tables: Tables): ListedServicePort[] {
  const byId = new Map<number, ListedServicePort>();
  for (const { key, value } of tables.services.values()) {
    const v = serviceValue.decode(value);
    byId.set(u32Key.decode(key).id, {
      namespace: v.namespace,
      name: v.name,
      portName: v.port_name,
      protocol: v.skip_reason === SKIP.none ? nameOf(IPPROTO, v.proto) : '',
      ...(v.skip_reason !== SKIP.none && { ignored: nameOf(SKIP, v.skip_reason) }),
      frontends: [],
      backends: [],
    });
  }
  for (const { key, value } of tables.frontends.values()) {
    const k = frontendKey.decode(key);
    const v = frontendValue.decode(value);
    byId.get(v.service_id)?.frontends.push({ kind: nameOf(KIND, v.kind), address: k.addr, port: k.port });
  }
  const backends = new Map<number, BackendValue>();
  for (const { key, value } of tables.backends.values()) backends.set(u32Key.decode(key).id, backendValue.decode(value));
  const slots = [...tables.slots.values()].map(({ key, value }) => ({ ...slotKey.decode(key), ...slotValue.decode(value) }));
  slots.sort((a, b) => a.service_id - b.service_id || a.slot - b.slot);
  for (const s of slots) {
    const b = backends.get(s.backend_id);
    if (b) byId.get(s.service_id)?.backends.push({ address: b.addr, port: b.port, state: nameOf(STATE, s.state) });
  }
  const kindOrder = Object.keys(KIND);
  const listed = [...byId.values()];
  const numeric = (address: string) => address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
  for (const l of listed) {
    l.frontends.sort(
      (a, b) => kindOrder.indexOf(a.kind) - kindOrder.indexOf(b.kind) || numeric(a.address) - numeric(b.address) || a.port - b.port,
    );
  }
  return listed.sort(
    (a, b) =>
      a.namespace.localeCompare(b.namespace) ||
      a.name.localeCompare(b.name) ||
      a.portName.localeCompare(b.portName) ||
      a.protocol.localeCompare(b.protocol),
  );
}

export function formatListing(listed: ListedServicePort[]): string {
  const rows = [['NAMESPACE', 'NAME', 'PORT', 'PROTO', 'FRONTENDS', 'BACKENDS']];
  for (const l of listed) {
    const frontends = l.frontends.map((f) => `${f.kind} ${f.address}:${f.port}`).join(', ');
    const backends = l.ignored
      ? `not programmed: ${l.ignored}`
      : l.backends.length
        ? l.backends.map((b) => `${b.address}:${b.port}${b.state === 'ready' ? '' : ` (${b.state})`}`).join(', ')
        : 'none (connections refused)';
    rows.push([l.namespace, l.name, l.portName || '-', l.protocol || '-', frontends || '-', backends]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}
