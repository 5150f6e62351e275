/**
 * bpf/kpx_floor.o for the benchmarks: programs that each do one thing kpx's
 * programs cannot do without, loaded on the maps the agent pinned in a
 * bench's bpffs, so that what they do lands in kpx's own tables.
 */
import { closeSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { BPF_DIR } from '../../src/datapath/ebpf.js';
import * as bpf from '../../src/datapath/libbpf.js';

export type FloorProgram = 'kpx_floor_frontend_lookup' | 'kpx_floor_peer_record' | 'kpx_floor_ct_insert_xdp' | 'kpx_floor_ct_insert_tc';

export interface FloorObject {
  /** The program's fd; it lives as long as the object. */
  programFd(name: FloorProgram): number;
  close(): void;
}

export function openFloorObject(bpffs: string): FloorObject {
  const obj = bpf.openObject(join(BPF_DIR, 'kpx_floor.o'));
  try {
    for (const [name, map] of bpf.objectMaps(obj)) {
      // Only kpx's maps are pinned; the floor's own (its socket storage) lives with the object.
      const pin = join(bpffs, name);
      if (!existsSync(pin)) continue;
      // Benches size the maps: libbpf reuses a pin only if the declared size matches.
      const pinned = bpf.objGet(pin);
      try {
        bpf.setMapMaxEntries(map, bpf.mapShape(pinned).maxEntries);
      } finally {
        closeSync(pinned);
      }
      bpf.setMapPinPath(map, pin);
    }
    bpf.loadObject(obj);
  } catch (err) {
    bpf.closeObject(obj);
    throw err;
  }
  return {
    programFd: (name) => bpf.programFd(bpf.findProgram(obj, name)),
    close: () => bpf.closeObject(obj),
  };
}
