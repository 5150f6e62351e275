/**
 * Owns timing between the source and the datapath: coalesces bursts of
 * changes into one sync, retries a failed sync with backoff while the last
 * good state stays in the kernel, and re-reads the kernel periodically to
 * repair drift.
 */
import type { Logger } from 'pino';
import { FatalDatapathError, type Datapath } from '../datapath/types.js';
import type { ModelUpdate, Rejected } from '../model/types.js';

export interface SyncerOptions {
  /**
   * Least time from the end of one sync to the start of the next. The first
   * change after a quiet period is synced at once; a burst behind it is
   * folded into one sync per interval (kube-proxy's minSyncPeriod).
   */
  minSyncIntervalMs: number;
  /** Full resync: re-read the kernel and re-apply, to repair anything changed behind our back. */
  resyncIntervalMs: number;
  retryMinMs: number;
  retryMaxMs: number;
}

export const DEFAULT_SYNCER_OPTIONS: SyncerOptions = {
  minSyncIntervalMs: 100,
  resyncIntervalMs: 60_000,
  retryMinMs: 100,
  retryMaxMs: 10_000,
};

export class Syncer {
  private scheduled: NodeJS.Immediate | NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private retryDelay: number;
  private reported = new Set<string>();
  private stopped = false;
  private lastSyncEnd = -Infinity;

  constructor(
    private readonly buildModel: () => ModelUpdate,
    private readonly datapath: Datapath,
    private readonly log: Logger,
    private readonly opts: SyncerOptions = DEFAULT_SYNCER_OPTIONS,
    /** Called after every successful sync, with when it reached the kernel (ms since epoch), how long it took and whether it was a full one. */
    private readonly onApplied: (appliedAtMs: number, seconds: number, full: boolean) => void = () => {},
    /** Called after every successful sync, saying whether it was a full one: the agent collects garbage there (src/heap.ts). */
    private readonly afterSync: (full: boolean) => void = () => {},
    /** Called once, after the syncer has stopped, when the datapath says retrying cannot help (FatalDatapathError). */
    private readonly onFatal: (err: Error) => void = () => {},
  ) {
    this.retryDelay = opts.retryMinMs;
  }

  start(): void {
    this.resyncTimer = setInterval(() => {
      this.datapath.reread();
      this.request();
    }, this.opts.resyncIntervalMs);
    this.resyncTimer.unref();
    this.request();
  }

  /** Asks for a sync; every request made before it runs is served by the same sync. */
  request(): void {
    if (this.scheduled || this.stopped) return;
    const wait = this.lastSyncEnd + this.opts.minSyncIntervalMs - performance.now();
    this.scheduled = wait > 0 ? setTimeout(() => this.run(), wait) : setImmediate(() => this.run());
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.resyncTimer);
    if (this.scheduled) {
      clearImmediate(this.scheduled as NodeJS.Immediate);
      clearTimeout(this.scheduled as NodeJS.Timeout);
    }
  }

  private run(): void {
    this.scheduled = undefined;
    const started = process.hrtime.bigint();
    try {
      const update = this.buildModel();
      this.reportRejected(update.rejected);
      const result = this.datapath.sync(update);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      this.onApplied(Date.now(), ms / 1000, result.full);
      this.retryDelay = this.opts.retryMinMs;
      const level = result.written || result.removed ? 'info' : 'debug';
      this.log[level]({ ...result, servicePorts: update.servicePortCount, ms: +ms.toFixed(3) }, 'synced');
      this.afterSync(result.full);
    } catch (err) {
      if (err instanceof FatalDatapathError) {
        this.log.fatal({ err: err.message }, 'the datapath cannot go on; stopping');
        this.stop();
        this.onFatal(err);
        return;
      }
      this.log.error({ err: (err as Error).message, retryInMs: this.retryDelay }, 'sync failed; the previous state stays in place');
      if (!this.stopped) this.scheduled = setTimeout(() => this.run(), this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, this.opts.retryMaxMs);
    } finally {
      this.lastSyncEnd = performance.now();
    }
  }

  /** One log line per bad object, when it first shows up (not on every sync). */
  private reportRejected(rejected: Rejected[]): void {
    const now = new Set<string>();
    for (const r of rejected) {
      const id = `${r.origin}|${r.kind}|${r.namespace}/${r.name}|${r.reason}`;
      now.add(id);
      if (!this.reported.has(id)) this.log.warn({ ...r }, `skipping ${r.kind} ${r.namespace}/${r.name}: ${r.reason}`);
    }
    this.reported = now;
  }
}
