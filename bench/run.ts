/**
 * Runs every benchmark, one after the other, and writes what the README
 * shows: each result's JSON, the chart and a summary of every table.
 *
 *   node dist/bench/run.js [--quick] [--only connect-rate,sync-scale]
 *
 * A scenario whose module is not built is reported and skipped; one that
 * throws is reported, the others still run, and the exit code says so.
 */
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderChart } from './lib/chart.js';
import { formatNumber, formatTable, printResult, quickFlag, RESULTS_DIR, resultPath, writeResult, type BenchResult, type Scenario } from './lib/report.js';

/** In the order they run: cheap and independent first, the agent last. */
export const SCENARIOS = ['connect-rate', 'socket-program-cost', 'sync-scale', 'packet-cost', 'forwarding-rate', 'agent-footprint'];

interface Failure {
  benchmark: string;
  error: string;
}

function onlyFlag(argv: readonly string[]): string[] | undefined {
  const i = argv.findIndex((a) => a === '--only' || a.startsWith('--only='));
  if (i < 0) return undefined;
  const value = argv[i]!.startsWith('--only=') ? argv[i]!.slice('--only='.length) : argv[i + 1];
  if (!value) throw new Error('--only needs a comma-separated list of benchmarks');
  const names = value.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = names.filter((n) => !SCENARIOS.includes(n));
  if (unknown.length > 0) throw new Error(`--only: unknown benchmark ${unknown.join(', ')} (known: ${SCENARIOS.join(', ')})`);
  return names;
}

async function loadScenario(name: string): Promise<Scenario | undefined> {
  const url = new URL(`./${name}.js`, import.meta.url);
  // Checked first, so a missing module is "not built" while a module that fails to load is an error.
  if (!existsSync(fileURLToPath(url))) return undefined;
  const mod = (await import(url.href)) as { scenario?: unknown };
  if (typeof mod.scenario !== 'function') throw new Error(`${name}.js exports no scenario`);
  return mod.scenario as Scenario;
}

/** A result saved by an earlier run, for the benchmarks `--only` left out. */
function savedResult(name: string, quick: boolean): BenchResult | undefined {
  const path = resultPath(name, quick);
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as BenchResult) : undefined;
}

function summary(results: readonly BenchResult[], failures: readonly Failure[], notBuilt: readonly string[], earlier: ReadonlySet<string>, quick: boolean): string {
  const chart = quick ? 'chart.quick.svg' : 'chart.svg';
  const first = results[0];
  let md = `## Performance\n\n`;
  if (first) md += `Measured on ${first.machine.cores} cores (${first.machine.cpu}), Linux ${first.machine.kernel}, Node ${first.machine.node}, ${formatNumber(first.machine.memoryMB)} MB of memory${quick ? ', reduced sizes (--quick)' : ''}.\n\n`;
  md += `![kpx benchmarks](bench/results/${chart})\n\n`;
  md += `Reproduce as root with \`npm run bench\` (full sizes, a few minutes) or \`npm run bench -- --quick\` (reduced sizes); one benchmark alone: \`npm run bench -- --only agent-footprint\`. Results land in \`bench/results/\` as JSON, the chart and this summary.\n`;
  for (const r of results) {
    md += `\n### ${r.title}${r.quick ? ' (quick)' : ''}\n\n`;
    if (earlier.has(r.benchmark)) md += `From an earlier run (${r.startedAt}).\n\n`;
    md += '```text\n' + formatTable(r.rows) + '```\n';
    if (r.targets.length > 0) md += '\n';
    for (const t of r.targets) md += `- ${t.what}: target ${t.target}, measured ${typeof t.measured === 'number' ? formatNumber(t.measured) : t.measured} — **${t.met ? 'met' : 'missed'}**\n`;
    for (const n of r.notes) md += `- note: ${n}\n`;
  }
  if (failures.length > 0) md += `\n### Failed\n\n` + failures.map((f) => `- ${f.benchmark}: ${f.error.split('\n')[0]}\n`).join('');
  if (notBuilt.length > 0) md += `\nNot built: ${notBuilt.join(', ')}.\n`;
  return md;
}

async function main(): Promise<void> {
  const quick = quickFlag();
  let selected: string[];
  try {
    selected = onlyFlag(process.argv) ?? SCENARIOS;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exitCode = 2;
    return;
  }
  const started = performance.now();
  /** This run's results by scenario module name. */
  const results = new Map<string, BenchResult>();
  const failures: Failure[] = [];
  const notBuilt: string[] = [];

  for (const name of selected) {
    const t0 = performance.now();
    try {
      const scenario = await loadScenario(name);
      if (!scenario) {
        process.stdout.write(`\n== ${name}: not built, skipped\n`);
        notBuilt.push(name);
        continue;
      }
      const result = await scenario(quick);
      printResult(result);
      process.stdout.write(`  written: ${writeResult(result)} (${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
      results.set(name, result);
    } catch (err) {
      const error = err instanceof Error ? (err.stack ?? err.message) : String(err);
      process.stdout.write(`\n== ${name}: FAILED after ${((performance.now() - t0) / 1000).toFixed(1)} s\n${error}\n`);
      failures.push({ benchmark: name, error });
    }
  }

  // With --only, the chart and summary still cover every benchmark: the others come from their saved JSON.
  const earlier = new Set<string>();
  const charted: BenchResult[] = [];
  for (const name of SCENARIOS) {
    const saved = selected.includes(name) ? undefined : savedResult(name, quick);
    if (saved) earlier.add(saved.benchmark);
    const r = results.get(name) ?? saved;
    if (r) charted.push(r);
  }

  mkdirSync(RESULTS_DIR, { recursive: true });
  const suffix = quick ? '.quick' : '';
  const chartPath = `${RESULTS_DIR}chart${suffix}.svg`;
  const summaryPath = `${RESULTS_DIR}summary${suffix}.md`;
  writeFileSync(chartPath, renderChart(charted));
  writeFileSync(summaryPath, summary(charted, failures, notBuilt, earlier, quick));

  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(
    `\nchart: ${chartPath}\nsummary: ${summaryPath}` +
      (earlier.size > 0 ? ` (with earlier results of ${[...earlier].join(', ')})` : '') +
      `\n${results.size} of ${selected.length} benchmarks ran` +
      (notBuilt.length > 0 ? `, not built: ${notBuilt.join(', ')}` : '') +
      (failures.length > 0 ? `, FAILED: ${failures.map((f) => f.benchmark).join(', ')}` : '') +
      `; total wall time ${seconds.toFixed(1)} s\n`,
  );
  if (failures.length > 0) process.exitCode = 1;
}

await main();
