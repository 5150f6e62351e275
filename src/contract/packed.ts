/**
 * A map's entries as the control plane holds them while it works: keys and
 * values packed into two byte arenas, each entry found by a number derived
 * from its key bytes (TableSpec.keyId). A full sync holds a few hundred
 * thousand entries; as one Buffer pair, a hex string and a Map slot each
 * they cost most of a sync in allocation and garbage collection, packed
 * they cost two arenas and one Map of numbers.
 *
 * The Map<hex, Entry> form (Tables) stays the readable view for tools and
 * tests: content() gives it.
 */
import { TABLES, type TableContent, type TableName, type Tables } from './tables.js';

const INITIAL_SLOTS = 64;

export class PackedTable {
  readonly keySize: number;
  readonly valueSize: number;
  keys: Buffer;
  values: Buffer;
  private readonly slotById = new Map<number, number>();
  /** Slots the arenas have room for. */
  private capacity = INITIAL_SLOTS;
  private readonly freeSlots: number[] = [];
  /** Slots at or above it were never used. */
  private end = 0;

  constructor(readonly table: TableName) {
    this.keySize = TABLES[table].key.size;
    this.valueSize = TABLES[table].value.size;
    this.keys = Buffer.alloc(INITIAL_SLOTS * this.keySize);
    this.values = Buffer.alloc(INITIAL_SLOTS * this.valueSize);
  }

  get size(): number {
    return this.slotById.size;
  }

  has(id: number): boolean {
    return this.slotById.has(id);
  }

  slot(id: number): number | undefined {
    return this.slotById.get(id);
  }

  ids(): IterableIterator<number> {
    return this.slotById.keys();
  }

  slots(): IterableIterator<number> {
    return this.slotById.values();
  }

  /** [id, slot] of every entry. */
  entries(): IterableIterator<[number, number]> {
    return this.slotById.entries();
  }

  /** The slot holding id, made for it if it is new; the caller writes its key and value bytes. */
  claim(id: number): number {
    let slot = this.slotById.get(id);
    if (slot !== undefined) return slot;
    slot = this.freeSlots.pop() ?? this.end++;
    if (slot >= this.capacity) this.grow();
    this.slotById.set(id, slot);
    return slot;
  }

  delete(id: number): void {
    const slot = this.slotById.get(id);
    if (slot === undefined) return;
    this.slotById.delete(id);
    this.freeSlots.push(slot);
  }

  /** Puts a whole entry given as bytes (read back from the kernel, or built by a test). */
  set(key: Buffer, value: Buffer): void {
    const slot = this.claim(TABLES[this.table].keyId(key, 0));
    key.copy(this.keys, slot * this.keySize, 0, this.keySize);
    value.copy(this.values, slot * this.valueSize, 0, this.valueSize);
  }

  /** Whether the value at slot equals the value at otherSlot of other (a table of the same map). */
  sameValue(slot: number, other: PackedTable, otherSlot: number): boolean {
    const size = this.valueSize;
    const a = this.values;
    const b = other.values;
    for (let i = 0, x = slot * size, y = otherSlot * size; i < size; i++, x++, y++) if (a[x] !== b[y]) return false;
    return true;
  }

  /** Copies the entry at slot into entry `index` of other packed buffers (a batch being built, or another table). */
  copyEntry(slot: number, keysOut: Buffer | undefined, valuesOut: Buffer | undefined, index: number): void {
    if (keysOut) copyBytes(this.keys, slot * this.keySize, keysOut, index * this.keySize, this.keySize);
    if (valuesOut) copyBytes(this.values, slot * this.valueSize, valuesOut, index * this.valueSize, this.valueSize);
  }

  /** The entries as a Map<hex, Entry> with their own buffers. */
  content(): TableContent {
    const out: TableContent = new Map();
    for (const slot of this.slotById.values()) {
      const key = Buffer.from(this.keys.subarray(slot * this.keySize, (slot + 1) * this.keySize));
      const value = Buffer.from(this.values.subarray(slot * this.valueSize, (slot + 1) * this.valueSize));
      out.set(key.toString('hex'), { key, value });
    }
    return out;
  }

  private grow(): void {
    const slots = this.capacity * 2;
    const keys = Buffer.alloc(slots * this.keySize);
    this.keys.copy(keys);
    this.keys = keys;
    const values = Buffer.alloc(slots * this.valueSize);
    this.values.copy(values);
    this.values = values;
    this.capacity = slots;
  }
}

/** Byte by byte: Buffer.copy costs more than the few bytes an entry has. */
export function copyBytes(from: Buffer, at: number, to: Buffer, toAt: number, length: number): void {
  for (let i = 0; i < length; i++) to[toAt + i] = from[at + i]!;
}

export type PackedTables = Record<TableName, PackedTable>;

export function emptyPackedTables(): PackedTables {
  return {
    frontends: new PackedTable('frontends'),
    slots: new PackedTable('slots'),
    backends: new PackedTable('backends'),
    services: new PackedTable('services'),
    nodeAddrs: new PackedTable('nodeAddrs'),
  };
}

export function tablesContent(tables: PackedTables): Tables {
  return {
    frontends: tables.frontends.content(),
    slots: tables.slots.content(),
    backends: tables.backends.content(),
    services: tables.services.content(),
    nodeAddrs: tables.nodeAddrs.content(),
  };
}

/** The packed form of a Map<hex, Entry> table set (tests build tables that way). */
export function packTables(tables: Tables): PackedTables {
  const out = emptyPackedTables();
  for (const table of Object.keys(TABLES) as TableName[]) for (const { key, value } of tables[table].values()) out[table].set(key, value);
  return out;
}
