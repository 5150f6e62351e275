/**
 * What every benchmark records and how it is shown: the machine, the sizes,
 * the runs and their spread, a table on stdout and a JSON file under
 * bench/results/ that the chart is drawn from. Figures, never assertions:
 * a missed target is reported as missed.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** bench/results in the source tree, also when running from dist/. */
export const RESULTS_DIR = fileURLToPath(new URL('../results/', import.meta.url.replace('/dist/bench/', '/bench/')));

export interface Machine {
  cores: number;
  cpu: string;
  kernel: string;
  node: string;
  memoryMB: number;
}

export function machine(): Machine {
  return {
    cores: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    kernel: release(),
    node: process.version,
    memoryMB: Math.round(totalmem() / 2 ** 20),
  };
}

/** Order statistics of a sample; `runs` says how many values they come from. */
export interface Spread {
  runs: number;
  median: number;
  p99: number;
  min: number;
  max: number;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function spread(samples: readonly number[], digits = 3): Spread {
  const sorted = [...samples].sort((a, b) => a - b);
  const round = (x: number) => +x.toFixed(digits);
  return {
    runs: sorted.length,
    median: round(percentile(sorted, 50)),
    p99: round(percentile(sorted, 99)),
    min: round(sorted[0] ?? NaN),
    max: round(sorted[sorted.length - 1] ?? NaN),
  };
}

/** A row of a result table: plain scalars, so the table and the JSON say the same thing. */
export type Row = Record<string, string | number | boolean | null>;

export interface Target {
  /** What is measured, e.g. "ebpf connect rate / direct, 10,000 Services". */
  what: string;
  /** The target as the issue states it, e.g. ">= 0.98". */
  target: string;
  measured: number | string;
  met: boolean;
}

/** One line of a chart panel: y against x (x is usually the number of Services). */
export interface Series {
  name: string;
  points: Array<[number, number]>;
}

export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Logarithmic x axis (Service counts span 1 to 100,000). */
  logX: boolean;
  series: Series[];
}

export interface BenchResult {
  benchmark: string;
  title: string;
  startedAt: string;
  quick: boolean;
  machine: Machine;
  /** The sizes this run covered (Services installed), and anything else that shaped it. */
  parameters: Record<string, unknown>;
  rows: Row[];
  targets: Target[];
  panels: Panel[];
  notes: string[];
}

export function newResult(benchmark: string, title: string, quick: boolean, parameters: Record<string, unknown>): BenchResult {
  return { benchmark, title, startedAt: new Date().toISOString(), quick, machine: machine(), parameters, rows: [], targets: [], panels: [], notes: [] };
}

export function resultPath(benchmark: string, quick: boolean): string {
  return `${RESULTS_DIR}${benchmark}${quick ? '.quick' : ''}.json`;
}

export function writeResult(result: BenchResult): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const path = resultPath(result.benchmark, result.quick);
  writeFileSync(path, JSON.stringify(result, null, 2) + '\n');
  return path;
}

/** The rows as an aligned text table (also used for the README). */
export function formatTable(rows: readonly Row[]): string {
  if (rows.length === 0) return '(no rows)\n';
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v: Row[string] | undefined) => (v === undefined || v === null ? '' : typeof v === 'number' ? formatNumber(v) : String(v));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (cells: string[]) => cells.map((s, i) => s.padStart(widths[i]!)).join('  ') + '\n';
  return line(columns) + rows.map((r) => line(columns.map((c) => cell(r[c])))).join('');
}

export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  return Math.abs(v) >= 100 ? Math.round(v).toLocaleString('en-US') : v.toPrecision(3);
}

export function printResult(result: BenchResult): void {
  let out = `\n== ${result.title}${result.quick ? ' (quick)' : ''}\n${formatTable(result.rows)}`;
  for (const t of result.targets) out += `  target ${t.what}: ${t.target}, measured ${typeof t.measured === 'number' ? formatNumber(t.measured) : t.measured} — ${t.met ? 'met' : 'MISSED'}\n`;
  for (const n of result.notes) out += `  note: ${n}\n`;
  process.stdout.write(out);
}

/** `--quick` anywhere on the command line. */
export function quickFlag(argv: readonly string[] = process.argv): boolean {
  return argv.includes('--quick');
}

/** A benchmark: runs at full or reduced (--quick) sizes and returns its result. */
export type Scenario = (quick: boolean) => Promise<BenchResult>;

/** Runs the scenario when its module is the program itself (`node dist/bench/x.js [--quick]`), not when bench/run imports it. */
export async function runIfMain(moduleUrl: string, scenario: Scenario): Promise<void> {
  if (process.argv[1] === undefined || moduleUrl !== pathToFileURL(process.argv[1]).href) return;
  const result = await scenario(quickFlag());
  printResult(result);
  process.stdout.write(`  written: ${writeResult(result)}\n`);
}
