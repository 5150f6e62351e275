/** Objects that share the maps the agent pinned (kpx_maps.h) rather than making their own. */
import { closeSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import * as bpf from './libbpf.js';

/**
 * Opens an object whose maps are kpx's, on the maps the agent pinned in
 * `bpffs` (sized as they are there: libbpf reuses a pin only if the sizes
 * match). Maps the object has of its own are created with it.
 */
export function openOnPinnedMaps(path: string, bpffs: string): bpf.BpfObjectPtr {
  const obj = bpf.openObject(path);
  try {
    for (const [name, map] of bpf.objectMaps(obj)) {
      const pin = join(bpffs, name);
      if (!existsSync(pin)) continue;
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
  return obj;
}
