/**
 * The packet programs' path counters (kpx_stats): how many packets took
 * each path through tc and XDP, summed over CPUs. Read from the pins, so a
 * benchmark, a test or `kpx` itself can read them without the agent.
 */
import { closeSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { STAT, u32Key, u64Value, type StatName } from '../contract/codecs.js';
import * as bpf from './libbpf.js';

export type Stats = Record<StatName, bigint>;

/**
 * The number of possible CPUs, as the kernel sizes per-CPU values: the
 * highest index in /sys/devices/system/cpu/possible ("0-3", "0,2-5") plus one.
 */
export function possibleCpus(list = readFileSync('/sys/devices/system/cpu/possible', 'utf8')): number {
  const highest = Math.max(...list.trim().split(',').map((range) => Number(range.split('-').pop())));
  if (!Number.isInteger(highest) || highest < 0) throw new Error(`cannot read possible CPUs from ${JSON.stringify(list)}`);
  return highest + 1;
}

/** The counters of a kpx_stats map fd, each the sum over every CPU. */
export function readStats(statsFd: number, cpus = possibleCpus()): Stats {
  const stats = {} as Stats;
  for (const [name, index] of Object.entries(STAT) as Array<[StatName, number]>) {
    const perCpu = bpf.mapLookup(statsFd, u32Key.encode({ id: index }), u64Value.size * cpus);
    let sum = 0n;
    for (let cpu = 0; perCpu && cpu < cpus; cpu++) sum += u64Value.decode(perCpu, cpu * u64Value.size).value;
    stats[name] = sum;
  }
  return stats;
}

/** The counters pinned under a bpffs folder. */
export function readPinnedStats(bpffs: string): Stats {
  const fd = bpf.objGet(join(bpffs, 'kpx_stats'));
  try {
    return readStats(fd);
  } finally {
    closeSync(fd);
  }
}
