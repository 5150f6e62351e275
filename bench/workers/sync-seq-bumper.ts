/**
 * Moves kpx_sync_seq on by two, as a sync that lands does, as often as it
 * can for SECONDS: a socket's next sendto then finds its kept translation
 * stale and looks its backend up among its Service's slots. Prints
 * "moving" when it starts, then one JSON line: how many times it moved.
 *
 *   node sync-seq-bumper.js PIN SECONDS
 */
import { closeSync } from 'node:fs';
import { u32Key, u64Value } from '../../src/contract/codecs.js';
import { mapLookup, mapUpdate, objGet } from '../../src/datapath/libbpf.js';

const [pin, seconds] = process.argv.slice(2);
if (!pin || !seconds) throw new Error('usage: sync-seq-bumper PIN SECONDS');
const fd = objGet(pin);
try {
  const key = u32Key.encode({ id: 0 });
  let seq = u64Value.decode(mapLookup(fd, key, u64Value.size)!).value;
  console.log('moving');
  const end = performance.now() + Number(seconds) * 1000;
  let moves = 0;
  while (performance.now() < end) {
    seq += 2n;
    mapUpdate(fd, key, u64Value.encode({ value: seq }));
    moves++;
  }
  console.log(JSON.stringify({ moves }));
} finally {
  closeSync(fd);
}
