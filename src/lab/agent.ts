/**
 * Runs the real kpx agent (the CLI, as a user would) against a lab: on the
 * lab's node, attached to the lab's cgroup, pinning under the lab's bpffs.
 */
import { fileURLToPath } from 'node:url';
import { AGENT_HOST, type Lab, type LabProcess } from './lab.js';

export const KPX_CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));

export function kpxArgv(args: string[]): string[] {
  return [process.execPath, '--enable-source-maps', KPX_CLI, ...args];
}

export interface LabAgentOptions {
  nodeName?: string;
  logLevel?: string;
  /** Watch this API server instead of the lab's manifest folder. */
  kubeconfig?: string;
  extraArgs?: string[];
}

/** Starts the agent and resolves once its first sync has reached the kernel. */
export async function startLabAgent(lab: Lab, opts: LabAgentOptions = {}): Promise<LabProcess> {
  // With an API server (on loopback in the test process) the agent must share its network namespace.
  const agent = lab.spawn(
    opts.kubeconfig ? AGENT_HOST : 'node',
    kpxArgv([
      '--log-level',
      opts.logLevel ?? 'debug',
      'run',
      ...(opts.kubeconfig ? ['--kubeconfig', opts.kubeconfig] : ['--manifests', lab.manifestsDir]),
      '--cgroup',
      lab.cgroupPath,
      '--bpffs',
      lab.bpffsPath,
      '--node-name',
      opts.nodeName ?? 'node-a',
      ...(opts.extraArgs ?? []),
    ]),
  );
  await agent.waitFor(/"msg":"synced"/);
  return agent;
}
