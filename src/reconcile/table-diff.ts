/**
 * Desired vs applied table content -> the ordered writes that take the
 * kernel from one to the other without a lookup ever meeting a half-written
 * service (see WRITE_ORDER in contract/tables.ts). Only the keys given are
 * compared: the compiler says which keys an update touched and what they
 * held before (the applied side then holds just those), so a single change
 * is diffed in time proportional to that change; without keys, every key of
 * both sides is. Pure.
 */
import type { PackedTable, PackedTables } from '../contract/packed.js';
import { DELETE_ORDER, WRITE_ORDER, type TableName } from '../contract/tables.js';

/** Upserts name slots of the desired table, deletes slots of the applied one. */
export type TableOp = { op: 'upsert' | 'delete'; table: TableName; slots: number[] };

export type KeySets = Record<TableName, Iterable<number>>;

export function diffTables(desired: PackedTables, applied: PackedTables, keys?: KeySets): TableOp[] {
  const ops: TableOp[] = [];
  for (const table of WRITE_ORDER) {
    const want = desired[table];
    const have = applied[table];
    const slots: number[] = [];
    const consider = (id: number, slot: number) => {
      const current = have.slot(id);
      if (current === undefined || !want.sameValue(slot, have, current)) slots.push(slot);
    };
    if (keys) {
      for (const id of keys[table]) {
        const slot = want.slot(id);
        if (slot !== undefined) consider(id, slot);
      }
    } else if (have.size === 0) {
      for (const slot of want.slots()) slots.push(slot);
    } else {
      for (const [id, slot] of want.entries()) consider(id, slot);
    }
    if (slots.length) ops.push({ op: 'upsert', table, slots });
  }
  for (const table of DELETE_ORDER) {
    const want = desired[table];
    const have = applied[table];
    const slots: number[] = [];
    if (keys) {
      for (const id of keys[table]) {
        const current = have.slot(id);
        if (current !== undefined && !want.has(id)) slots.push(current);
      }
    } else {
      for (const [id, slot] of have.entries()) if (!want.has(id)) slots.push(slot);
    }
    if (slots.length) ops.push({ op: 'delete', table, slots });
  }
  return ops;
}

/**
 * An op as a batch for the kernel: the keys, and for an upsert the values,
 * packed back to back. An op over slots 0..n-1 in order (a first sync) is
 * the arenas' own bytes, with no copy.
 */
export function opBatch(op: TableOp, desired: PackedTables, applied: PackedTables): { keys: Buffer; values?: Buffer; count: number } {
  const from: PackedTable = op.op === 'upsert' ? desired[op.table] : applied[op.table];
  const count = op.slots.length;
  if (op.slots.every((slot, index) => slot === index)) {
    const keys = from.keys.subarray(0, count * from.keySize);
    return op.op === 'upsert' ? { keys, values: from.values.subarray(0, count * from.valueSize), count } : { keys, count };
  }
  const keys = Buffer.allocUnsafe(count * from.keySize);
  const values = op.op === 'upsert' ? Buffer.allocUnsafe(count * from.valueSize) : undefined;
  op.slots.forEach((slot, index) => from.copyEntry(slot, keys, values, index));
  return values ? { keys, values, count } : { keys, count };
}
