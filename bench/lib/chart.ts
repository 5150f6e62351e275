/**
 * The benchmark chart: one self-contained SVG (no fonts, scripts or styles
 * from outside) with a small multiple per panel of every result, so a reader
 * of the README sees every curve at once. Points that are missing, NaN, or
 * not positive on a log axis are skipped; a line breaks where one is skipped
 * rather than bridging the gap.
 */
import type { BenchResult, Panel } from './report.js';

/** Okabe–Ito: told apart by most colour-blind readers, and in print. */
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];

/** Two decimals are finer than any screen pixel and keep the file small. */
const px = (v: number) => +v.toFixed(2);

/** Marker outlines around (0, 0): points that coincide stay visible, and series differ without colour too. */
const MARKERS = ['M-3.5,0a3.5,3.5 0 1,0 7,0a3.5,3.5 0 1,0 -7,0z', 'M-3,-3h6v6h-6z', 'M0,-4.5l4.5,4.5l-4.5,4.5l-4.5,-4.5z', 'M0,-4.5l4,7h-8z'];

/** Series i's colour and marker: neighbours differ in both, and no two of the first 32 series look alike. */
function seriesStyle(i: number): { colour: string; shape: string } {
  return { colour: PALETTE[i % PALETTE.length]!, shape: MARKERS[(i + Math.floor(i / PALETTE.length)) % MARKERS.length]! };
}

function marker(series: number, x: number, y: number, inner = ''): string {
  const { colour, shape } = seriesStyle(series);
  return `<path class="point" transform="translate(${px(x)},${px(y)})" d="${shape}" fill="${colour}" fill-opacity="0.85" stroke="#fff" stroke-width="0.8">${inner}</path>`;
}

const COLUMNS = 2;
const PANEL_WIDTH = 520;
const PLOT = { left: 76, right: 36, top: 56, height: 220 };
/** Below the plot: tick labels and the x axis label. */
const X_AXIS_SPACE = 46;
const LEGEND_LINE = 16;
const LEGEND_MAX_CHARS = 60;
const FOOTER = 36;
const FONT = 'font-family="sans-serif"';

/** Maps a data value to a pixel coordinate, and lists the ticks to draw. */
export interface Axis {
  scale(v: number): number;
  ticks: Array<{ value: number; label: string }>;
  /** Whether a value can be drawn on this axis at all (a log axis has no place for 0). */
  accepts(v: number): boolean;
}

/** Thousands separators; as many decimals as the tick step needs (and no more than 6). */
export function formatTick(value: number, decimals = 0): string {
  const d = Math.min(6, Math.max(0, decimals));
  return value.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
}

/** A data value for a tooltip: thousands separators, up to 3 decimals. */
export function formatValue(value: number): string {
  return value.toLocaleString('en-US', { maximumFractionDigits: 3 });
}

/** Log10 axis over whole decades covering [min, max], ticks at each power of ten. */
export function logAxis(min: number, max: number, from: number, to: number): Axis {
  let lo = Math.floor(Math.log10(min));
  let hi = Math.ceil(Math.log10(max));
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const ticks = [];
  for (let e = lo; e <= hi; e++) ticks.push({ value: 10 ** e, label: formatTick(10 ** e, -e) });
  return {
    scale: (v) => from + ((Math.log10(v) - lo) / (hi - lo)) * (to - from),
    ticks,
    accepts: (v) => Number.isFinite(v) && v > 0,
  };
}

/** 1, 2 or 5 times a power of ten: about `count` steps across `span`. */
export function niceStep(span: number, count = 5): number {
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
}

/** Linear axis with nice ticks over [min, max]; `fromZero` includes 0 (the y axis always does). */
export function linearAxis(min: number, max: number, from: number, to: number, fromZero: boolean): Axis {
  let lo = fromZero ? Math.min(0, min) : min;
  let hi = fromZero ? Math.max(0, max) : max;
  if (lo === hi) {
    // All values equal (all zero, say): a unit range around them, so the axis still has ticks.
    hi = lo === 0 ? 1 : lo + Math.abs(lo);
    if (!fromZero) lo -= Math.abs(lo) || 1;
  }
  const step = niceStep(hi - lo);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const decimals = -Math.floor(Math.log10(step));
  const ticks = [];
  // Counting steps, not adding them: no drift such as 0.30000000000000004.
  for (let k = 0; k <= Math.round((hi - lo) / step); k++) {
    const value = +(lo + k * step).toPrecision(12);
    ticks.push({ value, label: formatTick(value, decimals) });
  }
  return { scale: (v) => from + ((v - lo) / (hi - lo)) * (to - from), ticks, accepts: (v) => Number.isFinite(v) };
}

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

function truncate(s: string, max: number): string {
  return s.length <= max ? s : s.slice(0, max - 1) + '…';
}

interface PanelInContext {
  panel: Panel;
  /** The result's title, shown under the panel's own. */
  source: string;
}

function panelHeight(p: PanelInContext): number {
  return PLOT.top + PLOT.height + X_AXIS_SPACE + Math.max(1, p.panel.series.length) * LEGEND_LINE + 12;
}

function drawPanel({ panel, source }: PanelInContext, x0: number, y0: number): string {
  const plotLeft = x0 + PLOT.left;
  const plotRight = x0 + PANEL_WIDTH - PLOT.right;
  const plotTop = y0 + PLOT.top;
  const plotBottom = plotTop + PLOT.height;
  const out: string[] = [];
  out.push(`<g class="panel">`);
  out.push(`<text x="${x0 + 12}" y="${y0 + 22}" font-size="14" font-weight="bold">${escapeXml(truncate(panel.title, 58))}<title>${escapeXml(panel.title)}</title></text>`);
  out.push(`<text x="${x0 + 12}" y="${y0 + 40}" font-size="11" fill="#555">${escapeXml(truncate(source, 80))}</text>`);

  // Results are read back from JSON too, where NaN has become null: test the type, not just the value.
  const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  const drawable = (p: readonly [number, number] | undefined) => p !== undefined && finite(p[0]) && finite(p[1]) && (!panel.logX || p[0] > 0);
  const all = panel.series.flatMap((s) => (s.points ?? []).filter(drawable));

  if (all.length === 0) {
    out.push(`<rect x="${plotLeft}" y="${plotTop}" width="${plotRight - plotLeft}" height="${PLOT.height}" fill="none" stroke="#bbb"/>`);
    out.push(`<text x="${(plotLeft + plotRight) / 2}" y="${plotTop + PLOT.height / 2}" font-size="13" fill="#777" text-anchor="middle">no data</text>`);
  } else {
    const xs = all.map((p) => p[0]);
    const ys = all.map((p) => p[1]);
    const xAxis = panel.logX
      ? logAxis(Math.min(...xs), Math.max(...xs), plotLeft, plotRight)
      : linearAxis(Math.min(...xs), Math.max(...xs), plotLeft, plotRight, false);
    const yAxis = linearAxis(Math.min(...ys), Math.max(...ys), plotBottom, plotTop, true);

    for (const t of yAxis.ticks) {
      const y = px(yAxis.scale(t.value));
      out.push(`<line x1="${plotLeft}" y1="${y}" x2="${plotRight}" y2="${y}" stroke="#e5e5e5"/>`);
      out.push(`<text x="${plotLeft - 6}" y="${y + 4}" font-size="11" text-anchor="end">${escapeXml(t.label)}</text>`);
    }
    for (const t of xAxis.ticks) {
      const x = px(xAxis.scale(t.value));
      out.push(`<line x1="${x}" y1="${plotBottom}" x2="${x}" y2="${plotBottom + 5}" stroke="#333"/>`);
      out.push(`<text x="${x}" y="${plotBottom + 18}" font-size="11" text-anchor="middle">${escapeXml(t.label)}</text>`);
    }
    out.push(`<line x1="${plotLeft}" y1="${plotBottom}" x2="${plotRight}" y2="${plotBottom}" stroke="#333"/>`);
    out.push(`<line x1="${plotLeft}" y1="${plotTop}" x2="${plotLeft}" y2="${plotBottom}" stroke="#333"/>`);

    panel.series.forEach((s, i) => {
      const { colour } = seriesStyle(i);
      // Sorted by x so the line reads left to right; a skipped point ends a segment.
      const points = (s.points ?? []).filter((p) => p !== undefined && finite(p[0]) && xAxis.accepts(p[0])).sort((a, b) => a[0] - b[0]);
      const segments: string[][] = [[]];
      const markers: string[] = [];
      for (const [x, y] of points) {
        if (!finite(y)) {
          segments.push([]);
          continue;
        }
        const cx = px(xAxis.scale(x));
        const cy = px(yAxis.scale(y));
        segments[segments.length - 1]!.push(`${cx},${cy}`);
        markers.push(marker(i, cx, cy, `<title>${escapeXml(`${s.name}: ${formatValue(x)} → ${formatValue(y)}`)}</title>`));
      }
      out.push(`<g class="series" data-series="${escapeXml(s.name)}">`);
      for (const seg of segments) {
        if (seg.length > 1) out.push(`<polyline points="${seg.join(' ')}" fill="none" stroke="${colour}" stroke-width="2"/>`);
      }
      out.push(...markers, `</g>`);
    });
  }
  out.push(`<text x="${(plotLeft + plotRight) / 2}" y="${plotBottom + 36}" font-size="12" text-anchor="middle">${escapeXml(panel.xLabel + (panel.logX ? ' (log scale)' : ''))}</text>`);
  const yMid = (plotTop + plotBottom) / 2;
  out.push(`<text x="${x0 + 16}" y="${yMid}" font-size="12" text-anchor="middle" transform="rotate(-90 ${x0 + 16} ${yMid})">${escapeXml(panel.yLabel)}</text>`);

  const legendTop = plotBottom + X_AXIS_SPACE + 4;
  panel.series.forEach((s, i) => {
    const { colour } = seriesStyle(i);
    const y = legendTop + i * LEGEND_LINE;
    out.push(
      `<g class="legend"><line x1="${plotLeft}" y1="${y}" x2="${plotLeft + 18}" y2="${y}" stroke="${colour}" stroke-width="2"/>` +
        marker(i, plotLeft + 9, y) +
        `<text x="${plotLeft + 26}" y="${y + 4}" font-size="11">${escapeXml(truncate(s.name, LEGEND_MAX_CHARS))}<title>${escapeXml(s.name)}</title></text></g>`,
    );
  });
  out.push(`</g>`);
  return out.join('\n');
}

function footerLine(results: readonly BenchResult[]): string {
  const machines = [...new Set(results.map((r) => `${r.machine.cores} cores, ${r.machine.cpu}, Linux ${r.machine.kernel}`))];
  const dates = results.map((r) => r.startedAt.slice(0, 10)).sort();
  const when = dates.length === 0 ? '' : dates[0] === dates[dates.length - 1] ? dates[0]! : `${dates[0]} to ${dates[dates.length - 1]}`;
  return [machines.join('; '), when].filter(Boolean).join(' — ');
}

/** The whole chart for a run: a grid of panels, COLUMNS wide, rows as tall as their tallest panel. */
export function renderChart(results: readonly BenchResult[]): string {
  const panels: PanelInContext[] = results.flatMap((r) => r.panels.map((panel) => ({ panel, source: r.title + (r.quick ? ' (quick)' : '') })));
  const width = COLUMNS * PANEL_WIDTH;
  const body: string[] = [];
  let y = 0;
  for (let row = 0; row * COLUMNS < panels.length; row++) {
    const inRow = panels.slice(row * COLUMNS, (row + 1) * COLUMNS);
    inRow.forEach((p, col) => body.push(drawPanel(p, col * PANEL_WIDTH, y)));
    y += Math.max(...inRow.map(panelHeight));
  }
  if (panels.length === 0) {
    body.push(`<text x="${width / 2}" y="60" font-size="14" fill="#777" text-anchor="middle">no benchmark results</text>`);
    y = 100;
  }
  const height = y + FOOTER;
  body.push(`<text x="12" y="${height - 14}" font-size="11" fill="#555">${escapeXml(footerLine(results))}</text>`);
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>\n` +
    `<title>kpx benchmarks</title>\n<rect width="${width}" height="${height}" fill="#fff"/>\n` +
    body.join('\n') +
    `\n</svg>\n`
  );
}
