import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { FatalDatapathError, type Datapath, type SyncResult } from '../../src/datapath/types.js';
import { networkProgrammingLatencies } from '../../src/metrics/programming-latency.js';
import { wholeModel } from '../../src/model/incremental.js';
import type { Model } from '../../src/model/types.js';
import { Syncer, type SyncerOptions } from '../../src/reconcile/syncer.js';

const silent = pino({ level: 'silent' });
const EMPTY: Model = { servicePorts: [], ignored: [], rejected: [], healthChecks: [], nodeAddresses: [] };
const OPTS: SyncerOptions = { minSyncIntervalMs: 100, resyncIntervalMs: 60_000, retryMinMs: 10, retryMaxMs: 40 };

class CountingDatapath implements Datapath {
  readonly mode = 'ebpf';
  syncs = 0;
  failNext = 0;
  private failedSinceLast = false;
  sync(): SyncResult {
    if (this.failNext > 0) {
      this.failNext--;
      this.failedSinceLast = true;
      throw new Error('injected');
    }
    this.syncs++;
    // Like the real datapaths: the first sync (and the first after a failure) starts over.
    const full = this.syncs === 1 || this.failedSinceLast;
    this.failedSinceLast = false;
    return { written: 1, removed: 0, full };
  }
  reread(): void {}
  close(): void {}
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a single change after a quiet period is synced on the next tick', async () => {
  const dp = new CountingDatapath();
  const syncer = new Syncer(() => wholeModel(EMPTY), dp, silent, OPTS);
  syncer.start();
  await sleep(150);
  const before = dp.syncs;
  syncer.request();
  await new Promise((r) => setImmediate(r));
  assert.equal(dp.syncs, before + 1);
  syncer.stop();
});

test('1,000 changes spread over one second are folded into about one sync per interval', async () => {
  const dp = new CountingDatapath();
  const syncer = new Syncer(() => wholeModel(EMPTY), dp, silent, OPTS);
  syncer.start();
  await sleep(150);
  const before = dp.syncs;
  for (let i = 0; i < 1000; i++) {
    syncer.request();
    if (i % 10 === 9) await sleep(10);
  }
  await sleep(150);
  const syncs = dp.syncs - before;
  syncer.stop();
  // ~1 s of requests at one sync per 100 ms interval, plus the trailing one.
  assert.ok(syncs >= 2 && syncs <= 15, `${syncs} syncs for 1000 changes`);
});

test('a failed sync is retried with backoff until it lands', async () => {
  const dp = new CountingDatapath();
  dp.failNext = 3;
  const syncer = new Syncer(() => wholeModel(EMPTY), dp, silent, { ...OPTS, minSyncIntervalMs: 0 });
  syncer.start();
  await sleep(10 + 20 + 40 + 60);
  assert.equal(dp.failNext, 0);
  assert.equal(dp.syncs, 1);
  syncer.stop();
});

test('onApplied is told when each successful sync reached the kernel', async () => {
  const dp = new CountingDatapath();
  const applied: number[] = [];
  const syncer = new Syncer(() => wholeModel(EMPTY), dp, silent, OPTS, (at) => applied.push(at));
  const before = Date.now();
  syncer.start();
  await sleep(5);
  assert.equal(applied.length, 1);
  assert.ok(applied[0]! >= before && applied[0]! <= Date.now());
  syncer.stop();
});

test('network programming latency: seconds from each trigger time to the sync, future ones dropped', () => {
  assert.deepEqual(networkProgrammingLatencies([1_000, 1_500, 2_100], 2_000), [1, 0.5]);
  assert.deepEqual(networkProgrammingLatencies([], 2_000), []);
});

test('afterSync runs after each sync that landed, saying which started over', async () => {
  const dp = new CountingDatapath();
  dp.failNext = 1;
  const after: boolean[] = [];
  const syncer = new Syncer(() => wholeModel(EMPTY), dp, silent, { ...OPTS, minSyncIntervalMs: 0 }, undefined, (full) => after.push(full));
  syncer.start();
  await sleep(30);
  assert.equal(dp.syncs, 1, 'the failed first sync was retried');
  assert.deepEqual(after, [true], 'a failed sync is not reported; the full one that landed is');
  for (let i = 0; i < 3; i++) {
    syncer.request();
    await sleep(5);
  }
  assert.equal(dp.syncs, 4);
  assert.deepEqual(after, [true, false, false, false], 'incremental syncs are reported as such');
  syncer.stop();
});

test('a failure the datapath calls fatal is not retried: the syncer stops and says so, once', async () => {
  let attempts = 0;
  const fatal: Datapath = {
    mode: 'ebpf',
    sync(): SyncResult {
      attempts++;
      throw new FatalDatapathError('cannot attach');
    },
    reread() {},
    close() {},
  };
  const reported: Error[] = [];
  const syncer = new Syncer(() => wholeModel(EMPTY), fatal, silent, { ...OPTS, minSyncIntervalMs: 0 }, undefined, undefined, (err) => reported.push(err));
  syncer.start();
  await sleep(60);
  syncer.request();
  await sleep(60);
  assert.equal(attempts, 1, 'no retry, and no sync on a later request');
  assert.deepEqual(reported.map((e) => e.message), ['cannot attach']);
  syncer.stop();
});
