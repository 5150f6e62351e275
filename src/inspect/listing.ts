/**
 * Turns map contents back into Services, for `kpx list`: what the kernel
 * holds, independent of any agent's memory. Pure.
 */
import {
  BACKEND_FLAGS,
  IPPROTO,
  KIND,
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
  type BackendValue,
} from '../contract/codecs.js';
import type { Tables } from '../contract/tables.js';
import { sortedIPv4s } from '../model/cluster-ip.js';

export interface ListedServicePort {
  namespace: string;
  name: string;
  portName: string;
  protocol: string;
  /** Set when kpx deliberately does not program the Service. */
  ignored?: string;
  /** A NodePort's address is 0.0.0.0: it answers on every node address (listNodeAddresses). */
  frontends: Array<{ kind: string; address: string; port: number }>;
  /** local: the endpoint runs on this node. */
  backends: ListedBackend[];
  /** Endpoints that take no new flow but keep theirs (ServicePort.draining); absent when none. */
  draining?: ListedBackend[];
}

export interface ListedBackend {
  address: string;
  port: number;
  state: string;
  local: boolean;
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
  /** Per service ID, how many of its slots take new flows (every frontend of it says the same). */
  const backendCount = new Map<number, number>();
  for (const { key, value } of tables.frontends.values()) {
    const k = frontendKey.decode(key);
    const v = frontendValue.decode(value);
    byId.get(v.service_id)?.frontends.push({ kind: nameOf(KIND, v.kind), address: k.addr, port: k.port });
    backendCount.set(v.service_id, v.backend_count);
  }
  const backends = new Map<number, BackendValue>();
  for (const { key, value } of tables.backends.values()) backends.set(u32Key.decode(key).id, backendValue.decode(value));
  const slots = [...tables.slots.values()].map(({ key, value }) => ({ ...slotKey.decode(key), ...slotValue.decode(value) }));
  slots.sort((a, b) => a.service_id - b.service_id || a.slot - b.slot);
  for (const s of slots) {
    const b = backends.get(s.backend_id);
    const listed = byId.get(s.service_id);
    if (!b || !listed) continue;
    const backend = { address: b.addr, port: b.port, state: nameOf(STATE, s.state), local: (b.flags & BACKEND_FLAGS.local) !== 0 };
    // A port whose frontends all went to other Services still has its slots: all of them backends.
    if (s.slot < (backendCount.get(s.service_id) ?? Infinity)) listed.backends.push(backend);
    else (listed.draining ??= []).push(backend);
  }
  return sortListed([...byId.values()], Object.keys(KIND));
}

/** Sorts service ports by name and each one's frontends by kind (in kindOrder), address and port, in place. */
export function sortListed(listed: ListedServicePort[], kindOrder: readonly string[]): ListedServicePort[] {
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

/** The node addresses NodePorts answer on (kpx_node_addrs), sorted numerically. */
export function listNodeAddresses(tables: Tables): string[] {
  return sortedIPv4s([...tables.nodeAddrs.values()].map(({ key }) => nodeAddrKey.decode(key).addr));
}

function formatFrontend(f: ListedServicePort['frontends'][number]): string {
  return f.kind === 'NodePort' ? `NodePort *:${f.port}` : `${f.kind} ${f.address}:${f.port}`;
}

function formatBackend(b: ListedBackend, draining = false): string {
  const notes = [...(draining ? ['draining'] : b.state === 'ready' ? [] : [b.state]), ...(b.local ? ['local'] : [])];
  return `${b.address}:${b.port}${notes.length ? ` (${notes.join(', ')})` : ''}`;
}

/**
 * A table, one line per service port. A NodePort shows as *:port; when there
 * are NodePorts or node addresses, a line above the table says which node
 * addresses the * stands for.
 */
export function formatListing(listed: ListedServicePort[], nodeAddresses: string[]): string {
  const rows = [['NAMESPACE', 'NAME', 'PORT', 'PROTO', 'FRONTENDS', 'BACKENDS']];
  for (const l of listed) {
    const frontends = l.frontends.map(formatFrontend).join(', ');
    const backends = l.ignored
      ? `not programmed: ${l.ignored}`
      : l.backends.length
        ? [...l.backends.map((b) => formatBackend(b)), ...(l.draining ?? []).map((b) => formatBackend(b, true))].join(', ')
        : 'none (connections refused)';
    rows.push([l.namespace, l.name, l.portName || '-', l.protocol || '-', frontends || '-', backends]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
  const hasNodePorts = listed.some((l) => l.frontends.some((f) => f.kind === 'NodePort'));
  if (hasNodePorts || nodeAddresses.length > 0) lines.unshift(`NodePorts (*) answer on: ${nodeAddresses.join(', ') || 'no address'}`);
  return lines.join('\n');
}
