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
  readHostU32,
  type StructCodec,
} from './codecs.js';

export interface TableSpec<K extends object, V extends object> {
  map: string;
  key: StructCodec<K>;
  value: StructCodec<V>;
  /**
   * A number that tells this map's keys apart, read from the key bytes; the
   * control plane indexes its copies of the tables by it (contract/packed.ts).
   */
  keyId(key: Buffer, offset: number): number;
}

/** An address, port and IP protocol as one exact number (32 + 16 + 5 bits; kpx only writes TCP, UDP and SCTP). */
export function tupleId(addr: number, port: number, proto: number): number {
  return addr * 2 ** 21 + port * 32 + (proto & 31);
}

/** The address of a tupleId. */
export function tupleAddress(id: number): number {
  return Math.floor(id / 2 ** 21);
}

/**
 * A slot number stays below 2^16: kpx_frontend.backend_count is a __u16,
 * and the model keeps backends and draining endpoints together under it.
 * The ids of the first 32,767 services' slots stay small integers, which a
 * Map looks up several times faster than larger numbers.
 */
const SLOT_ID_SPAN = 2 ** 16;

/** The key id of kpx_backends and kpx_services: the ID itself. */
const u32KeyId = (key: Buffer, offset: number) => readHostU32(key, offset);

/** The key id of kpx_slots[serviceId, slot] (TABLES.slots.keyId). */
export function slotId(serviceId: number, slot: number): number {
  return serviceId * SLOT_ID_SPAN + slot;
}

/** The service ID of a kpx_slots key id (TABLES.slots.keyId). */
export function serviceOfSlotId(id: number): number {
  return Math.floor(id / SLOT_ID_SPAN);
}

export const TABLES = {
  frontends: {
    map: 'kpx_frontends',
    key: frontendKey,
    value: frontendValue,
    keyId: (key: Buffer, offset: number) => tupleId(key.readUInt32BE(offset), key.readUInt16BE(offset + 4), key[offset + 6]!),
  },
  slots: {
    map: 'kpx_slots',
    key: slotKey,
    value: slotValue,
    keyId: (key: Buffer, offset: number) => slotId(readHostU32(key, offset), readHostU32(key, offset + 4)),
  },
  backends: { map: 'kpx_backends', key: u32Key, value: backendValue, keyId: u32KeyId },
  services: { map: 'kpx_services', key: u32Key, value: serviceValue, keyId: u32KeyId },
  nodeAddrs: { map: 'kpx_node_addrs', key: nodeAddrKey, value: u32Value, keyId: (key: Buffer, offset: number) => key.readUInt32BE(offset) },
} as const satisfies Record<string, TableSpec<object, object>>;

export type TableName = keyof typeof TABLES;

/**
 * Write order that keeps every lookup on a complete service: what a lookup
 * reaches last is written first. Removal goes the other way.
 */
export const WRITE_ORDER: readonly TableName[] = ['backends', 'slots', 'services', 'frontends', 'nodeAddrs'];
export const DELETE_ORDER: readonly TableName[] = ['nodeAddrs', 'frontends', 'slots', 'services', 'backends'];

/**
 * Maps the programs own (written by the kernel), pinned alongside: they
 * outlive an agent restart (flows, socket mappings and counters go on) and
 * removePins removes them with the rest.
 */
export const KERNEL_OWNED_MAPS = ['kpx_sock_revnat', 'kpx_sock_peer', 'kpx_sock_sendto', 'kpx_ct', 'kpx_stats'] as const;

/**
 * Maps the control plane writes besides the tables, for them: kpx_filter,
 * derived from the frontends (contract/filter.ts), and kpx_sync_seq, odd
 * while a sync writes the tables.
 */
export const DERIVED_MAPS = ['kpx_filter', 'kpx_sync_seq'] as const;

export const ALL_MAPS: readonly string[] = [...Object.values(TABLES).map((t) => t.map), ...DERIVED_MAPS, ...KERNEL_OWNED_MAPS];

/**
 * Kernel-owned hash maps whose entries an upgrade carries into the map that
 * replaces them, with the value sizes of earlier builds that are a prefix of
 * today's struct: members were only appended, and a new member's zero means
 * "not known yet" (kpx_ct: 32 bytes before the kept FIB result). An entry is
 * copied zero-extended; one of the same size (a resize) as it is. A struct
 * changed any other way must not be listed: its entries start over.
 */
export const CARRIED_OVER: Partial<Record<(typeof KERNEL_OWNED_MAPS)[number], readonly number[]>> = { kpx_ct: [32] };

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
