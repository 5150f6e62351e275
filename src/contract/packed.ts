/**
 * A map's entries as the control plane holds them while it works: keys and
 * values packed into two byte arenas, each entry found by a number derived
 * from its key bytes (TableSpec.keyId). A full sync holds a few hundred
 * thousand entries; as one Buffer pair, a hex string and a Map slot each
 * they cost most of a sync in allocation and garbage collection, packed
 * they cost two arenas and one index of numbers (IdIndex).
 *
 * The Map<hex, Entry> form (Tables) stays the readable view for tools and
 * tests: content() gives it.
 */
import { TABLES, type TableContent, type TableName, type Tables } from './tables.js';

const INITIAL_SLOTS = 64;
const NO_BYTES = Buffer.alloc(0);

/** IdIndex's mark of an unused key or cell. */
const NONE = -1;
/** The storage of an IdIndex that never held a key: read, never written. */
const NO_CELLS = new Int32Array(1).fill(NONE);
const NO_KEYS = new Float64Array(0);

/**
 * Integer keys (0 to 2^53) to dense values (slots, IDs: small integers
 * from 0, few unused), found by open addressing. At a full sync the
 * control plane keeps a few hundred thousand of them: as Map entries they
 * cost a rehash at each doubling, a heap number for every key past 2^31 (a
 * backend's tupleId) and tables the garbage collector scans. Here a cell
 * holds a value, and each value's key is kept by value (keyOf): 16 to 24
 * bytes an entry, in two flat arrays, against some 50 in a Map.
 */
export class IdIndex {
  // Made on the first add: every sync makes a set of tables (Changes.before), most of them left empty.
  private cells = NO_CELLS;
  private mask = 0;
  /** The key of each value in use, NONE for the others. */
  private keys = NO_KEYS;
  size = 0;

  /** The value of key, or -1. */
  get(key: number): number {
    const cells = this.cells;
    for (let at = this.cell(key); ; at = (at + 1) & this.mask) {
      const value = cells[at]!;
      if (value === NONE || this.keys[value] === key) return value;
    }
  }

  has(key: number): boolean {
    return this.get(key) !== NONE;
  }

  /** The key of a value in use, or -1. */
  keyOf(value: number): number {
    return value < this.keys.length ? this.keys[value]! : NONE;
  }

  /** Makes room for `size` keys with values below `values`, at once rather than doubling up to there. */
  reserve(size: number, values: number): void {
    // At least doubled, as add() grows it: reserving a few more at a time (single changes) must not copy it every time.
    if (values > this.keys.length) this.growKeys(Math.max(values, this.keys.length * 2));
    let capacity = this.mask + 1;
    while (size * 2 > capacity) capacity *= 2;
    if (capacity > this.mask + 1) this.rehash(capacity);
  }

  /** Adds key with value; neither may be in use. */
  add(key: number, value: number): void {
    this.makeRoom(value);
    this.keys[value] = key;
    let at = this.cell(key);
    while (this.cells[at] !== NONE) at = (at + 1) & this.mask;
    this.cells[at] = value;
    this.size++;
  }

  /**
   * The value of key if it has one; else adds it with value (not in use)
   * and returns -1. One probe where get() then add() take two: a full sync
   * claims a few hundred thousand new keys.
   */
  getOrAdd(key: number, value: number): number {
    // Made before the probe, which the room may move; a key found leaves that room for the next one.
    this.makeRoom(value);
    const cells = this.cells;
    let at = this.cell(key);
    for (; ; at = (at + 1) & this.mask) {
      const found = cells[at]!;
      if (found === NONE) break;
      if (this.keys[found] === key) return found;
    }
    this.keys[value] = key;
    cells[at] = value;
    this.size++;
    return NONE;
  }

  /** Room for one more key, with value. */
  private makeRoom(value: number): void {
    // 8 keys and 16 cells are 64 bytes each, the most V8 keeps inside its heap: past that a typed array costs a malloc.
    if (value >= this.keys.length) this.growKeys(Math.max(value + 1, this.keys.length * 2, 8));
    // At most half full: probes stay short.
    if ((this.size + 1) * 2 > this.mask + 1) this.rehash(Math.max((this.mask + 1) * 2, 16));
  }

  delete(key: number): boolean {
    const cells = this.cells;
    const mask = this.mask;
    let at = this.cell(key);
    for (; ; at = (at + 1) & mask) {
      const value = cells[at]!;
      if (value === NONE) return false;
      if (this.keys[value] === key) break;
    }
    this.keys[cells[at]!] = NONE;
    // Backward shift: move later values of the probe run into the hole, so no lookup stops short.
    for (let next = (at + 1) & mask; cells[next] !== NONE; next = (next + 1) & mask) {
      const home = this.cell(this.keys[cells[next]!]!);
      if (((next - home) & mask) >= ((next - at) & mask)) {
        cells[at] = cells[next]!;
        at = next;
      }
    }
    cells[at] = NONE;
    this.size--;
    return true;
  }

  /** Calls fn with every key and value, in no particular order; fn must not change the index. */
  forEach(fn: (key: number, value: number) => void): void {
    for (let value = 0; value < this.keys.length; value++) if (this.keys[value] !== NONE) fn(this.keys[value]!, value);
  }

  private cell(key: number): number {
    // Both halves of the key: tupleIds differ in their high bits too.
    const h = Math.imul((key >>> 0) ^ Math.imul((key / 4294967296) >>> 0, 0x9e3779b1), 0x85ebca6b);
    return (h ^ (h >>> 15)) & this.mask;
  }

  private growKeys(length: number): void {
    const keys = new Float64Array(length).fill(NONE);
    keys.set(this.keys);
    this.keys = keys;
  }

  private rehash(capacity: number): void {
    const cells = this.cells;
    this.cells = new Int32Array(capacity).fill(NONE);
    this.mask = capacity - 1;
    for (let from = 0; from < cells.length; from++) {
      const value = cells[from]!;
      if (value === NONE) continue;
      let at = this.cell(this.keys[value]!);
      while (this.cells[at] !== NONE) at = (at + 1) & this.mask;
      this.cells[at] = value;
    }
  }
}

export class PackedTable {
  readonly keySize: number;
  readonly valueSize: number;
  keys: Buffer;
  values: Buffer;
  /** Key id -> slot; its keyOf(slot) is the key id a slot holds. */
  private readonly slotById = new IdIndex();
  /** Slots the arenas have room for: none until the first entry. */
  private capacity = 0;
  private readonly freeSlots: number[] = [];
  /** Slots at or above it were never used. */
  private end = 0;

  constructor(readonly table: TableName) {
    this.keySize = TABLES[table].key.size;
    this.valueSize = TABLES[table].value.size;
    // Made on the first claim, as the index is: most tables of Changes.before stay empty.
    this.keys = NO_BYTES;
    this.values = NO_BYTES;
  }

  get size(): number {
    return this.slotById.size;
  }

  has(id: number): boolean {
    return this.slotById.has(id);
  }

  slot(id: number): number | undefined {
    const slot = this.slotById.get(id);
    return slot === NONE ? undefined : slot;
  }

  /*
   * Entries are listed in slot order: a table filled from empty lists slots
   * 0, 1, 2... (opBatch then copies nothing). As arrays: an iterator would
   * make an object per entry, a few hundred thousand in a full sync.
   */

  ids(): number[] {
    return this.slots().map((slot) => this.slotById.keyOf(slot));
  }

  slots(): number[] {
    // Made at its length: pushed to, a list of a few hundred thousand grows through a dozen copies. new Array(n) stays a
    // fast array far past any map's size (to 32 million elements in V8 11).
    const slots = new Array<number>(this.size);
    // No slot freed (a table filled from empty): every one below end is in use.
    if (this.freeSlots.length === 0) {
      for (let slot = 0; slot < this.end; slot++) slots[slot] = slot;
      return slots;
    }
    let at = 0;
    for (let slot = 0; slot < this.end; slot++) if (this.slotById.keyOf(slot) !== NONE) slots[at++] = slot;
    return slots;
  }

  /** The key id of the entry at slot (one of slots()). */
  idAt(slot: number): number {
    return this.slotById.keyOf(slot);
  }

  /** The slot holding id, made for it if it is new; the caller writes its key and value bytes. */
  claim(id: number): number {
    const free = this.freeSlots.length;
    const slot = free > 0 ? this.freeSlots[free - 1]! : this.end;
    const held = this.slotById.getOrAdd(id, slot);
    if (held !== NONE) return held;
    if (free > 0) this.freeSlots.pop();
    else this.end++;
    if (slot >= this.capacity) this.grow(Math.max(this.capacity * 2, INITIAL_SLOTS));
    return slot;
  }

  delete(id: number): void {
    const slot = this.slotById.get(id);
    if (slot === NONE) return;
    this.slotById.delete(id);
    this.freeSlots.push(slot);
  }

  /** Makes room for `more` entries beyond those held, at once rather than doubling up to there. */
  reserve(more: number): void {
    const size = this.size + more;
    if (size > this.capacity) {
      let capacity = Math.max(this.capacity, INITIAL_SLOTS);
      while (capacity < size) capacity *= 2;
      this.grow(capacity);
    }
    this.slotById.reserve(size, this.capacity);
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
    for (const slot of this.slots()) {
      const key = Buffer.from(this.keys.subarray(slot * this.keySize, (slot + 1) * this.keySize));
      const value = Buffer.from(this.values.subarray(slot * this.valueSize, (slot + 1) * this.valueSize));
      out.set(key.toString('hex'), { key, value });
    }
    return out;
  }

  private grow(slots: number): void {
    const keys = Buffer.alloc(slots * this.keySize);
    const values = Buffer.alloc(slots * this.valueSize);
    // Buffer.copy is a call into C++, a microsecond even for nothing: tables of Changes.before start empty.
    if (this.capacity > 0) {
      this.keys.copy(keys);
      this.values.copy(values);
    }
    this.keys = keys;
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
