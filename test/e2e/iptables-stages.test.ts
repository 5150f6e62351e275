/**
 * The iptables datapath against the real iptables-restore, in a network
 * namespace made for the test. A sync applied in stages (restorePlan):
 * every stage is accepted (iptables refuses a jump to a missing chain and
 * the deletion of a chain something jumps to), and the rules in the end
 * are exactly those one transaction leaves. The periodic resync rewrites
 * every chain, except in kube-proxy's large-cluster mode. The root
 * namespace's rules are never read or written: the datapath's commands are
 * wrappers that enter the test's namespace.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { IptablesDatapath, type IptablesCommands } from '../../src/datapath/iptables.js';
import { serviceChainName } from '../../src/datapath/iptables-rules.js';
import { wholeModel } from '../../src/model/incremental.js';
import type { Frontend, Model, ServicePort } from '../../src/model/types.js';
import { findTool } from '../fixtures/tools.js';

function missingPrerequisite(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (CAP_NET_ADMIN)';
  for (const tool of ['ip', 'nsenter', 'iptables', 'iptables-save', 'iptables-restore']) if (!findTool(tool)) return `needs ${tool}`;
  return undefined;
}

/** n service ports with 3 endpoints; every third has a NodePort (so a KUBE-EXT- chain); even ones move their endpoints with `generation`. */
function services(n: number, generation = 0, from = 0): ServicePort[] {
  return Array.from({ length: n }, (_, k) => {
    const i = from + k;
    const frontends: Frontend[] = [{ kind: 'ClusterIP', address: `10.96.${i >> 8}.${i & 255}`, port: 80 }];
    if (i % 3 === 0) frontends.push({ kind: 'NodePort', address: '0.0.0.0', port: 30000 + i });
    const subnet = (i + (i % 2 === 0 ? generation : 0)) & 255;
    const backends = [1, 2, 3].map((e) => ({ address: `10.1.${subnet}.${e}`, port: 8080, state: 'ready' as const, local: false }));
    return { ref: { namespace: 'ns', name: `svc-${i}`, portName: 'http', protocol: 'TCP' }, frontends, backends };
  });
}

function model(servicePorts: ServicePort[]): Model {
  return { servicePorts, ignored: [], rejected: [], healthChecks: [], nodeAddresses: ['10.0.0.1'] };
}

interface Netns {
  commands: IptablesCommands;
  /** The namespace's nat and filter rules as iptables-save prints them, without its comment lines. */
  rules(): string;
  /** How many restores have run so far. */
  restores(): number;
}

/** A namespace of this test's own and iptables commands that run in it, all removed afterwards whatever happens. */
async function withNetns(body: (ns: Netns) => Promise<void>): Promise<void> {
  const name = `kpxst${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name]);
  let dir: string | undefined;
  try {
    dir = mkdtempSync(join(tmpdir(), 'kpx-stages-'));
    const log = join(dir, 'restores');
    writeFileSync(log, '');
    const wrapper = (tool: string, extra = '') => {
      const path = join(dir!, tool);
      writeFileSync(path, `#!/bin/sh\n${extra}exec nsenter --net=/run/netns/${name} -- ${tool} "$@"\n`);
      chmodSync(path, 0o755);
      return path;
    };
    const enter = ['nsenter', `--net=/run/netns/${name}`, '--'];
    await body({
      commands: { iptables: wrapper('iptables'), save: wrapper('iptables-save'), restore: wrapper('iptables-restore', `echo >> ${log}\n`) },
      rules: () =>
        ['nat', 'filter']
          .map((t) => execFileSync(enter[0]!, [...enter.slice(1), 'iptables-save', '-t', t], { encoding: 'utf8' }))
          .join('')
          .split('\n')
          .filter((l) => !l.startsWith('#'))
          .join('\n'),
      restores: () => readFileSync(log, 'utf8').length,
    });
  } finally {
    execFileSync('ip', ['netns', 'del', name]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

const log = pino({ level: 'silent' });

test('iptables datapath: a first sync and an update in stages are accepted and leave what one transaction leaves', { skip: missingPrerequisite() }, async () => {
  const first = model(services(40));
  const second = model([...services(30, 1), ...services(10, 0, 60)]);
  let staged = '';
  await withNetns(async (ns) => {
    const datapath = new IptablesDatapath({ log, commands: ns.commands, maxChainsPerRestore: 8 });
    datapath.sync(wholeModel(first));
    const firstRestores = ns.restores();
    assert.ok(firstRestores > 10, `first sync in ${firstRestores} restores`);
    datapath.sync(wholeModel(second));
    assert.ok(ns.restores() - firstRestores > 5, `update in ${ns.restores() - firstRestores} restores`);
    staged = ns.rules();
  });
  await withNetns(async (ns) => {
    new IptablesDatapath({ log, commands: ns.commands, maxChainsPerRestore: Infinity }).sync(wholeModel(second));
    assert.equal(ns.restores(), 1);
    assert.equal(staged, ns.rules());
  });
  assert.match(staged, /-A KUBE-SERVICES .*ns\/svc-69:http cluster IP/);
  assert.doesNotMatch(staged, /svc-39:http/, 'a Service gone from the model leaves no rule');
});

test('iptables datapath: a resync rewrites every chain; past 1,000 endpoints (kube-proxy\'s large-cluster mode) once per full-sync period', { skip: missingPrerequisite() }, async () => {
  await withNetns(async (ns) => {
    /** Flushes one of the model's service chains behind the datapath's back; says whether it has its rules again. */
    const flushBehindTheBack = (m: Model) => {
      const chain = serviceChainName(m.servicePorts[1]!.ref);
      execFileSync(ns.commands.iptables, ['-w', '-t', 'nat', '-F', chain]);
      return () => ns.rules().includes(`-A ${chain} `);
    };
    const small = model(services(40));
    const datapath = new IptablesDatapath({ log, commands: ns.commands, maxChainsPerRestore: 8 });
    datapath.sync(wholeModel(small));
    let repaired = flushBehindTheBack(small);
    datapath.sync(wholeModel(small));
    assert.equal(repaired(), false, 'a sync without resync leaves unchanged chains alone');
    datapath.reread();
    assert.equal(datapath.sync(wholeModel(small)).full, true);
    assert.equal(repaired(), true, 'the resync repaired it');

    const large = model(services(400));
    datapath.sync(wholeModel(large));
    repaired = flushBehindTheBack(large);
    datapath.reread();
    const before = ns.restores();
    assert.equal(datapath.sync(wholeModel(large)).full, false);
    assert.equal(ns.restores() - before, 1, 'one input: the top-level chains');
    assert.equal(repaired(), false, 'large-cluster mode: no full rewrite within the period');

    const due = new IptablesDatapath({ log, commands: ns.commands, maxChainsPerRestore: 8, fullSyncPeriodMs: 0 });
    due.sync(wholeModel(large));
    repaired = flushBehindTheBack(large);
    due.reread();
    assert.equal(due.sync(wholeModel(large)).full, true);
    assert.equal(repaired(), true, 'large-cluster mode: a full rewrite once the period is over');
  });
});

test('iptables datapath: a chain it cannot delete fails the sync after the switch; the next ones only retry that deletion', { skip: missingPrerequisite() }, async () => {
  await withNetns(async (ns) => {
    const first = model(services(40));
    const second = model(services(20));
    const datapath = new IptablesDatapath({ log, commands: ns.commands, maxChainsPerRestore: 8 });
    datapath.sync(wholeModel(first));
    const fullSyncRestores = ns.restores();
    // Another owner's rule jumps to a chain kpx is about to delete.
    const held = serviceChainName(first.servicePorts[30]!.ref);
    execFileSync(ns.commands.iptables, ['-w', '-t', 'nat', '-N', 'OTHER-OWNER']);
    execFileSync(ns.commands.iptables, ['-w', '-t', 'nat', '-A', 'OTHER-OWNER', '-j', held]);
    assert.throws(() => datapath.sync(wholeModel(second)), /iptables-restore --noflush failed/);
    assert.doesNotMatch(ns.rules(), /svc-39:http cluster IP/, 'the switch landed: the removed Services are gone from KUBE-SERVICES');
    const before = ns.restores();
    assert.throws(() => datapath.sync(wholeModel(second)));
    const retry = ns.restores() - before;
    assert.ok(retry <= 3 && retry < fullSyncRestores / 5, `the retry (${retry} inputs) is the switch and the deletions up to the failing one, not a full rewrite (${fullSyncRestores})`);
    execFileSync(ns.commands.iptables, ['-w', '-t', 'nat', '-F', 'OTHER-OWNER']);
    const result = datapath.sync(wholeModel(second));
    assert.equal(result.full, false);
    assert.doesNotMatch(ns.rules(), new RegExp(`:${held} `), 'deleted once nothing else jumps to it');
  });
});
