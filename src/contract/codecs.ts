/**
 * Byte codecs for the map keys and values declared in bpf/include/kpx_types.h.
 * Each codec lists the C struct's members with their offsets; a test checks
 * those against the BTF of the committed objects, so the two cannot drift.
 * Addresses and ports are network byte order (as the programs see them),
 * everything else host order, as the kernel stores map memory.
 */
import { endianness } from 'node:os';
import { parseIPv4 } from '../model/cluster-ip.js';

/** 'chars': a NUL-terminated string; 'bytes': raw memory, as a Buffer of the member's size. */
type FieldKind = 'u8' | 'u16' | 'u32' | 'u64' | 'be16' | 'ipv4' | 'mac' | 'chars' | 'bytes';

interface FieldSpec {
  /** The C member name, as BTF spells it. */
  c: string;
  kind: FieldKind;
  offset: number;
  /** Bytes; only needed for 'chars' and 'bytes', derived for the others. */
  size?: number;
}

export interface FieldLayout {
  c: string;
  offset: number;
  size: number;
}

const SCALAR_SIZE: Record<Exclude<FieldKind, 'chars' | 'bytes'>, number> = {
  u8: 1,
  u16: 2,
  u32: 4,
  u64: 8,
  be16: 2,
  ipv4: 4,
  mac: 6,
};

const LITTLE = endianness() === 'LE';

export function ipv4ToBytes(address: string, out: Buffer, offset: number): void {
  const n = parseIPv4(address);
  if (n === null) throw new Error(`not an IPv4 address: ${address}`);
  out.writeUInt32BE(n, offset);
}

/** A host-order __u32 of map memory. */
export function readHostU32(buf: Buffer, offset: number): number {
  return LITTLE ? buf.readUInt32LE(offset) : buf.readUInt32BE(offset);
}

/*
 * Byte stores for the compiler, which writes a few hundred thousand entries
 * a full sync at offsets it takes from the codecs (offsetsOf): the Buffer
 * methods check their arguments on every call and cost several times as
 * much. The values are the compiler's own, in range by construction.
 */

/** A host-order __u32 of map memory. */
export function writeHostU32(buf: Buffer, offset: number, value: number): void {
  if (LITTLE) {
    buf[offset] = value & 255;
    buf[offset + 1] = (value >>> 8) & 255;
    buf[offset + 2] = (value >>> 16) & 255;
    buf[offset + 3] = value >>> 24;
  } else {
    writeBeU32(buf, offset, value);
  }
}

/** A host-order __u16 of map memory. */
export function writeHostU16(buf: Buffer, offset: number, value: number): void {
  buf[offset + (LITTLE ? 0 : 1)] = value & 255;
  buf[offset + (LITTLE ? 1 : 0)] = value >>> 8;
}

/** A network-order 32 bits: an IPv4 address as parseIPv4 reads it. */
export function writeBeU32(buf: Buffer, offset: number, value: number): void {
  buf[offset] = value >>> 24;
  buf[offset + 1] = (value >>> 16) & 255;
  buf[offset + 2] = (value >>> 8) & 255;
  buf[offset + 3] = value & 255;
}

/** A network-order 16 bits: a port. */
export function writeBe16(buf: Buffer, offset: number, value: number): void {
  buf[offset] = value >>> 8;
  buf[offset + 1] = value & 255;
}

/** An Ethernet address, "aa:bb:cc:dd:ee:ff". */
export function macToBytes(mac: string, out: Buffer, offset: number): void {
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)) throw new Error(`not an Ethernet address: ${mac}`);
  mac.split(':').forEach((hex, i) => (out[offset + i] = parseInt(hex, 16)));
}

export function bytesToMac(buf: Buffer, offset: number): string {
  return [...buf.subarray(offset, offset + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export function bytesToIpv4(buf: Buffer, offset: number): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

function isAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 127) return false;
  return true;
}

function writeChars(text: string, buf: Buffer, at: number, size: number, member: string): void {
  // ASCII (every Kubernetes name) byte by byte: Buffer.from makes a Buffer per string, 30,000 in a full sync.
  if (text.length < size && isAscii(text)) {
    for (let i = 0; i < text.length; i++) buf[at + i] = text.charCodeAt(i);
    return;
  }
  const bytes = Buffer.from(text, 'utf8');
  // Always leave room for the terminating NUL C expects.
  if (bytes.length >= size) throw new Error(`${member} longer than ${size - 1} bytes: ${text}`);
  bytes.copy(buf, at);
}

function writeBytes(bytes: Buffer, buf: Buffer, at: number, size: number, member: string): void {
  if (bytes.length !== size) throw new Error(`${member} is ${size} bytes, not ${bytes.length}`);
  bytes.copy(buf, at);
}

/**
 * A struct's encoder as one straight run of named writes, generated from its
 * members: a full sync encodes a few hundred thousand entries, and a loop
 * over the member list (a keyed load and a switch per member) costs several
 * times as much.
 */
type Encoder = (value: unknown, buf: Buffer, base: number) => void;

function compileEncoder(cName: string, specs: readonly (FieldSpec & { size: number })[]): Encoder {
  const order = LITTLE ? 'LE' : 'BE';
  const lines = specs
    .filter((f) => !f.c.startsWith('pad'))
    .map((f) => {
      if (!/^[a-z_][a-z0-9_]*$/.test(f.c)) throw new Error(`${cName}: member name ${f.c} is not an identifier`);
      const x = `value.${f.c}`;
      const at = `base + ${f.offset}`;
      switch (f.kind) {
        case 'u8':
          return `buf.writeUInt8(${x}, ${at});`;
        case 'u16':
          return `buf.writeUInt16${order}(${x}, ${at});`;
        case 'u32':
          return `buf.writeUInt32${order}(${x}, ${at});`;
        case 'u64':
          return `buf.writeBigUInt64${order}(${x}, ${at});`;
        case 'be16':
          return `buf.writeUInt16BE(${x}, ${at});`;
        case 'ipv4':
          return `ipv4ToBytes(${x}, buf, ${at});`;
        case 'mac':
          return `macToBytes(${x}, buf, ${at});`;
        case 'chars':
          return `writeChars(${x}, buf, ${at}, ${f.size}, ${JSON.stringify(`${cName}.${f.c}`)});`;
        case 'bytes':
          return `writeBytes(${x}, buf, ${at}, ${f.size}, ${JSON.stringify(`${cName}.${f.c}`)});`;
      }
    });
  const make = new Function('ipv4ToBytes', 'macToBytes', 'writeChars', 'writeBytes', `return function encode(value, buf, base) {\n${lines.join('\n')}\n};`);
  return make(ipv4ToBytes, macToBytes, writeChars, writeBytes) as Encoder;
}

/**
 * Encodes and decodes one C struct. T's keys are the C member names that
 * carry meaning; members whose name starts with "pad" are written as zero.
 */
export class StructCodec<T extends object> {
  readonly fields: readonly FieldLayout[];
  private readonly specs: readonly (FieldSpec & { size: number })[];
  /** Takes a T; typed loosely so that every StructCodec<T> stays a StructCodec<object>. */
  private readonly encoder: Encoder;

  constructor(
    readonly cName: string,
    readonly size: number,
    specs: FieldSpec[],
  ) {
    this.specs = specs.map((s) => ({ ...s, size: s.kind === 'chars' || s.kind === 'bytes' ? (s.size ?? 0) : SCALAR_SIZE[s.kind] }));
    this.fields = this.specs.map(({ c, offset, size }) => ({ c, offset, size }));
    this.encoder = compileEncoder(cName, this.specs);
  }

  encode(value: T): Buffer {
    // A slice of Node's shared pool: Buffer.alloc gives every small key its own ArrayBuffer, the main cost of a full compile.
    const buf = Buffer.allocUnsafe(this.size).fill(0);
    this.encodeInto(value, buf, 0);
    return buf;
  }

  /** Writes value's members at base; pad members are left as they are (callers zero the struct first). */
  encodeInto(value: T, buf: Buffer, base: number): void {
    this.encoder(value, buf, base);
  }

  /**
   * Where each member starts, for code that writes the struct itself. The
   * list must name every member, pads included: a member added to the
   * struct then fails here, at load, rather than be left unwritten.
   */
  offsetsOf<K extends string>(members: readonly K[]): Record<K, number> {
    const named = new Set<string>(members);
    if (named.size !== this.fields.length || this.fields.some((f) => !named.has(f.c))) {
      throw new Error(`${this.cName} has members ${this.fields.map((f) => f.c).join(', ')}, not ${members.join(', ')}`);
    }
    return Object.fromEntries(this.fields.map((f) => [f.c, f.offset])) as Record<K, number>;
  }

  decode(buf: Buffer, base = 0): T {
    const out: Record<string, unknown> = {};
    for (const f of this.specs) {
      if (f.c.startsWith('pad')) continue;
      const at = base + f.offset;
      switch (f.kind) {
        case 'u8':
          out[f.c] = buf.readUInt8(at);
          break;
        case 'u16':
          out[f.c] = LITTLE ? buf.readUInt16LE(at) : buf.readUInt16BE(at);
          break;
        case 'u32':
          out[f.c] = LITTLE ? buf.readUInt32LE(at) : buf.readUInt32BE(at);
          break;
        case 'u64':
          out[f.c] = LITTLE ? buf.readBigUInt64LE(at) : buf.readBigUInt64BE(at);
          break;
        case 'be16':
          out[f.c] = buf.readUInt16BE(at);
          break;
        case 'ipv4':
          out[f.c] = bytesToIpv4(buf, at);
          break;
        case 'mac':
          out[f.c] = bytesToMac(buf, at);
          break;
        case 'chars': {
          const raw = buf.subarray(at, at + f.size);
          const nul = raw.indexOf(0);
          out[f.c] = raw.subarray(0, nul < 0 ? raw.length : nul).toString('utf8');
          break;
        }
        case 'bytes':
          out[f.c] = Buffer.from(buf.subarray(at, at + f.size));
          break;
      }
    }
    return out as T;
  }
}

/** Mirrors of the constants in kpx_types.h. */
export const KIND = { ClusterIP: 1, NodePort: 2, ExternalIP: 3, LoadBalancer: 4 } as const;
export const STATE = { ready: 0, 'serving-terminating': 1 } as const;
export const SKIP = { none: 0, ExternalName: 1, headless: 2, 'service-proxy-name': 3 } as const;
export const NAME_LEN = 64;
export const PORT_NAME_LEN = 16;
export const IPPROTO = { TCP: 6, UDP: 17 } as const;
export const BACKEND_FLAGS = { local: 1 } as const;
export const CT_FLAGS = { reply: 1, redirect: 2, closing: 4 } as const;
/** KPX_FIB_*: how much of a flow's last FIB result its kpx_ct entry holds. */
export const CT_FIB = { none: 0, nexthop: 1, l2: 2 } as const;
/** kpx_node_addrs holds this value for every listed address. */
export const NODE_ADDR_PRESENT = 1;
/** enum kpx_stat: the kpx_stats slot of each path a packet takes through the tc/XDP programs. */
export const STAT = { newFlow: 0, forward: 1, reply: 2, localReply: 3, drop: 4 } as const;
export type StatName = keyof typeof STAT;
/** KPX_STAT_COUNT: kpx_stats' max_entries. */
export const STAT_COUNT = 5;

export interface FrontendKey {
  addr: string;
  port: number;
  proto: number;
}
export interface FrontendValue {
  service_id: number;
  backend_count: number;
  kind: number;
}
export interface SlotKey {
  service_id: number;
  slot: number;
}
export interface SlotValue {
  backend_id: number;
  addr: string;
  port: number;
  state: number;
}
export interface BackendValue {
  addr: string;
  port: number;
  proto: number;
  flags: number;
}
export interface ServiceValue {
  namespace: string;
  name: string;
  port_name: string;
  proto: number;
  skip_reason: number;
}
export interface SockRevnatKey {
  cookie: bigint;
  backend_addr: string;
  backend_port: number;
}
export interface SockRevnatValue {
  addr: string;
  port: number;
}
export interface Id {
  id: number;
}
export interface NodeAddrKey {
  addr: string;
}
export interface U32Value {
  value: number;
}
export interface U64Value {
  value: bigint;
}
export interface CtKey {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
}
export interface CtValue {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  backend_id: number;
  last_seen_ns: bigint;
  flags: number;
  fib: number;
  fib_ifindex: number;
  fib_nexthop: string;
  fib_dmac: string;
  fib_smac: string;
}

export const frontendKey = new StructCodec<FrontendKey>('kpx_frontend_key', 8, [
  { c: 'addr', kind: 'ipv4', offset: 0 },
  { c: 'port', kind: 'be16', offset: 4 },
  { c: 'proto', kind: 'u8', offset: 6 },
  { c: 'pad', kind: 'u8', offset: 7 },
]);

export const frontendValue = new StructCodec<FrontendValue>('kpx_frontend', 8, [
  { c: 'service_id', kind: 'u32', offset: 0 },
  { c: 'backend_count', kind: 'u16', offset: 4 },
  { c: 'kind', kind: 'u8', offset: 6 },
  { c: 'pad', kind: 'u8', offset: 7 },
]);

export const slotKey = new StructCodec<SlotKey>('kpx_slot_key', 8, [
  { c: 'service_id', kind: 'u32', offset: 0 },
  { c: 'slot', kind: 'u32', offset: 4 },
]);

export const slotValue = new StructCodec<SlotValue>('kpx_slot', 12, [
  { c: 'backend_id', kind: 'u32', offset: 0 },
  { c: 'addr', kind: 'ipv4', offset: 4 },
  { c: 'port', kind: 'be16', offset: 8 },
  { c: 'state', kind: 'u8', offset: 10 },
  { c: 'pad', kind: 'u8', offset: 11 },
]);

export const backendValue = new StructCodec<BackendValue>('kpx_backend', 8, [
  { c: 'addr', kind: 'ipv4', offset: 0 },
  { c: 'port', kind: 'be16', offset: 4 },
  { c: 'proto', kind: 'u8', offset: 6 },
  { c: 'flags', kind: 'u8', offset: 7 },
]);

export const serviceValue = new StructCodec<ServiceValue>('kpx_service', 152, [
  { c: 'namespace', kind: 'chars', offset: 0, size: NAME_LEN },
  { c: 'name', kind: 'chars', offset: 64, size: NAME_LEN },
  { c: 'port_name', kind: 'chars', offset: 128, size: PORT_NAME_LEN },
  { c: 'proto', kind: 'u8', offset: 144 },
  { c: 'skip_reason', kind: 'u8', offset: 145 },
  { c: 'pad', kind: 'chars', offset: 146, size: 6 },
]);

export const sockRevnatKey = new StructCodec<SockRevnatKey>('kpx_sock_revnat_key', 16, [
  { c: 'cookie', kind: 'u64', offset: 0 },
  { c: 'backend_addr', kind: 'ipv4', offset: 8 },
  { c: 'backend_port', kind: 'be16', offset: 12 },
  { c: 'pad', kind: 'u16', offset: 14 },
]);

export const sockRevnatValue = new StructCodec<SockRevnatValue>('kpx_sock_revnat', 8, [
  { c: 'addr', kind: 'ipv4', offset: 0 },
  { c: 'port', kind: 'be16', offset: 4 },
  { c: 'pad', kind: 'u16', offset: 6 },
]);

/** The __u32 keys of kpx_backends and kpx_services. */
export const u32Key = new StructCodec<Id>('__u32', 4, [{ c: 'id', kind: 'u32', offset: 0 }]);

/** The __be32 keys of kpx_node_addrs. */
export const nodeAddrKey = new StructCodec<NodeAddrKey>('__be32', 4, [{ c: 'addr', kind: 'ipv4', offset: 0 }]);

/** The __u32 values of kpx_node_addrs. */
export const u32Value = new StructCodec<U32Value>('__u32', 4, [{ c: 'value', kind: 'u32', offset: 0 }]);

/** The __u64 values of kpx_stats, one per possible CPU in a lookup. */
export const u64Value = new StructCodec<U64Value>('__u64', 8, [{ c: 'value', kind: 'u64', offset: 0 }]);

export const ctKey = new StructCodec<CtKey>('kpx_ct_key', 16, [
  { c: 'saddr', kind: 'ipv4', offset: 0 },
  { c: 'daddr', kind: 'ipv4', offset: 4 },
  { c: 'sport', kind: 'be16', offset: 8 },
  { c: 'dport', kind: 'be16', offset: 10 },
  { c: 'proto', kind: 'u8', offset: 12 },
  { c: 'pad', kind: 'chars', offset: 13, size: 3 },
]);

export const ctValue = new StructCodec<CtValue>('kpx_ct', 48, [
  { c: 'saddr', kind: 'ipv4', offset: 0 },
  { c: 'daddr', kind: 'ipv4', offset: 4 },
  { c: 'sport', kind: 'be16', offset: 8 },
  { c: 'dport', kind: 'be16', offset: 10 },
  { c: 'backend_id', kind: 'u32', offset: 12 },
  { c: 'last_seen_ns', kind: 'u64', offset: 16 },
  { c: 'flags', kind: 'u8', offset: 24 },
  { c: 'fib', kind: 'u8', offset: 25 },
  { c: 'pad', kind: 'chars', offset: 26, size: 2 },
  { c: 'fib_ifindex', kind: 'u32', offset: 28 },
  { c: 'fib_nexthop', kind: 'ipv4', offset: 32 },
  { c: 'fib_dmac', kind: 'mac', offset: 36 },
  { c: 'fib_smac', kind: 'mac', offset: 42 },
]);

/** Every struct of the contract, for the BTF test. */
export interface SockPeer {
  backend_addr: string;
  backend_port: number;
  addr: string;
  port: number;
}

/** The value of kpx_sock_peer: a connected socket's backend and the Service it asked for. */
export const sockPeerValue = new StructCodec<SockPeer>('kpx_sock_peer', 16, [
  { c: 'backend_addr', kind: 'ipv4', offset: 0 },
  { c: 'backend_port', kind: 'be16', offset: 4 },
  { c: 'pad', kind: 'u16', offset: 6 },
  { c: 'addr', kind: 'ipv4', offset: 8 },
  { c: 'port', kind: 'be16', offset: 12 },
  { c: 'pad2', kind: 'u16', offset: 14 },
]);

export interface SockSendto {
  sync_seq: bigint;
  addr: string;
  port: number;
  slot: number;
  backend_addr: string;
  backend_port: number;
}

/** The value of kpx_sock_sendto: an unconnected socket's last sendto() translation, and the kpx_sync_seq it holds for. */
export const sockSendtoValue = new StructCodec<SockSendto>('kpx_sock_sendto', 24, [
  { c: 'sync_seq', kind: 'u64', offset: 0 },
  { c: 'addr', kind: 'ipv4', offset: 8 },
  { c: 'port', kind: 'be16', offset: 12 },
  { c: 'slot', kind: 'u16', offset: 14 },
  { c: 'backend_addr', kind: 'ipv4', offset: 16 },
  { c: 'backend_port', kind: 'be16', offset: 20 },
  { c: 'pad2', kind: 'u16', offset: 22 },
]);

/** KPX_FILTER_ADDR_MUL and KPX_FILTER_ADDR_SHIFT: an address's bit is the top bits of its product with the multiplier. */
export const FILTER_ADDR_MUL = 0x9e3779b1;
export const FILTER_ADDR_SHIFT = 12;
/** KPX_FILTER_ADDR_WORDS, KPX_FILTER_PORT_WORDS: the sizes of kpx_filter's bit sets, in __u64 words. */
export const FILTER_ADDR_WORDS = 16384;
export const FILTER_PORT_WORDS = 1024;

export interface FilterValue {
  addr_bits: Buffer;
  nodeport_bits: Buffer;
}
/** The one value of kpx_filter: a bit set of addresses, then one of ports, __u64 words in host order. */
export const filterValue = new StructCodec<FilterValue>('kpx_filter', (FILTER_ADDR_WORDS + FILTER_PORT_WORDS) * 8, [
  { c: 'addr_bits', kind: 'bytes', offset: 0, size: FILTER_ADDR_WORDS * 8 },
  { c: 'nodeport_bits', kind: 'bytes', offset: FILTER_ADDR_WORDS * 8, size: FILTER_PORT_WORDS * 8 },
]);

/** The int key socket-local storage maps require (the kernel checks the BTF type: a plain int, not a typedef). */
export const socketFdKey = new StructCodec<{ fd: number }>('int', 4, [{ c: 'fd', kind: 'u32', offset: 0 }]);

export const CONTRACT_STRUCTS = [
  frontendKey,
  frontendValue,
  slotKey,
  slotValue,
  backendValue,
  serviceValue,
  sockRevnatKey,
  sockRevnatValue,
  sockPeerValue,
  sockSendtoValue,
  ctKey,
  ctValue,
  filterValue,
];
