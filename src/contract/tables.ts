/**
 * The maps the control plane writes, with the codecs of their keys and
 * values. Names are the map names in bpf/include/kpx_maps.h and the pin
 * names under the bpffs folder.
 */
import {
  backendValue,
  frontendKey,
  frontendValue,
  nodeAddrKey,
  serviceValue,
  slotKey,
  slotValue,
  u32Key,
  u32Value,
  type StructCodec,
} from './codecs.js';

export interface TableSpec<K extends object, V extends object> {
  map: string;
  key: StructCodec<K>;
  value: StructCodec<V>;
}

export const TABLES = {
  frontends: { map: 'kpx_frontends', key: frontendKey, value: frontendValue },
  slots: { map: 'kpx_slots', key: slotKey, value: slotValue },
  backends: { map: 'kpx_backends', key: u32Key, value: backendValue },
  services: { map: 'kpx_services', key: u32Key, value: serviceValue },
  nodeAddrs: { map: 'kpx_node_addrs', key: nodeAddrKey, value: u32Value },
} as const;

export type TableName = keyof typeof TABLES;

/**
 * Write order that keeps every lookup on a complete service: what a lookup
 * reaches last is written first. Removal goes the other way.
 */
export const WRITE_ORDER: readonly TableName[] = ['backends', 'slots', 'services', 'frontends', 'nodeAddrs'];
export const DELETE_ORDER: readonly TableName[] = ['nodeAddrs', 'frontends', 'slots', 'services', 'backends'];

/**
 * Maps the programs own (written by the kernel), pinned alongside: they
 * outlive an agent restart (flows and counters go on) and removePins
 * removes them with the rest.
 */
export const KERNEL_OWNED_MAPS = ['kpx_sock_revnat', 'kpx_ct', 'kpx_stats'] as const;

export const ALL_MAPS: readonly string[] = [...Object.values(TABLES).map((t) => t.map), ...KERNEL_OWNED_MAPS];

export interface Entry {
  key: Buffer;
  value: Buffer;
}

/** One table's content, by the key's hex form (map key identity is its bytes). */
export type TableContent = Map<string, Entry>;

export type Tables = Record<TableName, TableContent>;

export function emptyTables(): Tables {
  return { frontends: new Map(), slots: new Map(), backends: new Map(), services: new Map(), nodeAddrs: new Map() };
}

/** Every key of every table of the given sets: what a full diff compares. */
export function allKeys(...tableSets: Tables[]): Record<TableName, Set<string>> {
  const keys = {} as Record<TableName, Set<string>>;
  for (const table of Object.keys(TABLES) as TableName[]) {
    keys[table] = new Set(tableSets.flatMap((t) => [...t[table].keys()]));
  }
  return keys;
}
