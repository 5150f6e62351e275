import { test } from 'node:test';
import assert from 'node:assert/strict';
import { linearAxis, logAxis, renderChart } from '../../bench/lib/chart.js';
import { newResult, type BenchResult, type Series } from '../../bench/lib/report.js';

function resultWith(series: Series[], logX = true): BenchResult {
  const r = newResult('chart-test', 'Chart test', false, {});
  r.panels.push({ title: 'latency vs Services', xLabel: 'Services', yLabel: 'ms', logX, series });
  return r;
}

/** Open/close tags must nest; self-closing ones stand alone. */
function assertBalanced(svg: string): void {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([A-Za-z][\w:-]*)((?:[^>"]|"[^"]*")*?)(\/?)>/g)) {
    const [, closing, name, , selfClosing] = m;
    if (selfClosing) continue;
    if (closing) assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
    else stack.push(name!);
  }
  assert.deepEqual(stack, [], 'unclosed elements');
  // Nothing left that looks like a tag the pattern did not understand.
  assert.equal(svg.replace(/<(\/?)([A-Za-z][\w:-]*)((?:[^>"]|"[^"]*")*?)(\/?)>/g, '').includes('<'), false);
}

function assertNoBadNumbers(svg: string): void {
  for (const bad of ['NaN', 'Infinity', 'undefined', 'null']) assert.equal(svg.includes(bad), false, `${bad} in the SVG`);
}

/** The markers of one series, in document order. */
function markers(svg: string, seriesName: string): Array<{ cx: number; cy: number }> {
  const group = new RegExp(`<g class="series" data-series="${seriesName}">([\\s\\S]*?)</g>`).exec(svg);
  assert.ok(group, `series ${seriesName} drawn`);
  return [...group[1]!.matchAll(/<path class="point" transform="translate\(([^,]+),([^)]+)\)"/g)].map((m) => ({ cx: Number(m[1]), cy: Number(m[2]) }));
}

test('a chart is well-formed and self-contained, with one panel per result panel', () => {
  const a = resultWith([{ name: 'p50', points: [[1, 0.5], [100, 2], [10_000, 40]] }]);
  const b = resultWith([{ name: 'rate', points: [[0, 3], [5, 9]] }], false);
  b.panels.push({ title: 'second panel', xLabel: 'x', yLabel: 'y', logX: false, series: [] });
  const svg = renderChart([a, b]);
  assertBalanced(svg);
  assertNoBadNumbers(svg);
  assert.ok(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  assert.equal(svg.match(/<svg/g)?.length, 1);
  for (const external of ['<script', '<style', 'href=', '@import', 'url(']) assert.equal(svg.includes(external), false, external);
  assert.equal(svg.match(/<g class="panel">/g)?.length, 3);
  // Footer: the machine and the date.
  assert.match(svg, new RegExp(`${a.machine.cores} cores.*Linux ${a.machine.kernel.replace(/[.+]/g, '\\$&')}.*${a.startedAt.slice(0, 10)}`));
});

test('on a log axis 1,000 lies halfway between 10 and 100,000', () => {
  const axis = logAxis(10, 100_000, 0, 400);
  assert.equal(axis.scale(1_000), (axis.scale(10) + axis.scale(100_000)) / 2);
  assert.deepEqual(axis.ticks.map((t) => t.label), ['10', '100', '1,000', '10,000', '100,000']);

  const svg = renderChart([resultWith([{ name: 's', points: [[10, 1], [1_000, 2], [100_000, 3]] }])]);
  const [p10, p1000, p100000] = markers(svg, 's');
  assert.ok(Math.abs(p1000!.cx - (p10!.cx + p100000!.cx) / 2) < 0.02, `${p10!.cx} ${p1000!.cx} ${p100000!.cx}`);
  // The y axis is linear: 2 halfway between 1 and 3 too, and higher values higher up.
  assert.ok(Math.abs(p1000!.cy - (p10!.cy + p100000!.cy) / 2) < 0.02);
  assert.ok(p100000!.cy < p10!.cy);
  assert.match(svg, />100,000</);
});

test('missing and NaN points are skipped, and the line breaks there', () => {
  const fromJson = JSON.parse('[[1000, null]]') as Array<[number, number]>;
  const svg = renderChart([
    resultWith([
      { name: 'gappy', points: [[1, 1], [10, NaN], [100, 3], ...fromJson, [NaN, 5], [0, 4]] },
      { name: 'full', points: [[1, 2], [10, 2], [100, 2]] },
    ]),
  ]);
  assertBalanced(svg);
  assertNoBadNumbers(svg);
  // 0 has no place on a log axis; NaN x, NaN y and null y are dropped: two markers remain.
  assert.equal(markers(svg, 'gappy').length, 2);
  const gappyGroup = /<g class="series" data-series="gappy">([\s\S]*?)<\/g>/.exec(svg)![1]!;
  assert.equal(gappyGroup.includes('<polyline'), false, 'no line bridges the skipped point');
  assert.equal(markers(svg, 'full').length, 3);
});

test('a legend entry per series, long names shortened with the full name kept', () => {
  const long = 'a very long series name that goes on and on about what was measured and where, exactly';
  const svg = renderChart([resultWith([{ name: 'p50', points: [[1, 1]] }, { name: 'p99 <tail> & more', points: [[1, 2]] }, { name: long, points: [] }])]);
  assertBalanced(svg);
  const legend = [...svg.matchAll(/<g class="legend">[\s\S]*?<\/g>/g)].map((m) => m[0]);
  assert.equal(legend.length, 3);
  assert.match(legend[0]!, />p50</);
  assert.match(legend[1]!, /p99 &lt;tail&gt; &amp; more/);
  assert.match(legend[2]!, /…/);
  assert.ok(legend[2]!.includes(`<title>${long}</title>`));
  // Series tell apart by colour and marker together, also beyond the palette's length.
  const many = renderChart([resultWith(Array.from({ length: 20 }, (_, i) => ({ name: `s${i}`, points: [[1, i]] as Array<[number, number]> })))]);
  const styles = [...many.matchAll(/<g class="legend">[\s\S]*?<\/g>/g)].map((m) => `${/stroke="(#\w+)"/.exec(m[0])![1]} ${/ d="([^"]+)"/.exec(m[0])![1]}`);
  assert.equal(styles.length, 20);
  assert.equal(new Set(styles).size, 20);
});

test('single points, all-zero data and empty input still give a readable chart', () => {
  const single = renderChart([resultWith([{ name: 'one', points: [[10_000, 120]] }])]);
  assertBalanced(single);
  assertNoBadNumbers(single);
  assert.equal(markers(single, 'one').length, 1);
  assert.match(single, />1,000</);
  assert.match(single, />100,000</);

  const zeros = renderChart([resultWith([{ name: 'zero', points: [[1, 0], [10, 0]] }])]);
  assertBalanced(zeros);
  assertNoBadNumbers(zeros);
  assert.equal(new Set(markers(zeros, 'zero').map((m) => m.cy)).size, 1);

  const axis = linearAxis(0, 0, 200, 0, true);
  assert.deepEqual([axis.ticks[0]!.label, axis.ticks.at(-1)!.label], ['0.0', '1.0']);
  assert.deepEqual(linearAxis(0, 0.3, 100, 0, true).ticks.map((t) => t.label), ['0.0', '0.1', '0.2', '0.3']);
  assert.deepEqual(linearAxis(0, 12_345, 100, 0, true).ticks.map((t) => t.label), ['0', '5,000', '10,000', '15,000']);

  const empty = renderChart([]);
  assertBalanced(empty);
  assertNoBadNumbers(empty);
  assert.match(empty, /no benchmark results/);
  const noData = renderChart([resultWith([{ name: 'nothing', points: [[1, NaN]] }])]);
  assertBalanced(noData);
  assertNoBadNumbers(noData);
  assert.match(noData, /no data/);
});
