/**
 * Desired vs applied table content -> the ordered writes that take the
 * kernel from one to the other without a lookup ever meeting a half-written
 * service (see WRITE_ORDER in contract/tables.ts). Only the keys given are
 * compared: the compiler says which keys an update touched, so a single
 * change is diffed in time proportional to that change; without keys, every
 * key of both sides is. Pure.
 */
import { DELETE_ORDER, WRITE_ORDER, allKeys, type Entry, type TableName, type Tables } from '../contract/tables.js';

export type TableOp = { op: 'upsert'; table: TableName; entries: Entry[] } | { op: 'delete'; table: TableName; keys: Buffer[] };

export type KeySets = Record<TableName, Iterable<string>>;

export function diffTables(desired: Tables, applied: Tables, keys: KeySets = allKeys(desired, applied)): TableOp[] {
  const ops: TableOp[] = [];
  for (const table of WRITE_ORDER) {
    const entries: Entry[] = [];
    for (const hex of keys[table]) {
      const entry = desired[table].get(hex);
      const current = applied[table].get(hex);
      if (entry && (!current || !current.value.equals(entry.value))) entries.push(entry);
    }
    if (entries.length) ops.push({ op: 'upsert', table, entries });
  }
  for (const table of DELETE_ORDER) {
    const gone: Buffer[] = [];
    for (const hex of keys[table]) {
      const current = applied[table].get(hex);
      if (current && !desired[table].has(hex)) gone.push(current.key);
    }
    if (gone.length) ops.push({ op: 'delete', table, keys: gone });
  }
  return ops;
}

/** Makes applied equal desired on the given keys, once their ops have landed. */
export function markApplied(desired: Tables, applied: Tables, keys: KeySets): void {
  for (const table of WRITE_ORDER) {
    for (const hex of keys[table]) {
      const entry = desired[table].get(hex);
      if (entry) applied[table].set(hex, entry);
      else applied[table].delete(hex);
    }
  }
}
