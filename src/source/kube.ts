/**
 * The API-server source: informers (list + watch) on Services,
 * EndpointSlices (or Endpoints where the server has no slices) and this
 * node's Node object, with kube-proxy's label filters. The only module that
 * talks to the API server.
 *
 * Failures never touch the dataplane: a watch that ends is resumed from its
 * resourceVersion, one that fails is retried with backoff, a 410 Gone makes
 * the informer list again, and meanwhile the last good objects stay served.
 */
import {
  ApiException,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  ListWatch,
  Watch,
  type KubernetesObject,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { EndpointSlice, Endpoints, ObjectSnapshot, Origin, Service } from '../k8s/types.js';
import { HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL } from '../k8s/types.js';
import { ServiceGroups, type GroupedKind } from '../model/groups.js';
import type { Source, SourceSnapshot } from './types.js';

/** kube-proxy's selector: Services (and their endpoints) another proxy owns, or headless ones, are not ours. */
export const PROXY_LABEL_SELECTOR = `!${SERVICE_PROXY_NAME_LABEL},!${HEADLESS_LABEL}`;

/** Set by the EndpointSlice controller: when the change that produced this slice happened. */
export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';

export interface KubeSourceOptions {
  /** A kubeconfig file; without one, the in-cluster service account. */
  kubeconfig?: string;
  /** Overrides the server of the kubeconfig (kube-proxy's --master). */
  master?: string;
  nodeName: string;
  log: Logger;
  retryMinMs?: number;
  retryMaxMs?: number;
}

type Resource = 'services' | 'endpointslices' | 'endpoints' | 'nodes';

export function loadKubeConfig(opts: Pick<KubeSourceOptions, 'kubeconfig' | 'master'>): KubeConfig {
  const kc = new KubeConfig();
  if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
  else kc.loadFromCluster();
  if (opts.master) {
    const current = kc.getCurrentCluster();
    kc.loadFromOptions({
      clusters: kc.clusters.map((c) => (c.name === current?.name ? { ...c, server: opts.master! } : c)),
      users: kc.users,
      contexts: kc.contexts,
      currentContext: kc.getCurrentContext(),
    });
  }
  return kc;
}

/** One informer and its retry state. */
class Informer {
  private retryDelay: number;
  private retryTimer: NodeJS.Timeout | undefined;
  private failedSinceStart = false;
  private stopped = false;
  private firstSync: { promise: Promise<void>; resolve: () => void };
  synced = false;

  constructor(
    readonly resource: Resource,
    readonly lw: ListWatch<KubernetesObject>,
    private readonly log: Logger,
    private readonly retryMinMs: number,
    private readonly retryMaxMs: number,
  ) {
    this.retryDelay = retryMinMs;
    let resolve!: () => void;
    this.firstSync = { promise: new Promise<void>((r) => (resolve = r)), resolve };
    lw.on('error', (err: unknown) => this.onError(err));
  }

  /** Resolves once the first list has been received, however many attempts that takes. */
  async start(): Promise<void> {
    void this.attempt();
    await this.firstSync.promise;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    void this.lw.stop();
  }

  private async attempt(): Promise<void> {
    this.failedSinceStart = false;
    try {
      await this.lw.start();
    } catch (err) {
      this.onError(err);
    }
    if (this.failedSinceStart || this.stopped) return;
    this.retryDelay = this.retryMinMs;
    if (!this.synced) {
      this.synced = true;
      this.firstSync.resolve();
    }
  }

  private onError(err: unknown): void {
    if (this.failedSinceStart || this.stopped) return;
    this.failedSinceStart = true;
    const e = err as { message?: string; code?: unknown; statusCode?: unknown };
    this.log.warn(
      { resource: this.resource, err: e?.message ?? String(err), code: e?.statusCode ?? e?.code, retryInMs: this.retryDelay },
      'watch failed; serving the last known state and retrying',
    );
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.attempt(), this.retryDelay);
    this.retryDelay = Math.min(this.retryDelay * 2, this.retryMaxMs);
  }
}

/** Where each watched resource is filed in the Service groups (Nodes are not). */
const GROUPED_KIND: Record<Resource, GroupedKind | undefined> = {
  services: 'services',
  endpointslices: 'endpointSlices',
  endpoints: 'endpoints',
  nodes: undefined,
};

export class KubeSource implements Source {
  /** Every watched Service object, grouped per Service as events arrive: what the model cache updates from. */
  readonly groups = new ServiceGroups();
  private informers: Informer[] = [];
  private readonly decorated = new WeakMap<KubernetesObject, KubernetesObject & Origin>();
  private triggerTimes: number[] = [];
  private started = false;
  private endpointsResource: 'endpointslices' | 'endpoints' = 'endpointslices';

  constructor(private readonly opts: KubeSourceOptions) {}

  async start(onChange: () => void): Promise<void> {
    const kc = loadKubeConfig(this.opts);
    const core = kc.makeApiClient(CoreV1Api);
    const discovery = kc.makeApiClient(DiscoveryV1Api);
    this.endpointsResource = (await this.servesEndpointSlices(discovery)) ? 'endpointslices' : 'endpoints';
    this.opts.log.info({ endpoints: this.endpointsResource }, 'watching the API server');

    const watch = new Watch(kc);
    const make = (resource: Resource, path: string, list: () => Promise<{ items: object[] }>, labels?: string, fields?: string) => {
      const lw = new ListWatch<KubernetesObject>(path, watch, list as never, false, labels, fields);
      const informer = new Informer(resource, lw, this.opts.log, this.opts.retryMinMs ?? 200, this.opts.retryMaxMs ?? 30_000);
      const kind = GROUPED_KIND[resource];
      const changed = (obj: KubernetesObject, deleted: boolean) => {
        if (kind !== undefined) {
          if (deleted) this.groups.delete(kind, obj);
          else this.groups.set(kind, this.withOrigin(resource, obj) as never);
        }
        if (resource === 'endpointslices') this.noteTrigger(obj);
        if (this.started) onChange();
      };
      lw.on('add', (obj) => changed(obj, false));
      lw.on('update', (obj) => changed(obj, false));
      lw.on('delete', (obj) => changed(obj, true));
      this.informers.push(informer);
      return informer;
    };
    const labelSelector = PROXY_LABEL_SELECTOR;
    const nodeField = `metadata.name=${this.opts.nodeName}`;
    make('services', '/api/v1/services', () => core.listServiceForAllNamespaces({ labelSelector }), labelSelector);
    if (this.endpointsResource === 'endpointslices') {
      make(
        'endpointslices',
        '/apis/discovery.k8s.io/v1/endpointslices',
        () => discovery.listEndpointSliceForAllNamespaces({ labelSelector }),
        labelSelector,
      );
    } else {
      make('endpoints', '/api/v1/endpoints', () => core.listEndpointsForAllNamespaces({ labelSelector }), labelSelector);
    }
    make('nodes', '/api/v1/nodes', () => core.listNode({ fieldSelector: nodeField }), undefined, nodeField);

    // The first sync must not program a Service whose slices have not arrived yet.
    await Promise.all(this.informers.map((i) => i.start()));
    this.triggerTimes = [];
    this.started = true;
  }

  snapshot(): SourceSnapshot {
    const objects: ObjectSnapshot = { services: [], endpoints: [], endpointSlices: [] };
    for (const informer of this.informers) {
      const resource = informer.resource;
      for (const obj of informer.lw.list()) {
        const withOrigin = this.withOrigin(resource, obj);
        if (resource === 'services') objects.services.push(withOrigin as Service & Origin);
        else if (resource === 'endpointslices') objects.endpointSlices.push(withOrigin as EndpointSlice & Origin);
        else if (resource === 'endpoints') objects.endpoints.push(withOrigin as Endpoints & Origin);
      }
    }
    return { objects, rejected: [] };
  }

  /**
   * The object with its origin, as the same reference for as long as the
   * informer holds the same object: the model cache recognises unchanged
   * Services by reference.
   */
  private withOrigin(resource: Resource, obj: KubernetesObject): KubernetesObject & Origin {
    let decorated = this.decorated.get(obj);
    if (!decorated) {
      decorated = { ...obj, origin: `${resource}/${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}` };
      this.decorated.set(obj, decorated);
    }
    return decorated;
  }

  /**
   * The trigger times (ms since epoch) of the slice changes seen since the
   * last call: what kube-proxy's network programming latency is measured from.
   */
  takeTriggerTimes(): number[] {
    const times = this.triggerTimes;
    this.triggerTimes = [];
    return times;
  }

  close(): void {
    for (const informer of this.informers) informer.stop();
  }

  private noteTrigger(obj: KubernetesObject): void {
    const at = Date.parse(obj.metadata?.annotations?.[TRIGGER_TIME_ANNOTATION] ?? '');
    if (Number.isFinite(at)) this.triggerTimes.push(at);
  }

  /** kube-proxy falls back to Endpoints only where the discovery API is not served at all. */
  private async servesEndpointSlices(discovery: DiscoveryV1Api): Promise<boolean> {
    let delay = this.opts.retryMinMs ?? 200;
    for (;;) {
      try {
        await discovery.listEndpointSliceForAllNamespaces({ limit: 1 });
        return true;
      } catch (err) {
        if (err instanceof ApiException && err.code === 404) return false;
        this.opts.log.warn({ err: (err as Error).message, retryInMs: delay }, 'API server not reachable yet');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, this.opts.retryMaxMs ?? 30_000);
      }
    }
  }
}
