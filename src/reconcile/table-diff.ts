/**
 * Desired vs applied table content -> the ordered writes that take the
 * kernel from one to the other without a lookup ever meeting a half-written
 * service (see WRITE_ORDER in contract/tables.ts). Only the keys given are
 * compared: the compiler says which keys an update touched and what they
 * held before (the applied side then holds just those), so a single change
 * is diffed in time proportional to that change; without keys, every key of
 * both sides is. Pure.
 *
 * Deletes no lookup can reach any more go first: frontends and node
 * addresses (where every lookup starts), then the slots and entries of
 * service ports that are gone and that no frontend still leads to. A map
 * near its size then has room for the writes; the other deletes follow the
 * writes, in DELETE_ORDER.
 */
import { frontendValue } from '../contract/codecs.js';
import type { PackedTable, PackedTables } from '../contract/packed.js';
import { DELETE_ORDER, serviceOfSlotId, WRITE_ORDER, type TableName } from '../contract/tables.js';

/** Upserts name slots of the desired table, deletes slots of the applied one. */
export type TableOp = { op: 'upsert' | 'delete'; table: TableName; slots: number[] };

export type KeySets = Record<TableName, Iterable<number>>;

export function diffTables(desired: PackedTables, applied: PackedTables, keys?: KeySets): TableOp[] {
  const deletes = {} as Record<TableName, Array<[id: number, slot: number]>>;
  for (const table of DELETE_ORDER) deletes[table] = gone(desired[table], applied[table], keys?.[table]);
  const early = unreachable(desired, applied, keys, deletes);
  const ops: TableOp[] = [];
  const pushDeletes = (table: TableName, which: (id: number) => boolean) => {
    const slots = deletes[table].filter(([id]) => which(id)).map(([, slot]) => slot);
    if (slots.length) ops.push({ op: 'delete', table, slots });
  };
  for (const table of DELETE_ORDER) pushDeletes(table, (id) => early[table](id));
  for (const table of WRITE_ORDER) {
    const want = desired[table];
    const have = applied[table];
    let slots: number[] = [];
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
      slots = want.slots();
    } else {
      for (const slot of want.slots()) consider(want.idAt(slot), slot);
    }
    // Highest slot of a service first: an endpoint that turns draining moves up, behind the ready ones, and written
    // so it stays listed throughout, where an unconnected socket's sendto looks for it (kpx_service_slot_of).
    if (table === 'slots' && have.size > 0) slots.sort((a, b) => want.idAt(b) - want.idAt(a));
    if (slots.length) ops.push({ op: 'upsert', table, slots });
  }
  for (const table of DELETE_ORDER) pushDeletes(table, (id) => !early[table](id));
  return ops;
}

/** [id, slot in applied] of the keys applied holds and desired does not. */
function gone(want: PackedTable, have: PackedTable, keys: Iterable<number> | undefined): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  if (keys) {
    for (const id of keys) {
      const current = have.slot(id);
      if (current !== undefined && !want.has(id)) out.push([id, current]);
    }
  } else {
    for (const slot of have.slots()) if (!want.has(have.idAt(slot))) out.push([have.idAt(slot), slot]);
  }
  return out;
}

/** Per table, whether the delete of a key is one no lookup can reach once the frontends and node addresses to go are gone. */
function unreachable(
  desired: PackedTables,
  applied: PackedTables,
  keys: KeySets | undefined,
  deletes: Record<TableName, Array<[number, number]>>,
): Record<TableName, (id: number) => boolean> {
  // Service IDs are never reused within an update: a service entry that goes is a service port that went.
  const goneServices = new Set(deletes.services.map(([id]) => id));
  // ...unless a frontend that stays still leads to it until that frontend is rewritten (its address moved to another port).
  const stillLedTo = new Set<number>();
  const frontendIds = keys ? keys.frontends : desired.frontends.ids();
  for (const id of frontendIds) {
    const at = applied.frontends.slot(id);
    if (at === undefined || !desired.frontends.has(id)) continue;
    const serviceId = frontendValue.decode(applied.frontends.values, at * frontendValue.size).service_id;
    if (goneServices.has(serviceId)) stillLedTo.add(serviceId);
  }
  const unreachableService = (serviceId: number) => goneServices.has(serviceId) && !stillLedTo.has(serviceId);
  return {
    nodeAddrs: () => true,
    frontends: () => true,
    slots: (id) => unreachableService(serviceOfSlotId(id)),
    services: (id) => unreachableService(id),
    backends: () => false,
  };
}

/**
 * An op as a batch for the kernel: the keys, and for an upsert the values,
 * packed back to back. An op over slots 0..n-1 in order (a first sync) is
 * the arenas' own bytes, with no copy.
 */
export function opBatch(op: TableOp, desired: PackedTables, applied: PackedTables): { keys: Buffer; values?: Buffer; count: number } {
  const from: PackedTable = op.op === 'upsert' ? desired[op.table] : applied[op.table];
  const count = op.slots.length;
  if (inOrder(op.slots)) {
    const keys = from.keys.subarray(0, count * from.keySize);
    return op.op === 'upsert' ? { keys, values: from.values.subarray(0, count * from.valueSize), count } : { keys, count };
  }
  const keys = Buffer.allocUnsafe(count * from.keySize);
  const values = op.op === 'upsert' ? Buffer.allocUnsafe(count * from.valueSize) : undefined;
  op.slots.forEach((slot, index) => from.copyEntry(slot, keys, values, index));
  return values ? { keys, values, count } : { keys, count };
}

/** Whether slots are 0, 1, 2...: a loop, as a first sync checks a few hundred thousand before V8 optimizes a callback. */
function inOrder(slots: number[]): boolean {
  for (let i = 0; i < slots.length; i++) if (slots[i] !== i) return false;
  return true;
}
