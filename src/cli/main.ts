/**
 * The kpx command line: the only reader of argv and the environment.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { ALL_MAPS, TABLES } from '../contract/tables.js';
import { parseBindAddress, type BindAddress } from '../http-listener.js';
import type { ListedServicePort } from '../inspect/listing.js';
import { createLogger } from '../log.js';
import { parseNodePortRange } from '../model/node-addresses.js';
import type { PortRange } from '../model/types.js';

// Each command loads its own modules when it runs: the agent's memory holds none of the other commands'.

const DEFAULT_BPFFS = '/sys/fs/bpf/kpx';

function parseDurationMs(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(text);
  if (!m) throw new Error(`expected a duration like 100ms, 1s or 1m, got "${text}"`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'];
}

/** What the kernel holds, from whichever datapath is in place: pinned maps under bpffs, else the iptables rules. */
async function readProgrammed(bpffs: string): Promise<{ mode: 'ebpf' | 'iptables'; servicePorts: ListedServicePort[]; nodeAddresses: string[] }> {
  if (existsSync(join(bpffs, TABLES.frontends.map))) {
    const { readPinnedTables } = await import('../datapath/ebpf.js');
    const { listNodeAddresses, listServicePorts } = await import('../inspect/listing.js');
    const tables = readPinnedTables(bpffs);
    return { mode: 'ebpf', servicePorts: listServicePorts(tables), nodeAddresses: listNodeAddresses(tables) };
  }
  const { listFromIptablesSave, nodeAddressesFromIptablesSave } = await import('../inspect/iptables-listing.js');
  const saved = spawnSync('iptables-save', [], { encoding: 'utf8' });
  if (saved.status !== 0) throw new Error(`no pinned maps under ${bpffs}, and iptables-save failed: ${saved.stderr.trim()}`);
  return { mode: 'iptables', servicePorts: listFromIptablesSave(saved.stdout), nodeAddresses: nodeAddressesFromIptablesSave(saved.stdout) };
}

function parseBindAddressFlag(flag: string, text: string, defaultPort: number): BindAddress | undefined {
  const parsed = parseBindAddress(text, defaultPort);
  if (typeof parsed === 'string') throw new Error(`${flag}: ${parsed}`);
  return parsed;
}

function commaList(text: string | undefined): string[] {
  return (text ?? '').split(',').map((s) => s.trim()).filter(Boolean);
}

function parseNodePortRangeFlag(text: string): PortRange {
  const range = parseNodePortRange(text);
  if (typeof range === 'string') throw new Error(`--service-node-port-range: ${range}`);
  return range;
}

/** kpx_sock_peer and kpx_sock_sendto are socket storage (no size), kpx_filter and kpx_sync_seq one value each, kpx_stats one slot per counter. */
const RESIZABLE_MAPS = ALL_MAPS.filter((m) => !['kpx_sock_peer', 'kpx_sock_sendto', 'kpx_filter', 'kpx_sync_seq', 'kpx_stats'].includes(m));

function parseMapSizes(spec: string | undefined): Partial<Record<string, number>> {
  const sizes: Record<string, number> = {};
  for (const part of (spec ?? '').split(',').filter(Boolean)) {
    const [name, n] = part.split('=');
    const size = Number(n);
    if (!name || !Number.isInteger(size) || size <= 0) throw new Error(`--map-sizes: expected name=N, got "${part}"`);
    const map = name.startsWith('kpx_') ? name : `kpx_${name}`;
    if (!RESIZABLE_MAPS.includes(map)) throw new Error(`--map-sizes: ${name} is not a map whose size can be set (${RESIZABLE_MAPS.join(', ')})`);
    sizes[map] = size;
  }
  return sizes;
}

await yargs(hideBin(process.argv))
  .scriptName('kpx')
  .strict()
  .option('log-level', { type: 'string', default: 'info', choices: ['trace', 'debug', 'info', 'warn', 'error'] })
  .command(
    'run',
    'run the agent: program Services into the kernel and keep them up to date',
    (y) =>
      y
        .option('manifests', { type: 'string', describe: 'folder of Service/Endpoints/EndpointSlice manifests (no API server)' })
        .option('kubeconfig', { type: 'string', describe: 'kubeconfig of the API server to watch' })
        .option('master', { type: 'string', describe: 'API server URL, overriding the kubeconfig' })
        .conflicts('manifests', ['kubeconfig', 'master'])
        .option('cgroup', { type: 'string', describe: 'cgroup2 folder to attach the socket programs to (ebpf mode)' })
        .option('bpffs', { type: 'string', default: DEFAULT_BPFFS, describe: 'bpffs folder to pin maps and links under' })
        .option('node-name', { type: 'string', default: hostname() })
        .option('mode', {
          choices: ['auto', 'ebpf', 'iptables'] as const,
          default: 'auto' as const,
          describe: 'datapath: ebpf when the kernel has every feature it needs (auto), or forced',
        })
        .option('service-cluster-ip-range', { type: 'string', default: '10.96.0.0/12' })
        .option('service-node-port-range', { type: 'string', default: '30000-32767', describe: 'range manifest-mode nodePorts are allocated from' })
        .option('interfaces', {
          type: 'string',
          default: 'auto',
          describe: 'external interfaces, comma-separated; auto: those of the default route; none: no packet-level translation',
        })
        .option('nodeport-addresses', { type: 'string', describe: 'CIDRs of the node addresses that answer NodePorts, comma-separated (default: all)' })
        .option('xdp', { type: 'boolean', default: false, describe: 'also translate in XDP on the external interfaces' })
        .option('min-sync-period', { type: 'string', default: '100ms', describe: 'least time between two syncs of a burst (e.g. 100ms, 1s)' })
        .option('map-sizes', { type: 'string', describe: 'max entries per map, e.g. frontends=65536,slots=262144' })
        .option('healthz-bind-address', {
          type: 'string',
          default: '0.0.0.0:10256',
          describe: 'where /healthz and /livez are served, as kube-proxy serves them ("" for nowhere)',
        })
        .option('metrics-bind-address', {
          type: 'string',
          default: '127.0.0.1:10249',
          describe: 'where /metrics and /proxyMode are served, as kube-proxy serves them ("" for nowhere)',
        }),
    async (argv) => {
      const log = createLogger(argv['log-level']);
      const { startAgent } = await import('../daemon.js');
      const agent = await startAgent(
        {
          // Neither a folder nor a kubeconfig: inside a pod, as kube-proxy does.
          source: argv.manifests
            ? { kind: 'manifests', dir: argv.manifests }
            : { kind: 'kube', kubeconfig: argv.kubeconfig, master: argv.master },
          cgroup: argv.cgroup,
          bpffs: argv.bpffs,
          nodeName: argv['node-name'],
          mode: argv.mode,
          probeOverride: process.env.KPX_PROBE_OVERRIDE,
          serviceClusterIPRange: argv['service-cluster-ip-range'],
          serviceNodePortRange: parseNodePortRangeFlag(argv['service-node-port-range']),
          interfaces: argv.interfaces === 'auto' ? 'auto' : argv.interfaces === 'none' ? [] : commaList(argv.interfaces),
          nodePortCIDRs: commaList(argv['nodeport-addresses']),
          xdp: argv.xdp,
          minSyncIntervalMs: parseDurationMs(argv['min-sync-period']),
          mapSizes: parseMapSizes(argv['map-sizes']),
          healthz: parseBindAddressFlag('--healthz-bind-address', argv['healthz-bind-address'], 10256),
          metrics: parseBindAddressFlag('--metrics-bind-address', argv['metrics-bind-address'], 10249),
        },
        log,
        () => process.exit(1),
      );
      const stop = (signal: string) => {
        log.info({ signal }, 'stopping; the dataplane stays in place');
        agent.stop();
        process.exit(0);
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    },
  )
  .command(
    'list',
    'show what the kernel holds, read back from the pinned maps',
    (y) => y.option('bpffs', { type: 'string', default: DEFAULT_BPFFS }).option('json', { type: 'boolean', default: false }),
    async (argv) => {
      const { formatListing } = await import('../inspect/listing.js');
      const programmed = await readProgrammed(argv.bpffs);
      const text = argv.json
        ? JSON.stringify(programmed.servicePorts, null, 2)
        : `mode: ${programmed.mode}\n${formatListing(programmed.servicePorts, programmed.nodeAddresses)}`;
      process.stdout.write(text + '\n');
    },
  )
  .command(
    'cleanup',
    "remove everything kpx installed (pinned links and maps, iptables rules), or with --kube-proxy a replaced kube-proxy's rules",
    (y) =>
      y
        .option('bpffs', { type: 'string', default: DEFAULT_BPFFS })
        .option('cgroup', { type: 'string', describe: 'only remove links attached to this cgroup2 folder' })
        .option('kube-proxy', {
          type: 'boolean',
          default: false,
          describe: "remove kube-proxy's iptables rules (legacy and nft, IPv4 and IPv6) instead of kpx's",
        }),
    async (argv) => {
      const log = createLogger(argv['log-level']);
      const { removeKpxRules, removeKubeProxyRules } = await import('../datapath/kube-proxy-cleanup.js');
      if (!argv['kube-proxy']) {
        const { removePins } = await import('../datapath/ebpf.js');
        const removed = removePins(argv.bpffs, argv.cgroup);
        log.info({ bpffs: argv.bpffs, removed }, removed.length ? 'removed kpx pins' : 'no kpx pins found');
      }
      // kpx's iptables rules carry kube-proxy's names: plain cleanup removes them from the backend `iptables` selects.
      const results = argv['kube-proxy'] ? await removeKubeProxyRules() : await removeKpxRules();
      for (const r of results) {
        if (r.status === 'cleaned') {
          log.info({ backend: r.backend, family: r.family, table: r.table, removed: r.removed }, `removed ${r.removed.length} iptables entries`);
        } else if (r.status === 'skipped') log.info({ backend: r.backend, family: r.family }, r.reason);
        else log.error({ backend: r.backend, family: r.family, table: r.table }, r.reason);
      }
      if (results.some((r) => r.status === 'failed')) process.exitCode = 1;
    },
  )
  .command(
    'lab',
    'demo: a throwaway lab of network namespaces with kpx serving the examples/ Services',
    (y) => y.option('keep', { type: 'boolean', default: false, describe: 'leave the lab up and print how to use it' }),
    async (argv) => {
      const { runLabDemo } = await import('../lab/demo.js');
      await runLabDemo({ keep: argv.keep, logLevel: argv['log-level'] });
    },
  )
  .demandCommand(1)
  .fail((msg, err, y) => {
    process.stderr.write(`kpx: ${err?.message ?? msg}\n`);
    if (!err) process.stderr.write(`${y.help()}\n`);
    process.exit(2);
  })
  .parseAsync();
