/**
 * The API-server source: list and watch of Services, EndpointSlices (or
 * Endpoints where the server has no slices) and this node's Node object,
 * with kube-proxy's label filters. The only module that talks to the API
 * server.
 *
 * Failures never touch the dataplane: a watch that ends is resumed from its
 * resourceVersion, one that fails is retried with backoff, a 410 Gone lists
 * again, and meanwhile the last good objects stay served.
 */
import type { Logger } from 'pino';
import type { NodeFacts } from '../health/proxy-health.js';
import type { EndpointSlice, Endpoints, ObjectSnapshot, Origin, Service } from '../k8s/types.js';
import { HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL } from '../k8s/types.js';
import { ServiceGroups, type GroupedKind } from '../model/groups.js';
import { connectToApiServer, type KubeConnection } from './kube-connection.js';
import { isServed, ListWatch, type Named } from './list-watch.js';
import { slimEndpoints, slimEndpointSlice, slimNode, slimService, TRIGGER_TIME_ANNOTATION } from './slim.js';
import type { ChangeKind, Source, SourceSnapshot } from './types.js';

/** kube-proxy's selector: Services (and their endpoints) another proxy owns, or headless ones, are not ours. */
export const PROXY_LABEL_SELECTOR = `!${SERVICE_PROXY_NAME_LABEL},!${HEADLESS_LABEL}`;

const ENDPOINT_SLICES_PATH = '/apis/discovery.k8s.io/v1/endpointslices';

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

/** A watched object as the store keeps it: slimmed, with its origin for log lines. */
type Kept = Named & Origin;

export class KubeSource implements Source {
  /** Every watched Service object, grouped per Service as events arrive: what the model cache updates from. */
  readonly groups = new ServiceGroups();
  private readonly watches = new Map<Resource, ListWatch<Kept>>();
  private triggerTimes: number[] = [];
  private started = false;
  private lastNode: NodeFacts | undefined;

  constructor(private readonly opts: KubeSourceOptions) {}

  async start(onChange: (kind?: ChangeKind) => void): Promise<void> {
    const conn = await connectToApiServer(this.opts);
    const retryMinMs = this.opts.retryMinMs ?? 200;
    const retryMaxMs = this.opts.retryMaxMs ?? 30_000;
    const endpointsResource = (await this.servesEndpointSlices(conn, retryMinMs, retryMaxMs)) ? 'endpointslices' : 'endpoints';
    this.opts.log.info({ endpoints: endpointsResource }, 'watching the API server');

    const watch = (resource: Resource, path: string, slim: (raw: unknown) => Named, grouped: GroupedKind | undefined, filter: { labelSelector?: string; fieldSelector?: string }) => {
      const changed = (obj: Kept, deleted: boolean) => {
        if (grouped !== undefined) {
          if (deleted) this.groups.delete(grouped, obj);
          else this.groups.set(grouped, obj as never);
        }
        if (!deleted && resource === 'endpointslices') this.noteTrigger(obj as EndpointSlice);
        // A deleted Node keeps its last state, as kube-proxy's does: one the autoscaler tainted stays ineligible.
        if (resource === 'nodes') this.lastNode = obj as NodeFacts;
        if (this.started) onChange(resource === 'services' ? 'service' : resource === 'nodes' ? undefined : 'endpoints');
      };
      const lw = new ListWatch<Kept>(conn, {
        resource,
        path,
        ...filter,
        slim: (raw) => {
          const obj = slim(raw) as Kept;
          // On the object itself, one copy: the model cache recognises an unchanged object by reference.
          // join makes a flat string; a template literal would keep a rope of its parts.
          if (obj?.metadata) obj.origin = [resource, obj.metadata.namespace ?? '', obj.metadata.name ?? ''].join('/');
          return obj;
        },
        onUpsert: (obj) => changed(obj, false),
        onDelete: (obj) => changed(obj, true),
        log: this.opts.log,
        retryMinMs,
        retryMaxMs,
      });
      this.watches.set(resource, lw);
    };
    const labelSelector = PROXY_LABEL_SELECTOR;
    watch('services', '/api/v1/services', slimService, 'services', { labelSelector });
    if (endpointsResource === 'endpointslices') watch('endpointslices', ENDPOINT_SLICES_PATH, slimEndpointSlice, 'endpointSlices', { labelSelector });
    else watch('endpoints', '/api/v1/endpoints', slimEndpoints, 'endpoints', { labelSelector });
    watch('nodes', '/api/v1/nodes', slimNode, undefined, { fieldSelector: `metadata.name=${this.opts.nodeName}` });

    // The first sync must not program a Service whose slices have not arrived yet.
    for (const lw of this.watches.values()) lw.start();
    await Promise.all([...this.watches.values()].map((lw) => lw.firstList));
    this.triggerTimes = [];
    this.started = true;
  }

  snapshot(): SourceSnapshot {
    const all = <T>(resource: Resource) => [...(this.watches.get(resource)?.list() ?? [])] as T[];
    const objects: ObjectSnapshot = {
      services: all<Service & Origin>('services'),
      endpointSlices: all<EndpointSlice & Origin>('endpointslices'),
      endpoints: all<Endpoints & Origin>('endpoints'),
    };
    return { objects, rejected: [] };
  }

  /** This node's Node object, as last listed or watched, deleted or not. */
  node(): NodeFacts | undefined {
    return this.lastNode;
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
    for (const lw of this.watches.values()) lw.stop();
  }

  private noteTrigger(slice: EndpointSlice): void {
    const at = Date.parse(slice.metadata?.annotations?.[TRIGGER_TIME_ANNOTATION] ?? '');
    if (Number.isFinite(at)) this.triggerTimes.push(at);
  }

  /** kube-proxy falls back to Endpoints only where the discovery API is not served at all. */
  private async servesEndpointSlices(conn: KubeConnection, retryMinMs: number, retryMaxMs: number): Promise<boolean> {
    let delay = retryMinMs;
    for (;;) {
      try {
        return await isServed(conn, ENDPOINT_SLICES_PATH);
      } catch (err) {
        this.opts.log.warn({ err: (err as Error).message, retryInMs: delay }, 'API server not reachable yet');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, retryMaxMs);
      }
    }
  }
}
