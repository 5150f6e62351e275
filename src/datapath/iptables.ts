/**
 * The iptables datapath, for kernels without what the eBPF one needs: the
 * model rendered in kube-proxy's own chain structure and applied with
 * `iptables-restore --noflush`, rewriting only the chains that changed since
 * the last good sync: one input, or ordered stages when many
 * per-service chains change (restorePlan).
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Model, ModelUpdate } from '../model/types.js';
import { BUILTIN_JUMPS, isLargeCluster, renderRules, restorePlan, type RenderedRules, type RestoreStep } from './iptables-rules.js';
import { conntrackDeleteArgs, hasUdpServicePorts, parseConntrackList, staleUdpFlows } from './udp-flows.js';
import type { Datapath, SyncResult } from './types.js';

const TABLES = ['filter', 'nat'] as const;

/** The commands of one iptables backend; `iptables` is whichever the system selected (nft or legacy). */
export interface IptablesCommands {
  iptables: string;
  save: string;
  restore: string;
}

export const DEFAULT_IPTABLES: IptablesCommands = { iptables: 'iptables', save: 'iptables-save', restore: 'iptables-restore' };

export interface IptablesOptions {
  log: Logger;
  commands?: IptablesCommands;
  /** Per-service chains one restore may write or delete (restorePlan); by default chainsPerRestore. */
  maxChainsPerRestore?: number;
  /** In large-cluster mode, a resync rewrites every chain only if the last full rewrite is this old; kube-proxy's FullSyncPeriod, 1 h. */
  fullSyncPeriodMs?: number;
}

const FULL_SYNC_PERIOD_MS = 3_600_000;
/** conntrack-tools' command, which clears the UDP flows a sync leaves pointing the wrong way (udp-flows.ts). */
const CONNTRACK = 'conntrack';

/**
 * Per-service chains per restore. A restore costs about a·(chains in the
 * table), the kernel's check of the table at commit, plus b·(chains in the
 * input)², iptables-nft's sorted list of the names the input uses; the sum
 * over a full sync is least near √(a/b · chains). √chains measured well
 * here: a first sync of 10,000 Services × 10 endpoints (113,000 chains, 336
 * per input) took 24 s, where one input did not finish in 180 s.
 */
function chainsPerRestore(next: RenderedRules): number {
  return Math.max(100, Math.round(Math.sqrt(next.nat.size + next.filter.size)));
}

export class IptablesDatapath implements Datapath {
  readonly mode = 'iptables';
  /** What the last good sync applied; undefined after a start or a failure: the next sync rewrites every chain. */
  private applied: RenderedRules | undefined;
  /** reread() was called: the next sync rewrites every chain (in large-cluster mode, once per fullSyncPeriodMs). */
  private resyncRequested = false;
  private lastFullSync = -Infinity;
  private readonly commands: IptablesCommands;
  private conntrackMissing = false;

  constructor(private readonly opts: IptablesOptions) {
    this.commands = opts.commands ?? DEFAULT_IPTABLES;
  }

  sync(update: ModelUpdate): SyncResult {
    // kube-proxy's chains are rendered from the whole model; only changed chains are written.
    const model = update.full();
    const next = renderRules(model);
    const now = performance.now();
    const fullSyncDue = !isLargeCluster(model) || now - this.lastFullSync >= (this.opts.fullSyncPeriodMs ?? FULL_SYNC_PERIOD_MS);
    const previous = this.resyncRequested && fullSyncDue ? undefined : this.applied;
    this.resyncRequested = false;
    this.applied = undefined;
    if (!previous) {
      this.ensureJumps();
      // kube-proxy's iptables mode serves 127.0.0.1 NodePorts the same way: DNAT of a loopback destination needs it.
      if (model.nodeAddresses.some((a) => a.startsWith('127.'))) writeFileSync('/proc/sys/net/ipv4/conf/all/route_localnet', '1');
    }
    const existing = { filter: previous ? [] : this.existingChains('filter'), nat: previous ? [] : this.existingChains('nat') };
    const plan = restorePlan(previous, next, existing, this.opts.maxChainsPerRestore ?? chainsPerRestore(next));
    for (const [i, step] of plan.entries()) {
      const restored = spawnSync(this.commands.restore, ['-w', '--noflush'], { input: step.input, encoding: 'utf8' });
      if (restored.error || restored.status !== 0) {
        // Past the switch, the tables hold `next` but for chains left to delete: the next sync deletes them, and only them.
        if (step.deletes) this.applied = withLeftovers(next, plan.slice(i));
        throw new Error(`${this.commands.restore} --noflush failed: ${restored.error?.message ?? restored.stderr.trim()}`);
      }
      this.opts.log.trace({ payload: step.input }, 'iptables-restore');
    }
    this.applied = next;
    if (!previous) this.lastFullSync = now;
    if (hasUdpServicePorts(model)) this.clearStaleUdpFlows(model);
    return { ...countChanges(previous, next), full: !previous };
  }

  /**
   * After every sync that landed, the first included, as kube-proxy does:
   * without it a UDP client that keeps sending keeps reaching an endpoint
   * its Service dropped. A failure costs only those flows (they end when
   * idle), so it is logged.
   */
  private clearStaleUdpFlows(model: Model): void {
    if (this.conntrackMissing) return;
    const listed = spawnSync(CONNTRACK, ['-L', '-p', 'udp'], { encoding: 'utf8', maxBuffer: 2 ** 28 });
    if (listed.error && (listed.error as NodeJS.ErrnoException).code === 'ENOENT') {
      this.conntrackMissing = true;
      this.opts.log.warn({ command: CONNTRACK }, 'conntrack not found: UDP flows to endpoints a Service dropped go on until they idle out (install conntrack-tools)');
      return;
    }
    if (listed.status !== 0) {
      this.opts.log.warn({ err: listed.error?.message ?? listed.stderr.trim() }, 'could not list UDP flows; stale ones go on until they idle out');
      return;
    }
    for (const filter of staleUdpFlows(model, parseConntrackList(listed.stdout))) {
      const args = conntrackDeleteArgs(filter);
      const run = spawnSync(CONNTRACK, args, { encoding: 'utf8' });
      // Exit 1 with "0 flow entries": the flow ended since the listing.
      if (run.status === 0 || / 0 flow entries/.test(run.stderr)) {
        this.opts.log.debug({ args, result: run.stderr.trim() }, 'stale UDP flows cleared');
        continue;
      }
      this.opts.log.warn({ args, err: run.error?.message ?? run.stderr.trim() }, 'could not clear stale UDP flows');
    }
  }

  /**
   * The periodic resync: the next sync rewrites every chain (and ensures
   * the jumps from the built-in chains), whatever it believes applied. In
   * kube-proxy's large-cluster mode (over 1,000 endpoints) only once per
   * fullSyncPeriodMs, as kube-proxy's FullSyncPeriod: at 10,000 Services ×
   * 10 endpoints a full rewrite is 113,000 chains (24 s here). Every sync
   * rewrites the top-level chains.
   */
  reread(): void {
    this.resyncRequested = true;
  }

  close(): void {
    // Nothing held: the rules stay in the kernel by design.
  }

  /** Jumps from built-in chains cannot go through a --noflush restore without flushing those chains: ensured one by one, as kube-proxy does. */
  private ensureJumps(): void {
    for (const jump of BUILTIN_JUMPS) {
      const exists = spawnSync(this.commands.iptables, ['-w', '-t', jump.table, '-C', jump.chain, ...jump.args], { encoding: 'utf8' });
      if (exists.status === 0) continue;
      // The target chain must exist before a rule can jump to it.
      spawnSync(this.commands.iptables, ['-w', '-t', jump.table, '-N', targetOf(jump.args)], { encoding: 'utf8' });
      const inserted = spawnSync(this.commands.iptables, ['-w', '-t', jump.table, '-I', jump.chain, ...jump.args], { encoding: 'utf8' });
      if (inserted.status !== 0) {
        throw new Error(`${this.commands.iptables} -t ${jump.table} -I ${jump.chain} ${jump.args.join(' ')}: ${inserted.stderr.trim()}`);
      }
    }
  }

  private existingChains(table: string): string[] {
    // Tens of MB at 10,000 Services: past spawnSync's default 1 MB of output (and within V8's longest string).
    const saved = spawnSync(this.commands.save, ['-t', table], { encoding: 'utf8', maxBuffer: 2 ** 28 });
    if (saved.status !== 0) throw new Error(`${this.commands.save} -t ${table}: ${saved.stderr.trim()}`);
    return saved.stdout
      .split('\n')
      .filter((line) => line.startsWith(':'))
      .map((line) => line.slice(1).split(' ')[0]!);
  }
}

function targetOf(args: readonly string[]): string {
  const at = args.indexOf('-j');
  if (at < 0 || at + 1 >= args.length) throw new Error(`jump rule without -j: ${args.join(' ')}`);
  return args[at + 1]!;
}

/** `next`, plus the chains the remaining steps were to delete, as if still applied: the next sync's plan deletes them. */
function withLeftovers(next: RenderedRules, remaining: readonly RestoreStep[]): RenderedRules {
  const nat = new Map(next.nat);
  const filter = new Map(next.filter);
  for (const step of remaining) {
    for (const chain of step.deletes?.nat ?? []) nat.set(chain, []);
    for (const chain of step.deletes?.filter ?? []) filter.set(chain, []);
  }
  return { nat, filter };
}

/** Rules added and removed, by rule text, across both tables; a chain whose rules are the same array as before costs nothing. */
function countChanges(previous: RenderedRules | undefined, next: RenderedRules): Omit<SyncResult, 'full'> {
  let written = 0;
  let removed = 0;
  for (const table of TABLES) {
    const before = previous?.[table] ?? new Map<string, string[]>();
    const after = next[table];
    for (const [chain, rules] of after) {
      const old = before.get(chain);
      if (old === rules) continue;
      const oldSet = new Set(old);
      const newSet = new Set(rules);
      for (const rule of newSet) if (!oldSet.has(rule)) written++;
      for (const rule of oldSet) if (!newSet.has(rule)) removed++;
    }
    for (const [chain, rules] of before) if (!after.has(chain)) removed += new Set(rules).size;
  }
  return { written, removed };
}
