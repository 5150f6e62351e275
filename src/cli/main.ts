/**
 * The kpx command line: the only reader of argv and the environment.
 */
import { hostname } from 'node:os';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { readPinnedTables, removePins } from '../datapath/ebpf.js';
import { startAgent } from '../daemon.js';
import { formatListing, listNodeAddresses, listServicePorts } from '../inspect/listing.js';
import { createLogger } from '../log.js';
import { runLabDemo } from '../lab/demo.js';
import { parseNodePortRange } from '../model/node-addresses.js';
import type { PortRange } from '../model/types.js';

const DEFAULT_BPFFS = '/sys/fs/bpf/kpx';

function parseDurationMs(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(text);
  if (!m) throw new Error(`expected a duration like 100ms, 1s or 1m, got "${text}"`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'];
}

function commaList(text: string | undefined): string[] {
  return (text ?? '').split(',').map((s) => s.trim()).filter(Boolean);
}

function parseNodePortRangeFlag(text: string): PortRange {
  const range = parseNodePortRange(text);
  if (typeof range === 'string') throw new Error(`--service-node-port-range: ${range}`);
  return range;
}

function parseMapSizes(spec: string | undefined): Partial<Record<string, number>> {
  const sizes: Record<string, number> = {};
  for (const part of (spec ?? '').split(',').filter(Boolean)) {
    const [name, n] = part.split('=');
    const size = Number(n);
    if (!name || !Number.isInteger(size) || size <= 0) throw new Error(`--map-sizes: expected name=N, got "${part}"`);
    sizes[name.startsWith('kpx_') ? name : `kpx_${name}`] = size;
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
        .option('cgroup', { type: 'string', demandOption: true, describe: 'cgroup2 folder to attach the socket programs to' })
        .option('bpffs', { type: 'string', default: DEFAULT_BPFFS, describe: 'bpffs folder to pin maps and links under' })
        .option('node-name', { type: 'string', default: hostname() })
        .option('mode', { type: 'string', choices: ['ebpf'], default: 'ebpf' })
        .option('service-cluster-ip-range', { type: 'string', default: '10.96.0.0/12' })
        .option('service-node-port-range', { type: 'string', default: '30000-32767', describe: 'range manifest-mode nodePorts are allocated from' })
        .option('interfaces', { type: 'string', describe: 'external interfaces, comma-separated (default: those of the default route)' })
        .option('nodeport-addresses', { type: 'string', describe: 'CIDRs of the node addresses that answer NodePorts, comma-separated (default: all)' })
        .option('xdp', { type: 'boolean', default: false, describe: 'also translate in XDP on the external interfaces' })
        .option('min-sync-period', { type: 'string', default: '100ms', describe: 'least time between two syncs of a burst (e.g. 100ms, 1s)' })
        .option('map-sizes', { type: 'string', describe: 'max entries per map, e.g. frontends=65536,slots=262144' }),
    async (argv) => {
      const log = createLogger(argv['log-level']);
      const agent = await startAgent(
        {
          // Neither a folder nor a kubeconfig: inside a pod, as kube-proxy does.
          source: argv.manifests
            ? { kind: 'manifests', dir: argv.manifests }
            : { kind: 'kube', kubeconfig: argv.kubeconfig, master: argv.master },
          cgroup: argv.cgroup,
          bpffs: argv.bpffs,
          nodeName: argv['node-name'],
          mode: 'ebpf',
          serviceClusterIPRange: argv['service-cluster-ip-range'],
          serviceNodePortRange: parseNodePortRangeFlag(argv['service-node-port-range']),
          interfaces: commaList(argv.interfaces),
          nodePortCIDRs: commaList(argv['nodeport-addresses']),
          xdp: argv.xdp,
          minSyncIntervalMs: parseDurationMs(argv['min-sync-period']),
          mapSizes: parseMapSizes(argv['map-sizes']),
        },
        log,
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
    (argv) => {
      const tables = readPinnedTables(argv.bpffs);
      const listed = listServicePorts(tables);
      process.stdout.write((argv.json ? JSON.stringify(listed, null, 2) : formatListing(listed, listNodeAddresses(tables))) + '\n');
    },
  )
  .command(
    'cleanup',
    'remove everything kpx installed: links (detaching the programs) and maps',
    (y) =>
      y
        .option('bpffs', { type: 'string', default: DEFAULT_BPFFS })
        .option('cgroup', { type: 'string', describe: 'only remove links attached to this cgroup2 folder' }),
    (argv) => {
      const log = createLogger(argv['log-level']);
      const removed = removePins(argv.bpffs, argv.cgroup);
      log.info({ bpffs: argv.bpffs, removed }, removed.length ? 'removed kpx pins' : 'nothing of kpx found');
    },
  )
  .command(
    'lab',
    'demo: a throwaway lab of network namespaces with kpx serving the examples/ Services',
    (y) => y.option('keep', { type: 'boolean', default: false, describe: 'leave the lab up and print how to use it' }),
    async (argv) => {
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
