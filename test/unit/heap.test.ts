import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { canStartIncrementalCollection } from '../../src/heap.js';
import { agentNodeFlags } from '../../src/lab/agent.js';

const HEAP = fileURLToPath(new URL('../../src/heap.js', import.meta.url));

/** Runs script in a Node with the given flags; its last line of output, parsed. */
function run(flags: string[], script: string): unknown {
  const out = execFileSync(process.execPath, [...flags, '--input-type=module', '-e', script], { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop()!);
}

const PROBE = `
import { getHeapSpaceStatistics } from 'node:v8';
import { collectAfterSync } from ${JSON.stringify(HEAP)};
const youngUsed = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_used_size;
const keep = [];
// Half the young generation and more, in garbage: one small array at a time, as a sync allocates.
const fill = () => { const s = getHeapSpaceStatistics().find((x) => x.space_name === 'new_space'); let n = 0; while (youngUsed() < 0.7 * (s.space_used_size + s.space_available_size) && n++ < 1e6) keep[n % 8] = new Array(64).fill(n); };
globalThis.gc?.({ type: 'minor' });
const whenEmpty = collectAfterSync(false);
fill();
const beforeFull = youngUsed();
const whenFull = collectAfterSync(false);
const after = youngUsed();
console.log(JSON.stringify({ whenEmpty, whenFull, beforeFull, after, full: collectAfterSync(true) }));
`;

test("with the agent's flags: a young collection once the young generation is half full, and only then", () => {
  const r = run(agentNodeFlags(), PROBE) as { whenEmpty: boolean; whenFull: boolean; beforeFull: number; after: number; full: boolean };
  assert.equal(r.whenEmpty, false, 'a nearly empty young generation is left alone');
  assert.equal(r.whenFull, true);
  assert.ok(r.after < r.beforeFull / 2, `young generation ${r.beforeFull} -> ${r.after} bytes`);
  assert.equal(r.full, true, 'a full sync is always followed by a full collection');
});

test('without gc() exposed it does nothing', () => {
  const r = run([], PROBE) as { whenEmpty: boolean; whenFull: boolean; full: boolean };
  assert.deepEqual([r.whenEmpty, r.whenFull, r.full], [false, false, false]);
});

const OLD_GARBAGE_PROBE = `
import { getHeapSpaceStatistics } from 'node:v8';
import { setTimeout as sleep } from 'node:timers/promises';
import { collectAfterSync } from ${JSON.stringify(HEAP)};
const oldUsed = () => getHeapSpaceStatistics().find((s) => s.space_name === 'old_space').space_used_size;
collectAfterSync(true);
// Some 16 MB that survive two scavenges (and so reach the old generation), then die.
let doomed = Array.from({ length: 100_000 }, (_, i) => ({ i, tags: [String(i), String(-i)] }));
gc({ type: 'minor' });
gc({ type: 'minor' });
doomed = undefined;
const before = oldUsed();
const started = collectAfterSync(false);
// The collection goes on between turns of the event loop; left to itself, V8 would start one 8 s from now (its memory reducer).
const until = Date.now() + 5_000;
while (oldUsed() > before / 2 && Date.now() < until) await sleep(10);
console.log(JSON.stringify({ started, before, after: oldUsed() }));
`;

test("with the agent's flags: old garbage past the budget starts a collection that ends without gc()", {
  skip: !canStartIncrementalCollection && "this node binary does not export V8's Isolate::MemoryPressureNotification",
}, () => {
  const r = run(agentNodeFlags(), OLD_GARBAGE_PROBE) as { started: boolean; before: number; after: number };
  assert.equal(r.started, true);
  assert.ok(r.after < r.before / 2, `old generation ${r.before} -> ${r.after} bytes`);
});
