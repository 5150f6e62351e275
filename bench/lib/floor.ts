/**
 * bpf/kpx_floor.o for the benchmarks: programs that each do one thing kpx's
 * programs cannot do without, loaded on the maps the agent pinned in a
 * bench's bpffs, so that what they do lands in kpx's own tables.
 */
import { join } from 'node:path';
import { BPF_DIR } from '../../src/datapath/ebpf.js';
import * as bpf from '../../src/datapath/libbpf.js';
import { openOnPinnedMaps } from '../../src/datapath/pinned-maps.js';

export type FloorProgram = 'kpx_floor_frontend_lookup' | 'kpx_floor_peer_record' | 'kpx_floor_ct_insert_xdp' | 'kpx_floor_ct_insert_tc';

export interface FloorObject {
  /** The program's fd; it lives as long as the object. */
  programFd(name: FloorProgram): number;
  close(): void;
}

export function openFloorObject(bpffs: string): FloorObject {
  const obj = openOnPinnedMaps(join(BPF_DIR, 'kpx_floor.o'), bpffs);
  return {
    programFd: (name) => bpf.programFd(bpf.findProgram(obj, name)),
    close: () => bpf.closeObject(obj),
  };
}
