/**
 * Desired vs applied table content -> the ordered writes that take the
 * kernel from one to the other without a lookup ever meeting a half-written
 * service (see WRITE_ORDER in contract/tables.ts). Only the keys given are
 * compared: the compiler says which keys an update touched, so a single
 * change is diffed in time proportional to that change; without keys, every
 * key of both sides is. Pure.
 */
import { allIds, type PackedTable, type PackedTables } from '../contract/packed.js';
import { DELETE_ORDER, WRITE_ORDER, type TableName } from '../contract/tables.js';

/** Upserts name slots of the desired table, deletes slots of the applied one. */
export type TableOp = { op: 'upsert' | 'delete'; table: TableName; slots: number[] };

export type KeySets = Record<TableName, Iterable<number>>;

export function diffTables(desired: PackedTables, applied: PackedTables, keys: KeySets = allIds(desired, applied)): TableOp[] {
  const ops: TableOp[] = [];
  for (const table of WRITE_ORDER) {
    const want = desired[table];
    const have = applied[table];
    const slots: number[] = [];
    for (const id of keys[table]) {
      const slot = want.slot(id);
      if (slot === undefined) continue;
      const current = have.slot(id);
      if (current === undefined || !want.sameValue(slot, have, current)) slots.push(slot);
    }
    if (slots.length) ops.push({ op: 'upsert', table, slots });
  }
  for (const table of DELETE_ORDER) {
    const want = desired[table];
    const have = applied[table];
    const slots: number[] = [];
    for (const id of keys[table]) {
      const current = have.slot(id);
      if (current !== undefined && !want.has(id)) slots.push(current);
    }
    if (slots.length) ops.push({ op: 'delete', table, slots });
  }
  return ops;
}

/** An op as a batch for the kernel: the keys, and for an upsert the values, packed back to back. */
export function opBatch(op: TableOp, desired: PackedTables, applied: PackedTables): { keys: Buffer; values?: Buffer; count: number } {
  const from: PackedTable = op.op === 'upsert' ? desired[op.table] : applied[op.table];
  const count = op.slots.length;
  const keys = Buffer.allocUnsafe(count * from.keySize);
  const values = op.op === 'upsert' ? Buffer.allocUnsafe(count * from.valueSize) : undefined;
  op.slots.forEach((slot, index) => from.copyEntry(slot, keys, values, index));
  return values ? { keys, values, count } : { keys, count };
}

/** Makes applied equal desired on the given keys, once their ops have landed. */
export function markApplied(desired: PackedTables, applied: PackedTables, keys: KeySets): void {
  for (const table of WRITE_ORDER) {
    const want = desired[table];
    const have = applied[table];
    for (const id of keys[table]) {
      const slot = want.slot(id);
      if (slot === undefined) {
        have.delete(id);
        continue;
      }
      // claim() may grow have's arenas: pass them only after it.
      const at = have.claim(id);
      want.copyEntry(slot, have.keys, have.values, at);
    }
  }
}
