/**
 * Removes kube-proxy's iptables rules (`kpx cleanup --kube-proxy`), as
 * kube-proxy's own CleanupLeftovers does (pkg/proxy/iptables and
 * pkg/proxy/ipvs): the rules that jump into its chains go, then the chains
 * are flushed and deleted. Each table is read with `*-save` and changed with
 * one `*-restore --noflush` payload, so a table is never left half-cleaned
 * and nothing outside kube-proxy's chains is touched.
 *
 * Only chains kube-proxy creates are removed, by name, not every `KUBE-*`
 * chain: kubelet keeps its own there (KUBE-FIREWALL in filter,
 * KUBE-KUBELET-CANARY), and other components use the prefix too (kube-router:
 * KUBE-ROUTER-*, KUBE-NWPLCY-*, KUBE-POD-FW-*).
 *
 * kpx's iptables datapath uses kube-proxy's chain names, so removing kpx's
 * rules (`removeKpxRules`) is the same operation on the one backend and
 * family kpx writes to.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants as fsc } from 'node:fs';
import { delimiter, join } from 'node:path';

export type IptablesBackend = 'legacy' | 'nft';
export type IpFamily = 'ipv4' | 'ipv6';

export type CleanupResult =
  /** Something was removed from this table; `removed` lists the restore operations, `-D CHAIN RULE...` and `-X CHAIN`. */
  | { status: 'cleaned'; backend: IptablesBackend; family: IpFamily; table: string; removed: string[] }
  /** A backend (or family) without its binaries. */
  | { status: 'skipped'; backend: IptablesBackend; family: IpFamily; reason: string }
  /** A save (no table) or a table's restore failed; the message names the command and its stderr. */
  | { status: 'failed'; backend: IptablesBackend; family: IpFamily; table?: string; reason: string };

export interface RunResult {
  /** Exit code; null when the command could not be started or was killed. */
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command with optional standard input; never rejects. */
export type Run = (cmd: string, args: readonly string[], input?: string) => Promise<RunResult>;

/** Runs commands directly, or behind a prefix such as `['nsenter', '--net=/run/netns/NAME', '--']`. */
export function commandRunner(prefix: readonly string[] = []): Run {
  return (cmd, args, input) =>
    new Promise((resolve) => {
      const [file, ...rest] = [...prefix, cmd, ...args] as [string, ...string[]];
      const child = spawn(file, rest, { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      child.on('error', (err) => resolve({ code: null, stdout, stderr: stderr + err.message }));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
      // A command that exits without reading its input closes the pipe early; its exit code tells the story.
      child.stdin.on('error', () => undefined);
      child.stdin.end(input ?? '');
    });
}

/** Chains kube-proxy creates, per table: the iptables and ipvs proxiers, current and past releases. */
const KUBE_PROXY_CHAINS: Record<string, ReadonlySet<string>> = {
  nat: new Set([
    'KUBE-SERVICES',
    'KUBE-NODEPORTS',
    'KUBE-POSTROUTING',
    'KUBE-MARK-MASQ',
    'KUBE-PROXY-CANARY',
    // ipvs proxier; its KUBE-FIREWALL (LoadBalancer source ranges, older releases) is in nat, kubelet's in filter.
    'KUBE-NODE-PORT',
    'KUBE-LOAD-BALANCER',
    'KUBE-FIREWALL',
  ]),
  filter: new Set([
    'KUBE-SERVICES',
    'KUBE-EXTERNAL-SERVICES',
    'KUBE-FORWARD',
    'KUBE-NODEPORTS',
    'KUBE-PROXY-FIREWALL',
    'KUBE-PROXY-CANARY',
    // ipvs proxier.
    'KUBE-NODE-PORT',
    'KUBE-SOURCE-RANGES-FIREWALL',
    'KUBE-IPVS-FILTER',
    'KUBE-IPVS-OUT-FILTER',
  ]),
  mangle: new Set(['KUBE-PROXY-CANARY']),
};

/** Per-Service and per-endpoint chains, all in nat (KUBE-XLB- is KUBE-SVL-'s name before 1.24). */
const KUBE_PROXY_CHAIN_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-SEP-', 'KUBE-FW-', 'KUBE-EXT-', 'KUBE-XLB-'];

/** Whether kube-proxy (or kpx's iptables datapath, which reuses its names) creates this chain in this table. */
export function isKubeProxyChain(table: string, chain: string): boolean {
  if (KUBE_PROXY_CHAINS[table]?.has(chain)) return true;
  return table === 'nat' && KUBE_PROXY_CHAIN_PREFIXES.some((prefix) => chain.startsWith(prefix));
}

interface SavedRule {
  chain: string;
  /** The rule after `-A CHAIN `, exactly as saved. */
  spec: string;
  /** The chain it jumps or goes to, if any. */
  target: string | undefined;
}

interface SavedTable {
  name: string;
  chains: string[];
  rules: SavedRule[];
}

/** The tables of `iptables-save` output, with their chains and rules. */
function parseSave(text: string): SavedTable[] {
  const tables: SavedTable[] = [];
  let current: SavedTable | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) {
      current = { name: line.slice(1).trim(), chains: [], rules: [] };
      tables.push(current);
    } else if (current && line.startsWith(':')) {
      current.chains.push(line.slice(1).split(' ')[0]!);
    } else if (current && line.startsWith('-A ')) {
      const chain = line.slice(3).split(' ')[0]!;
      const spec = line.slice(3 + chain.length + 1);
      current.rules.push({ chain, spec, target: ruleTarget(spec) });
    } else if (line.startsWith('COMMIT')) {
      current = undefined;
    }
  }
  return tables;
}

/** The argument of -j/-g (or their long forms), reading the rule as iptables does: quoted strings are one word. */
function ruleTarget(spec: string): string | undefined {
  const words = splitWords(spec);
  const at = words.findIndex((w) => w === '-j' || w === '--jump' || w === '-g' || w === '--goto');
  return at >= 0 ? words[at + 1] : undefined;
}

function splitWords(text: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '\\' && i + 1 < text.length) {
      word += text[++i];
      inWord = true;
    } else if (c === '"') {
      quoted = !quoted;
      inWord = true;
    } else if (!quoted && (c === ' ' || c === '\t')) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

export interface TablePlan {
  table: string;
  /** The `*-restore --noflush` input that removes kube-proxy's rules from this table. */
  payload: string;
  /** What the payload removes: `-D CHAIN RULE...` for each jump, `-X CHAIN` for each chain. */
  removed: string[];
}

/**
 * What to remove, per table of a save, in one restore payload each: the
 * chains are declared (which flushes them under --noflush), every rule of
 * another chain that jumps to one of them is deleted (built-in chains, and
 * any other chain, or the chain could not be deleted), then the chains are
 * deleted. Tables without kube-proxy's chains get no plan.
 */
export function planKubeProxyCleanup(saveOutput: string): TablePlan[] {
  const plans: TablePlan[] = [];
  for (const table of parseSave(saveOutput)) {
    const doomed = table.chains.filter((chain) => isKubeProxyChain(table.name, chain));
    if (doomed.length === 0) continue;
    const doomedSet = new Set(doomed);
    const jumps = table.rules
      .filter((rule) => !doomedSet.has(rule.chain) && rule.target !== undefined && doomedSet.has(rule.target))
      .map((rule) => `-D ${rule.chain} ${rule.spec}`);
    const deletions = doomed.map((chain) => `-X ${chain}`);
    const payload = [`*${table.name}`, ...doomed.map((chain) => `:${chain} - [0:0]`), ...jumps, ...deletions, 'COMMIT', ''].join('\n');
    plans.push({ table: table.name, payload, removed: [...jumps, ...deletions] });
  }
  return plans;
}

interface Commands {
  backend: IptablesBackend;
  family: IpFamily;
  save: string;
  restore: string;
}

/** Saves every table the backend has (without -t, which would make the legacy backend create the tables it names) and restores a plan per table. */
async function cleanWith(commands: Commands, run: Run): Promise<CleanupResult[]> {
  const { backend, family, save, restore } = commands;
  const saved = await run(save, []);
  if (saved.code !== 0) {
    return [{ status: 'failed', backend, family, reason: `${save} failed (exit ${saved.code}): ${saved.stderr.trim()}` }];
  }
  const results: CleanupResult[] = [];
  for (const plan of planKubeProxyCleanup(saved.stdout)) {
    const restored = await run(restore, ['-w', '--noflush'], plan.payload);
    if (restored.code === 0) {
      results.push({ status: 'cleaned', backend, family, table: plan.table, removed: plan.removed });
    } else {
      const reason = `${restore} -w --noflush (table ${plan.table}) failed (exit ${restored.code}): ${restored.stderr.trim()}`;
      results.push({ status: 'failed', backend, family, table: plan.table, reason });
    }
  }
  return results;
}

function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, command), fsc.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export interface CleanupOptions {
  /** How commands run; a prefixed runner reaches another network namespace. */
  run?: Run;
}

/**
 * Removes kube-proxy's rules from both iptables backends (legacy and nft)
 * and both families, since kube-proxy may have used either backend and
 * cleans both families itself. Backends without binaries are reported as
 * skipped, failures per table, and tables holding nothing of kube-proxy's
 * not at all.
 */
export async function removeKubeProxyRules(opts: CleanupOptions = {}): Promise<CleanupResult[]> {
  const run = opts.run ?? commandRunner();
  const results: CleanupResult[] = [];
  for (const backend of ['legacy', 'nft'] as const) {
    for (const family of ['ipv4', 'ipv6'] as const) {
      const base = `${family === 'ipv4' ? 'iptables' : 'ip6tables'}-${backend}`;
      const commands = { backend, family, save: `${base}-save`, restore: `${base}-restore` };
      const absent = [commands.save, commands.restore].filter((c) => !onPath(c));
      if (absent.length > 0) {
        results.push({ status: 'skipped', backend, family, reason: `${absent.join(' and ')} not found on PATH` });
        continue;
      }
      results.push(...(await cleanWith(commands, run)));
    }
  }
  return results;
}

export interface KpxCleanupOptions extends CleanupOptions {
  /** The save and restore commands kpx's iptables datapath uses (default: the system's `iptables-save`/`iptables-restore`). */
  commands?: { save: string; restore: string };
}

/**
 * Removes what kpx's iptables datapath installed: kube-proxy's chain names,
 * IPv4, through the same commands the datapath uses. On a node where
 * kube-proxy itself still runs, its rules look the same and go too. Without
 * the save command there is nothing kpx could have installed: no results.
 * Throws when the command is there but cannot tell its backend.
 */
export async function removeKpxRules(opts: KpxCleanupOptions = {}): Promise<CleanupResult[]> {
  const run = opts.run ?? commandRunner();
  const { save, restore } = opts.commands ?? { save: 'iptables-save', restore: 'iptables-restore' };
  if (!onPath(save)) return [];
  // `iptables-save v1.8.9 (nf_tables)` or `(legacy)`: the backend the alternative points to.
  const version = await run(save, ['--version']);
  if (version.code !== 0) throw new Error(`${save} --version failed (exit ${version.code}): ${version.stderr.trim()}`);
  const backend = version.stdout.includes('nf_tables') ? 'nft' : 'legacy';
  return cleanWith({ backend, family: 'ipv4', save, restore }, run);
}
