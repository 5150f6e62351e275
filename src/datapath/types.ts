import type { ModelUpdate } from '../model/types.js';

export interface SyncResult {
  /** Map entries (ebpf) or rules (iptables) written and removed by this sync. */
  written: number;
  removed: number;
  /** It started over with the whole model (first sync, or the first after a failed one): the most garbage a sync leaves. */
  full: boolean;
}

/**
 * A failure no retry can mend (e.g. the kernel refuses to attach a program
 * to an interface): the agent stops, so that it shows as failing and a
 * supervisor restarts it, as it would if it had failed to start.
 */
export class FatalDatapathError extends Error {}

/** What the reconciler drives: one per mode, the only code that touches the kernel. */
export interface Datapath {
  readonly mode: 'ebpf' | 'iptables';
  /**
   * Makes the kernel hold exactly what the model says: from the update's
   * delta when it follows what this datapath last applied, else from the
   * whole model. Throws and keeps the last good state on failure; a
   * FatalDatapathError says retrying will not help.
   */
  sync(update: ModelUpdate): SyncResult;
  /** The periodic resync: the next sync repairs what changed behind the agent's back (each datapath says how far). */
  reread(): void;
  /** Releases the agent's handles; the dataplane stays in the kernel. */
  close(): void;
}
