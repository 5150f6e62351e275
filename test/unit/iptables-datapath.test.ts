/**
 * IptablesDatapath's transactions, with stand-in commands that record what
 * they are given (no iptables is run): the first sync rewrites every chain,
 * later ones only what changed, and a failed restore makes the next sync
 * start over instead of trusting what it believed was applied.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { IptablesDatapath } from '../../src/datapath/iptables.js';
import { serviceChainName } from '../../src/datapath/iptables-rules.js';
import { wholeModel } from '../../src/model/incremental.js';
import type { Model, ServicePort } from '../../src/model/types.js';

function servicePort(name: string, clusterIP: string, backend: string): ServicePort {
  return {
    ref: { namespace: 'default', name, portName: 'p', protocol: 'TCP' },
    frontends: [{ kind: 'ClusterIP', address: clusterIP, port: 80 }],
    backends: [{ address: backend, port: 80, state: 'ready', local: false }],
  };
}

const model = (servicePorts: ServicePort[]): Model => ({ servicePorts, ignored: [], rejected: [], healthChecks: [], nodeAddresses: [] });

/** Stand-in iptables commands in a temp folder; restore appends its stdin to a log, or fails when told to. */
function fakeCommands() {
  const dir = mkdtempSync(join(tmpdir(), 'kpx-ipt-'));
  const log = join(dir, 'restore.log');
  const failFlag = join(dir, 'fail');
  const script = (name: string, body: string) => {
    const path = join(dir, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`);
    chmodSync(path, 0o755);
    return path;
  };
  const commands = {
    iptables: script('iptables', 'exit 0'),
    save: script('iptables-save', 'echo "*nat"; echo ":KUBE-SVC-STALE0000000000 - [0:0]"; echo COMMIT'),
    // A failing restore still reads its input, as the real one does: exiting first would break the writer's pipe (EPIPE).
    restore: script('iptables-restore', `[ -e ${failFlag} ] && { cat > /dev/null; echo "iptables-restore: line 3 failed" >&2; exit 1; }\ncat >> ${log}; echo "#END" >> ${log}`),
  };
  const payloads = () => readFileSync(log, 'utf8').split('#END\n').filter(Boolean);
  return { commands, payloads, failNext: (on: boolean) => (on ? writeFileSync(failFlag, '') : rmSync(failFlag, { force: true })), dispose: () => rmSync(dir, { recursive: true }) };
}

const declared = (payload: string) => payload.split('\n').filter((l) => l.startsWith(':')).map((l) => l.slice(1).split(' ')[0]);

test('iptables datapath: full first sync, then only the changed chains; a failed restore is thrown and the next sync starts over', () => {
  const fake = fakeCommands();
  try {
    const dp = new IptablesDatapath({ log: pino({ level: 'silent' }), commands: fake.commands });
    const web = servicePort('web', '10.96.0.80', '10.244.0.11');
    const db = servicePort('db', '10.96.0.81', '10.244.0.12');
    const webChain = serviceChainName(web.ref);
    const dbChain = serviceChainName(db.ref);

    dp.sync(wholeModel(model([web, db])));
    const [first] = fake.payloads();
    assert.ok(declared(first!).includes(webChain) && declared(first!).includes(dbChain), 'first sync declares every chain');
    assert.match(first!, /^-X KUBE-SVC-STALE0000000000$/m, 'a stale chain found in iptables-save is removed');

    const movedDb = servicePort('db', '10.96.0.81', '10.244.0.13');
    dp.sync(wholeModel(model([web, movedDb])));
    const second = fake.payloads()[1]!;
    assert.ok(declared(second).includes(dbChain), 'the changed service is rewritten');
    assert.ok(!declared(second).includes(webChain), 'the unchanged service is left alone');
    assert.ok(declared(second).includes('KUBE-SERVICES'), 'top-level chains are always rewritten');

    fake.failNext(true);
    assert.throws(() => dp.sync(wholeModel(model([web]))), /iptables-restore --noflush failed: iptables-restore: line 3 failed/);
    fake.failNext(false);
    dp.sync(wholeModel(model([web])));
    const afterFailure = fake.payloads()[2]!;
    assert.ok(declared(afterFailure).includes(webChain), 'after a failure every chain is rewritten again');
  } finally {
    fake.dispose();
  }
});
