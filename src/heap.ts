/**
 * Garbage collection at times the agent picks: right after a sync, when the
 * change has reached the kernel and nothing waits, instead of whenever an
 * allocation finds the heap full, which is often in the middle of the next
 * change. bin/kpx exposes gc() (bin/node-flags); without it this does nothing.
 */
import { getHeapSpaceStatistics, type HeapSpaceInfo } from 'node:v8';
import koffi from 'koffi';

/** glibc's malloc_trim and mallopt, where there are (not on musl). */
const libc = ((): { trim: (pad: number) => number; mallopt: (param: number, value: number) => number } | undefined => {
  try {
    const lib = koffi.load('libc.so.6');
    return { trim: lib.func('int malloc_trim(size_t pad)'), mallopt: lib.func('int mallopt(int param, int value)') };
  } catch {
    return undefined;
  }
})();

const M_MMAP_THRESHOLD = -3;
/**
 * Blocks of 128 KiB and more (glibc's default threshold) get a mapping of
 * their own, unmapped when freed. Left alone, glibc raises the threshold to
 * the largest block freed so far (up to 32 MiB): the table buffers that a
 * full sync grows and frees then come from the heap and stay in it as RSS,
 * 4-5 MB at 10,000 Services. Setting it once turns that adjustment off.
 */
libc?.mallopt(M_MMAP_THRESHOLD, 128 * 1024);

/**
 * malloc_trim(0): the C heap holds what a full sync allocated outside V8
 * (Buffers, typed arrays, the kernel batches), and keeps it once freed, as
 * RSS. At 10,000 Services it handed back about 10 MB of 160.
 */
const trimCHeap = () => void libc?.trim(0);

/**
 * V8's Isolate::MemoryPressureNotification, called through the node
 * binary's exported symbols (undefined where they are not there). At the
 * moderate level it starts an incremental collection at once, rather than
 * when the old generation reaches its limit, and returns: the marking goes
 * on in steps of 1-2 ms between events and on V8's background thread, and
 * ends in a pause of 3-8 ms at 10,000 Services, where gc() marks everything
 * in one pause of 80-100 ms. The collection is a memory-reducing one: it
 * also compacts fragmented pages and shrinks the young generation.
 *
 * Only the moderate level, which starts marking within the call and
 * finishes later, on the thread's own stack. koffi runs a call on a stack
 * of its own, and a collection within the call (the critical level) scans
 * the stack conservatively from there up to the thread's real stack: it
 * crashed Node 20 in cppgc's stack scan. A V8 that one day collected while
 * starting to mark would do the same.
 */
const startIncrementalCollection = ((): (() => void) | undefined => {
  try {
    const node = koffi.load(null);
    const isolate: unknown = node.func('void *_ZN2v87Isolate10GetCurrentEv()')();
    const notify = node.func('void _ZN2v87Isolate26MemoryPressureNotificationENS_19MemoryPressureLevelE(void *isolate, int level)');
    const MODERATE = 1;
    return () => void notify(isolate, MODERATE);
  } catch {
    return undefined;
  }
})();

/**
 * Old-generation garbage that changes may leave before the agent starts a
 * collection. Each change replaces a Service's model and compiled objects;
 * the old ones die in the old generation, which V8 collects only near its
 * limit, half as much again as the live data (bin/node-flags): some 28 MB
 * at 10,000 Services, all of it RSS by then. A sixteenth of the live data
 * where that is more, so that a large cluster is not marked every few
 * seconds.
 */
const OLD_GARBAGE_MIN_BYTES = 4 * 2 ** 20;
const OLD_GARBAGE_SHARE_OF_LIVE = 1 / 16;

const OLD_SPACES = new Set(['old_space', 'large_object_space', 'code_space', 'code_large_object_space']);

function oldGenerationUsed(spaces: HeapSpaceInfo[]): number {
  let used = 0;
  for (const s of spaces) if (OLD_SPACES.has(s.space_name)) used += s.space_used_size;
  return used;
}

/** The old generation's size after the last collection: garbage is counted from there. */
let oldLiveBytes = Infinity;

/**
 * After a full sync: a memory-reducing collection (it also compacts and
 * shrinks the young generation), finished at once by gc() so that none of
 * it is left for the first changes, or V8 keeps the sync's garbage (its
 * heap grown to the peak, most of the RSS at 10,000 Services) until later
 * allocation makes it collect; then the C heap is trimmed (trimCHeap), of
 * what all of that freed. It leaves the V8 heap at 62 MB instead of 80
 * after gc() alone (RSS 131 MB instead of 147) at 10,000 Services.
 *
 * After any other sync: an incremental collection once the old generation
 * holds more garbage than OLD_GARBAGE_MIN_BYTES (every 10 s or so at 100
 * changes/s); otherwise a young-generation collection once the young
 * generation is half full. At 10,000 Services a scavenge that allocation
 * forces pauses 1.5-3.5 ms, every 80 or so single changes; one taken here
 * costs the same but no change waits for it.
 *
 * Returns whether it collected, or started to.
 */
export function collectAfterSync(full: boolean): boolean {
  const gc = globalThis.gc;
  if (!gc) return false;
  if (full) {
    startIncrementalCollection?.();
    // Not gc({ type: 'major' }): Node 20's V8 takes that for a scavenge.
    gc();
    trimCHeap();
    oldLiveBytes = oldGenerationUsed(getHeapSpaceStatistics());
    return true;
  }
  const spaces = getHeapSpaceStatistics();
  const old = oldGenerationUsed(spaces);
  // Lower once a collection has ended, ours or one V8 started.
  oldLiveBytes = Math.min(oldLiveBytes, old);
  if (startIncrementalCollection && old - oldLiveBytes > Math.max(OLD_GARBAGE_MIN_BYTES, oldLiveBytes * OLD_GARBAGE_SHARE_OF_LIVE)) {
    startIncrementalCollection();
    oldLiveBytes = old;
    return true;
  }
  const young = spaces.find((s) => s.space_name === 'new_space');
  if (!young || young.space_used_size * 2 < young.space_used_size + young.space_available_size) return false;
  gc({ type: 'minor' });
  return true;
}

/** Whether this Node lets the agent start an incremental collection (V8's exported symbols were found). */
export const canStartIncrementalCollection = startIncrementalCollection !== undefined;
