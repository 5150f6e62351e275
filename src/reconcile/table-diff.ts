/**
 * Desired vs applied table content -> the ordered writes that take the
 * kernel from one to the other without a lookup ever meeting a half-written
 * service (see WRITE_ORDER in contract/tables.ts). Pure.
 */
import { DELETE_ORDER, WRITE_ORDER, type Entry, type TableName, type Tables } from '../contract/tables.js';

export type TableOp = { op: 'upsert'; table: TableName; entries: Entry[] } | { op: 'delete'; table: TableName; keys: Buffer[] };

export function diffTables(desired: Tables, applied: Tables): TableOp[] {
  const ops: TableOp[] = [];
  for (const table of WRITE_ORDER) {
    const entries: Entry[] = [];
    for (const [hex, entry] of desired[table]) {
      const current = applied[table].get(hex);
      if (!current || !current.value.equals(entry.value)) entries.push(entry);
    }
    if (entries.length) ops.push({ op: 'upsert', table, entries });
  }
  for (const table of DELETE_ORDER) {
    const keys: Buffer[] = [];
    for (const [hex, entry] of applied[table]) {
      if (!desired[table].has(hex)) keys.push(entry.key);
    }
    if (keys.length) ops.push({ op: 'delete', table, keys });
  }
  return ops;
}
