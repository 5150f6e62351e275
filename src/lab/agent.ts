/**
 * Runs the real kpx agent (the CLI, as a user would) for one node of a lab:
 * in the node's netns, attached to the node's cgroup and wire interface,
 * pinning under the node's bpffs.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AGENT_HOST, type ClusterLab, type LabProcess } from './lab.js';

/** bin/kpx, the command users run: the lab's agent gets the same Node flags (src/lab sits at dist/src/lab). */
const KPX_COMMAND = fileURLToPath(new URL('../../../bin/kpx', import.meta.url));

export function kpxArgv(args: string[]): string[] {
  return [KPX_COMMAND, ...args];
}

/** The Node flags bin/kpx runs with (bin/node-flags), for a process that runs the agent's code without bin/kpx. */
export function agentNodeFlags(): string[] {
  const text = readFileSync(fileURLToPath(new URL('../../../bin/node-flags', import.meta.url)), 'utf8');
  return text.split('\n').filter((line) => line !== '' && !line.startsWith('#'));
}

export interface LabAgentOptions {
  /** The lab node (Kubernetes name) to serve; the lab's only node by default. */
  node?: string;
  logLevel?: string;
  /** Watch this API server instead of the lab's manifest folder. */
  kubeconfig?: string;
  extraArgs?: string[];
}

/** Starts the agent and resolves once its first sync has reached the kernel. */
export async function startLabAgent(lab: ClusterLab, opts: LabAgentOptions = {}): Promise<LabProcess> {
  if (opts.node === undefined && lab.nodes.length !== 1) throw new Error('startLabAgent: say which node');
  const node = opts.node === undefined ? lab.nodes[0]! : lab.node(opts.node);
  // An API server on loopback in the test process means sharing its network
  // namespace, the root one: there, an interface name would be a host's.
  if (opts.kubeconfig && node.interface) throw new Error('startLabAgent: a kubeconfig agent runs in the root netns and must not attach to interfaces');
  // Nor may it write iptables rules there: ebpf only, even if --mode auto would fall back.
  if (opts.kubeconfig && opts.extraArgs?.includes('iptables')) throw new Error('startLabAgent: a kubeconfig agent runs in the root netns: no iptables mode');
  const agent = lab.spawn(
    opts.kubeconfig ? AGENT_HOST : node.host,
    kpxArgv([
      '--log-level',
      opts.logLevel ?? 'debug',
      'run',
      // In the root netns, health and metrics are served on free loopback ports (the log names them), never on the
      // host's 10256 and 10249.
      ...(opts.kubeconfig
        ? ['--kubeconfig', opts.kubeconfig, '--mode', 'ebpf', '--healthz-bind-address', '127.0.0.1:0', '--metrics-bind-address', '127.0.0.1:0']
        : ['--manifests', lab.manifestsDir]),
      '--cgroup',
      node.cgroupPath,
      '--bpffs',
      node.bpffsPath,
      '--node-name',
      node.name,
      // Never the default (the default route's interfaces): outside a lab node that would be a host interface.
      '--interfaces',
      node.interface ?? 'none',
      ...(opts.extraArgs ?? []),
    ]),
  );
  await agent.waitFor(/"msg":"synced"/);
  return agent;
}
