/**
 * Garbage collection at times the agent picks: right after a sync, when the
 * change has reached the kernel and nothing waits, instead of whenever an
 * allocation finds the heap full, which is often in the middle of the next
 * change. bin/kpx exposes gc() (bin/node-flags); without it this does nothing.
 */
import { getHeapSpaceStatistics } from 'node:v8';
import koffi from 'koffi';

/**
 * glibc's malloc_trim(0), where there is one: the C heap holds what a full
 * sync allocated outside V8 (Buffers, typed arrays, the kernel batches),
 * and keeps it once freed, as RSS. At 10,000 Services it handed back about
 * 10 MB of 160.
 */
const trimCHeap = ((): (() => void) | undefined => {
  try {
    const trim = koffi.load('libc.so.6').func('int malloc_trim(size_t pad)');
    return () => void trim(0);
  } catch {
    return undefined;
  }
})();

/**
 * After a full sync: a full collection, or V8 keeps the sync's garbage (its
 * heap grown to the peak, most of the RSS at 10,000 Services) until later
 * allocation makes it collect; then the C heap is trimmed (trimCHeap).
 *
 * After any other sync: a young-generation collection once the young
 * generation is half full. At 10,000 Services a scavenge that allocation
 * forces pauses 1.5-3.5 ms, every 80 or so single changes; one taken here
 * costs the same but no change waits for it.
 *
 * Returns whether it collected.
 */
export function collectAfterSync(full: boolean): boolean {
  const gc = globalThis.gc;
  if (!gc) return false;
  if (full) {
    // Not gc({ type: 'major' }): Node 20's V8 takes that for a scavenge.
    gc();
    trimCHeap?.();
    return true;
  }
  const young = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
  if (!young || young.space_used_size * 2 < young.space_used_size + young.space_available_size) return false;
  gc({ type: 'minor' });
  return true;
}
