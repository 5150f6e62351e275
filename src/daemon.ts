/**
 * Composition root of `kpx run`: source -> model -> datapath, wired once,
 * with the shutdown order that leaves the dataplane serving.
 */
import type { Logger } from 'pino';
import { EbpfDatapath } from './datapath/ebpf.js';
import { buildModel } from './model/build.js';
import type { Model } from './model/types.js';
import { DEFAULT_SYNCER_OPTIONS, Syncer } from './reconcile/syncer.js';
import { ManifestSource } from './source/manifests.js';
import type { Source } from './source/types.js';

export interface AgentConfig {
  manifests: string;
  cgroup: string;
  bpffs: string;
  nodeName: string;
  mode: 'ebpf';
  serviceClusterIPRange: string;
  mapSizes: Partial<Record<string, number>>;
}

export interface Agent {
  /** Stops watching and releases handles; what is in the kernel stays. */
  stop(): void;
}

export async function startAgent(config: AgentConfig, log: Logger): Promise<Agent> {
  const source: Source = new ManifestSource(config.manifests, log);
  const datapath = EbpfDatapath.open({ bpffs: config.bpffs, cgroup: config.cgroup, mapSizes: config.mapSizes, log });
  const model = (): Model => {
    const snap = source.snapshot();
    const built = buildModel(snap.objects, {
      serviceClusterIPRange: config.serviceClusterIPRange,
      allocateClusterIPs: true,
    });
    return { ...built, rejected: [...snap.rejected, ...built.rejected] };
  };
  const syncer = new Syncer(model, datapath, log, DEFAULT_SYNCER_OPTIONS);
  try {
    await source.start(() => syncer.request());
  } catch (err) {
    source.close();
    datapath.close();
    throw err;
  }
  syncer.start();
  log.info({ mode: config.mode, node: config.nodeName, manifests: config.manifests }, 'agent running');
  return {
    stop() {
      source.close();
      syncer.stop();
      datapath.close();
    },
  };
}
