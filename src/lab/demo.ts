/**
 * `kpx lab`: builds a small lab (a node, three backend pods answering with
 * their own name, a server outside the cluster, a client), runs the agent on
 * the Services in examples/, shows where requests land, and tears it down.
 */
import { copyFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { kpxArgv, startLabAgent } from './agent.js';
import { createLab, PROBE_SCRIPT, type Lab } from './lab.js';
import { countBodies, countPeers, parseProbeOutput } from './probe-results.js';

export const EXAMPLES_DIR = fileURLToPath(new URL('../../../examples/', import.meta.url));

/** The hosts examples/ refers to. */
export const DEMO_PODS = [
  { name: 'pod-a', address: '10.244.0.11' },
  { name: 'pod-b', address: '10.244.0.12' },
  { name: 'pod-c', address: '10.244.0.13' },
];
export const DEMO_EXTERNAL = [{ name: 'db', address: '192.0.2.10' }];

export async function copyExamples(lab: Lab): Promise<void> {
  for (const name of await readdir(EXAMPLES_DIR)) {
    if (/\.(ya?ml|json)$/.test(name)) await copyFile(join(EXAMPLES_DIR, name), join(lab.manifestsDir, name));
  }
}

export async function startDemoServers(lab: Lab): Promise<void> {
  await lab.startNameServers([
    ...DEMO_PODS.map((p) => ({ host: p.name, tcp: [80], udp: [5353] })),
    { host: 'db', tcp: [31496, 31337] },
  ]);
}

const say = (line: string) => process.stdout.write(line + '\n');

async function showProbe(lab: Lab, title: string, args: string[]): Promise<void> {
  const r = await lab.exec('client', [process.execPath, PROBE_SCRIPT, ...args], { inCgroup: true });
  if (r.code !== 0) {
    say(`  ${title}: probe failed: ${r.stderr.trim()}`);
    return;
  }
  const { results } = parseProbeOutput(r.stdout);
  const answered = Object.entries(countBodies(results)).map(([k, n]) => `${k}×${n}`).join(' ');
  const peers = Object.keys(countPeers(results)).join(', ');
  say(`  ${title}\n      answered by: ${answered}\n      the client saw its peer as: ${peers || '-'}`);
}

export async function runLabDemo(opts: { keep: boolean; logLevel: string }): Promise<void> {
  const lab = await createLab({ pods: DEMO_PODS, externalHosts: DEMO_EXTERNAL });
  try {
    say(`lab ${lab.runId}: node, client, ${DEMO_PODS.map((p) => p.name).join(', ')} and db (outside the cluster)`);
    await copyExamples(lab);
    await startDemoServers(lab);
    await startLabAgent(lab, { logLevel: opts.logLevel });
    const list = await lab.exec('node', kpxArgv(['list', '--bpffs', lab.bpffsPath]));
    say(`\n$ kpx list --bpffs ${lab.bpffsPath}\n${list.stdout}`);
    const json = await lab.exec('node', kpxArgv(['list', '--json', '--bpffs', lab.bpffsPath]));
    const dns = (JSON.parse(json.stdout) as Array<{ name: string; frontends: Array<{ address: string }> }>).find(
      (s) => s.name === 'dns',
    );
    say('requests from the client pod (its connect()/sendmsg() go through kpx):');
    await showProbe(lab, 'web 10.96.0.80:8222, 6 HTTP requests', ['http', '10.96.0.80', '8222', '--count', '6']);
    await showProbe(lab, 'external-db 7064 (port name "client")', ['http', '10.96.0.81', '7064', '--count', '2']);
    await showProbe(lab, 'external-db 7164 (port name "admin")', ['http', '10.96.0.81', '7164', '--count', '2']);
    if (dns) await showProbe(lab, `dns ${dns.frontends[0]!.address}:53/UDP, 4 datagrams`, ['udp', dns.frontends[0]!.address, '53', '--count', '4']);
    if (opts.keep) {
      say(`\nThe lab stays up until you press Ctrl-C. A shell in the client pod, inside kpx's cgroup:`);
      say(`  nsenter --net=${lab.netnsPath('client')} sh -c 'echo $$ > ${lab.cgroupPath}/cgroup.procs && exec bash'`);
      say(`  then e.g.: curl -s http://10.96.0.80:8222/`);
      await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
    }
  } finally {
    await lab.close();
    say(`lab ${lab.runId} removed`);
  }
}
