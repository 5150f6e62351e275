/**
 * `kpx cleanup --kube-proxy` and the iptables part of `kpx cleanup`: a
 * kube-proxy-like rule set, next to rules and chains of other owners
 * (Docker-like, kubelet's, a user's), is installed in a network namespace
 * made for the test, on the legacy and the nft backend and both families;
 * the cleanup runs there, through an nsenter prefix; kube-proxy's chains and
 * every jump to them are gone, and everything else is byte for byte what it
 * was. The root namespace's rules are never read or written. Also, without
 * a kernel: the restore payload a save turns into, and how failures and
 * missing binaries are reported.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  commandRunner, planKubeProxyCleanup, removeKpxRules, removeKubeProxyRules, type CleanupResult, type IptablesBackend, type IpFamily, type Run,
} from '../../src/datapath/kube-proxy-cleanup.js';

const SVC = 'KUBE-SVC-WEBWEBWEBWEBWEB2';
const SEP_A = 'KUBE-SEP-AAAAAAAAAAAAAAAA';
const SEP_B = 'KUBE-SEP-BBBBBBBBBBBBBBBB';
const EXT = 'KUBE-EXT-WEBWEBWEBWEBWEB2';

/** kube-proxy's chains the fixtures hold, per table: what must be gone afterwards. */
const KUBE_PROXY_CHAINS: Record<string, string[]> = {
  nat: ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ', 'KUBE-PROXY-CANARY', SVC, SEP_A, SEP_B, EXT],
  filter: ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL', 'KUBE-PROXY-CANARY'],
  mangle: ['KUBE-PROXY-CANARY'],
};

/** A node that ran kube-proxy in iptables mode, with Docker, kubelet and a user's rules around it. */
const IPV4_RULES = `*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-PROXY-CANARY - [0:0]
-A PREROUTING -i lo -j MARK --set-xmark 0x1/0xffffffff
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-SERVICES - [0:0]
:${EXT} - [0:0]
:${SEP_A} - [0:0]
:${SEP_B} - [0:0]
:${SVC} - [0:0]
:MYCHAIN - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -j MYCHAIN
-A DOCKER -i docker0 -j RETURN
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/web:http" -m tcp --dport 30080 -j ${EXT}
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j ${SVC}
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A ${EXT} -m comment --comment "masquerade traffic for default/web:http external destinations" -j KUBE-MARK-MASQ
-A ${EXT} -j ${SVC}
-A ${SEP_A} -s 10.244.1.5/32 -m comment --comment "default/web:http" -j KUBE-MARK-MASQ
-A ${SEP_A} -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT --to-destination 10.244.1.5:8080
-A ${SEP_B} -s 10.244.2.7/32 -m comment --comment "default/web:http" -j KUBE-MARK-MASQ
-A ${SEP_B} -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT --to-destination 10.244.2.7:8080
-A ${SVC} ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A ${SVC} -m comment --comment "default/web:http -> 10.244.1.5:8080" -m statistic --mode random --probability 0.50000000000 -j ${SEP_A}
-A ${SVC} -m comment --comment "default/web:http -> 10.244.2.7:8080" -j ${SEP_B}
-A MYCHAIN -d 192.0.2.0/24 -m comment --comment "not a jump: -j KUBE-SERVICES" -j RETURN
-A MYCHAIN -s 198.51.100.0/24 -g KUBE-MARK-MASQ
-A MYCHAIN -j ACCEPT
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -j DOCKER-USER
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A DOCKER-USER -j RETURN
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -m comment --comment "kubernetes forwarding rules" -j ACCEPT
-A KUBE-SERVICES -d 10.96.0.11/32 -p tcp -m comment --comment "default/empty has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
COMMIT
`;

/** A dual-stack node: kube-proxy's IPv6 twin, smaller. */
const IPV6_RULES = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:${SVC} - [0:0]
:${SEP_A} - [0:0]
:MYCHAIN - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -d 2001:db8::/64 -j MYCHAIN
-A KUBE-SERVICES -d fd00:10:96::a/128 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j ${SVC}
-A ${SVC} -j ${SEP_A}
-A ${SEP_A} -p tcp -m tcp -j DNAT --to-destination [fd00:10:244::5]:8080
-A MYCHAIN -j RETURN
COMMIT
`;

function commandsOf(backend: IptablesBackend, family: IpFamily): { save: string; restore: string } {
  const base = `${family === 'ipv4' ? 'iptables' : 'ip6tables'}-${backend}`;
  return { save: `${base}-save`, restore: `${base}-restore` };
}

function hasCommand(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const BACKENDS = (['legacy', 'nft'] as const).filter((b) =>
  (['ipv4', 'ipv6'] as const).every((f) => Object.values(commandsOf(b, f)).every(hasCommand)),
);

function missingPrerequisite(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  if (!hasCommand('ip') || !hasCommand('nsenter')) return 'needs ip and nsenter';
  if (BACKENDS.length === 0) return 'neither iptables-legacy nor iptables-nft is installed';
  return undefined;
}

/** A network namespace of this test's own, removed afterwards whatever happens. */
async function withNetns(body: (enter: string[]) => Promise<void>): Promise<void> {
  const name = `kpxcl${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name]);
  try {
    await body(['nsenter', `--net=/run/netns/${name}`, '--']);
  } finally {
    execFileSync('ip', ['netns', 'del', name]);
  }
}

function inNetns(enter: string[], cmd: string, args: string[], input?: string): string {
  const [file, ...rest] = [...enter, cmd, ...args] as [string, ...string[]];
  return execFileSync(file, rest, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Save output per table, without comments and counters, as lines. */
function savedTables(enter: string[], save: string): Map<string, string[]> {
  const tables = new Map<string, string[]>();
  let lines: string[] = [];
  for (const line of inNetns(enter, save, []).split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    if (line.startsWith('*')) tables.set(line.slice(1), (lines = []));
    lines.push(line.replace(/\[\d+:\d+\]$/, '[0:0]'));
  }
  return tables;
}

/** The lines of a saved table that are not kube-proxy's: its chains' declarations and rules, and rules jumping to them. */
function withoutKubeProxy(table: string, lines: string[]): string[] {
  const chains = KUBE_PROXY_CHAINS[table] ?? [];
  return lines.filter(
    (line) =>
      !chains.some(
        (chain) =>
          line.startsWith(`:${chain} `) ||
          line.startsWith(`-A ${chain} `) ||
          line.endsWith(` -j ${chain}`) ||
          line.endsWith(` -g ${chain}`),
      ),
  );
}

function install(enter: string[], backend: IptablesBackend, family: IpFamily): void {
  inNetns(enter, commandsOf(backend, family).restore, [], family === 'ipv4' ? IPV4_RULES : IPV6_RULES);
}

/** The tables cleaned in one backend and family, as restore operations, in a stable order for comparison. */
function cleaned(results: CleanupResult[], backend: IptablesBackend, family: IpFamily): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const r of results) {
    if (r.status === 'cleaned' && r.backend === backend && r.family === family) out[r.table] = r.removed;
  }
  return out;
}

const skip = missingPrerequisite();

test('removeKubeProxyRules: kube-proxy chains and jumps gone on both backends and families, the rest byte for byte', { skip }, async () => {
  await withNetns(async (enter) => {
    const before = new Map<string, Map<string, string[]>>();
    for (const backend of BACKENDS) {
      for (const family of ['ipv4', 'ipv6'] as const) {
        install(enter, backend, family);
        before.set(`${backend}/${family}`, savedTables(enter, commandsOf(backend, family).save));
      }
    }

    const results = await removeKubeProxyRules({ run: commandRunner(enter) });
    assert.deepEqual(results.filter((r) => r.status !== 'cleaned'), [], 'no backend skipped or failed');

    for (const backend of BACKENDS) {
      for (const family of ['ipv4', 'ipv6'] as const) {
        const label = `${backend}/${family}`;
        const after = savedTables(enter, commandsOf(backend, family).save);
        for (const [table, lines] of before.get(label)!) {
          assert.deepEqual(after.get(table), withoutKubeProxy(table, lines), `${label} ${table}: exactly kube-proxy's lines removed`);
        }
        const removed = cleaned(results, backend, family);
        if (family === 'ipv4') {
          assert.deepEqual(Object.keys(removed).sort(), ['filter', 'mangle', 'nat']);
          assert.ok(removed.nat!.includes('-D POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING'));
          assert.ok(removed.nat!.includes('-D MYCHAIN -s 198.51.100.0/24 -g KUBE-MARK-MASQ'), 'a goto from a user chain goes too');
          assert.ok(removed.filter!.includes('-D FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD'));
          assert.deepEqual(removed.mangle, ['-X KUBE-PROXY-CANARY']);
          // kubelet's chains and the user's comment that merely mentions a jump stay.
          const nat = after.get('nat')!;
          assert.ok(nat.includes(':KUBE-KUBELET-CANARY - [0:0]'));
          assert.ok(nat.some((l) => l.includes('not a jump: -j KUBE-SERVICES')));
          assert.ok(after.get('filter')!.some((l) => l.startsWith('-A INPUT -j KUBE-FIREWALL')));
        } else {
          assert.deepEqual(Object.keys(removed), ['nat']);
        }
        for (const [table, chains] of Object.entries(KUBE_PROXY_CHAINS)) {
          const text = (after.get(table) ?? []).join('\n');
          for (const chain of chains) assert.ok(!new RegExp(`(:|-[AjgX] )${chain}( |$)`, 'm').test(text), `${label} ${table}: ${chain} remains`);
        }
      }
    }

    assert.deepEqual(await removeKubeProxyRules({ run: commandRunner(enter) }), [], 'a second run finds nothing');
  });
});

test('removeKpxRules: IPv4 of the backend `iptables-save` points to, and nothing else', { skip }, async () => {
  await withNetns(async (enter) => {
    const system: IptablesBackend = inNetns(enter, 'iptables-save', ['--version']).includes('nf_tables') ? 'nft' : 'legacy';
    assert.ok(BACKENDS.includes(system), `iptables-save is ${system}, whose binaries are missing`);
    for (const backend of BACKENDS) install(enter, backend, 'ipv4');
    install(enter, system, 'ipv6');
    const others = new Map(BACKENDS.filter((b) => b !== system).map((b) => [b, savedTables(enter, commandsOf(b, 'ipv4').save)]));
    const ipv6Before = savedTables(enter, commandsOf(system, 'ipv6').save);

    const results = await removeKpxRules({ run: commandRunner(enter) });
    assert.ok(results.every((r) => r.status === 'cleaned' && r.backend === system && r.family === 'ipv4'), JSON.stringify(results));
    assert.deepEqual(results.map((r) => ('table' in r ? r.table : undefined)).sort(), ['filter', 'mangle', 'nat']);
    const nat = savedTables(enter, commandsOf(system, 'ipv4').save).get('nat')!;
    assert.ok(!nat.some((l) => l.includes('KUBE-SERVICES') && !l.includes('not a jump')), 'KUBE-SERVICES remains');
    for (const [backend, tables] of others) assert.deepEqual(savedTables(enter, commandsOf(backend, 'ipv4').save), tables, `${backend} untouched`);
    assert.deepEqual(savedTables(enter, commandsOf(system, 'ipv6').save), ipv6Before, 'IPv6 untouched');
  });
});

test('planKubeProxyCleanup: one payload per table: declare (flush), delete the jumps, delete the chains', () => {
  const save = [
    '# Generated by iptables-save',
    '*nat',
    ':PREROUTING ACCEPT [5:300]',
    ':KUBE-SERVICES - [0:0]',
    `:${SVC} - [0:0]`,
    ':KUBE-ROUTER-SERVICES - [0:0]',
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A PREROUTING -m comment --comment "say \\"-j KUBE-SERVICES\\" twice" -j ACCEPT',
    '-A PREROUTING -j KUBE-ROUTER-SERVICES',
    `-A KUBE-SERVICES -j ${SVC}`,
    'COMMIT',
    '*raw',
    ':PREROUTING ACCEPT [0:0]',
    ':KUBE-SERVICES - [0:0]',
    'COMMIT',
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':KUBE-FIREWALL - [0:0]',
    '-A INPUT -j KUBE-FIREWALL',
    'COMMIT',
  ].join('\n');
  assert.deepEqual(planKubeProxyCleanup(save), [
    {
      table: 'nat',
      payload: [
        '*nat',
        ':KUBE-SERVICES - [0:0]',
        `:${SVC} - [0:0]`,
        '-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-X KUBE-SERVICES',
        `-X ${SVC}`,
        'COMMIT',
        '',
      ].join('\n'),
      removed: ['-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES', '-X KUBE-SERVICES', `-X ${SVC}`],
    },
  ]);
});

test('failures come back per table, naming the command and its stderr; absent backends are skipped', async () => {
  const save = '*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n*filter\n:KUBE-FORWARD - [0:0]\nCOMMIT\n';
  const failingRestore: Run = async (_cmd, args) => {
    if (args[0] === '--version') return { code: 0, stdout: 'iptables-save v1.8.9 (legacy)\n', stderr: '' };
    if (args.length === 0) return { code: 0, stdout: save, stderr: '' };
    return { code: 4, stdout: '', stderr: 'iptables-restore: line 2 failed\n' };
  };
  // `sh` stands in for both commands: it is on every PATH, and the runner never starts it.
  assert.deepEqual(await removeKpxRules({ run: failingRestore, commands: { save: 'sh', restore: 'sh' } }), [
    { status: 'failed', backend: 'legacy', family: 'ipv4', table: 'nat', reason: 'sh -w --noflush (table nat) failed (exit 4): iptables-restore: line 2 failed' },
    { status: 'failed', backend: 'legacy', family: 'ipv4', table: 'filter', reason: 'sh -w --noflush (table filter) failed (exit 4): iptables-restore: line 2 failed' },
  ]);

  const failingSave: Run = async (_cmd, args) =>
    args[0] === '--version' ? { code: 0, stdout: 'iptables-save v1.8.9 (nf_tables)\n', stderr: '' } : { code: 1, stdout: '', stderr: 'Permission denied\n' };
  assert.deepEqual(await removeKpxRules({ run: failingSave, commands: { save: 'sh', restore: 'sh' } }), [
    { status: 'failed', backend: 'nft', family: 'ipv4', reason: 'sh failed (exit 1): Permission denied' },
  ]);

  const path = process.env.PATH;
  process.env.PATH = '/nonexistent';
  try {
    const results = await removeKubeProxyRules({ run: failingRestore });
    assert.deepEqual(results, [
      { status: 'skipped', backend: 'legacy', family: 'ipv4', reason: 'iptables-legacy-save and iptables-legacy-restore not found on PATH' },
      { status: 'skipped', backend: 'legacy', family: 'ipv6', reason: 'ip6tables-legacy-save and ip6tables-legacy-restore not found on PATH' },
      { status: 'skipped', backend: 'nft', family: 'ipv4', reason: 'iptables-nft-save and iptables-nft-restore not found on PATH' },
      { status: 'skipped', backend: 'nft', family: 'ipv6', reason: 'ip6tables-nft-save and ip6tables-nft-restore not found on PATH' },
    ]);
    assert.deepEqual(await removeKpxRules({ run: failingRestore }), [], 'no iptables-save: nothing kpx could have installed');
  } finally {
    process.env.PATH = path;
  }
});
