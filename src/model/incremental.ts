/**
 * buildModel, memoised per Service. The model of one Service depends only on
 * that Service and its own EndpointSlices/Endpoints, so a Service whose
 * objects are the very same (by reference) as last time reuses last time's
 * result. Sources hand over stable object references for unchanged objects
 * (informers replace an object only when it changes), so a single change
 * costs one Service's worth of work plus a pass over the rest.
 *
 * What spans Services is redone globally: ordering and frontend claims.
 * ClusterIP and nodePort allocation span Services too, so when either is on
 * (manifest mode, small folders) this falls back to buildModel over
 * everything. A Service's model also depends on the node name (which
 * endpoints are local), so a different node name starts the cache afresh.
 */
import type { EndpointSlice, Endpoints, ObjectSnapshot, Origin, Service } from '../k8s/types.js';
import { SERVICE_NAME_LABEL } from '../k8s/types.js';
import { buildModel, claimFrontends } from './build.js';
import { sortedIPv4s } from './cluster-ip.js';
import type { Model, ModelOptions } from './types.js';

interface Group {
  services: Array<Service & Origin>;
  endpointSlices: Array<EndpointSlice & Origin>;
  endpoints: Array<Endpoints & Origin>;
}

interface Cached {
  inputs: object[];
  model: Model;
}

function groupKey(obj: { metadata?: { namespace?: string; name?: string } } | undefined, name?: string): string {
  const meta = obj && typeof obj === 'object' ? obj.metadata : undefined;
  // NUL sorts before every name character, so sorting keys sorts by (namespace, name).
  return `${meta?.namespace ?? 'default'}\0${name ?? meta?.name ?? ''}`;
}

function sameInputs(a: object[], b: object[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export class ModelCache {
  private cache = new Map<string, Cached>();
  private sortedKeys: string[] = [];
  private cachedNodeName: string | undefined;

  build(snapshot: ObjectSnapshot, opts: ModelOptions): Model {
    if (opts.allocateClusterIPs || opts.allocateNodePorts) return buildModel(snapshot, opts);
    if (opts.nodeName !== this.cachedNodeName) {
      this.cache.clear();
      this.cachedNodeName = opts.nodeName;
    }

    const groups = new Map<string, Group>();
    const group = (key: string): Group => {
      let g = groups.get(key);
      if (!g) groups.set(key, (g = { services: [], endpointSlices: [], endpoints: [] }));
      return g;
    };
    for (const s of snapshot.services) group(groupKey(s)).services.push(s);
    for (const e of snapshot.endpoints) group(groupKey(e)).endpoints.push(e);
    for (const es of snapshot.endpointSlices) {
      const labels = es?.metadata?.labels;
      const service = labels && typeof labels === 'object' ? labels[SERVICE_NAME_LABEL] : undefined;
      // A slice without the label still goes through buildModel, which rejects it with the reason.
      group(groupKey(es, typeof service === 'string' ? service : `(unlabelled) ${es?.metadata?.name ?? ''}`)).endpointSlices.push(es);
    }

    const next = new Map<string, Cached>();
    // Sorting is the one per-sync cost that grows faster than the number of Services; skip it when no Service came or went.
    const sameKeys = groups.size === this.cache.size && [...groups.keys()].every((k) => this.cache.has(k));
    const keys = sameKeys ? this.sortedKeys : [...groups.keys()].sort();
    this.sortedKeys = keys;
    const parts: Model[] = [];
    for (const key of keys) {
      const g = groups.get(key)!;
      const inputs: object[] = [...g.services, ...g.endpointSlices, ...g.endpoints];
      const previous = this.cache.get(key);
      const cached = previous && sameInputs(previous.inputs, inputs) ? previous : { inputs, model: buildModel(g, opts) };
      next.set(key, cached);
      parts.push(cached.model);
    }
    this.cache = next;

    const origins = new Map(snapshot.services.map((s) => [groupKey(s), s.origin]));
    // Group keys sort by (namespace, name), the order buildModel gives.
    const claimed = claimFrontends(
      parts.flatMap((m) => m.servicePorts),
      (ns, name) => origins.get(`${ns}\0${name}`) ?? '',
    );
    return {
      servicePorts: claimed.servicePorts,
      ignored: parts.flatMap((m) => m.ignored),
      rejected: [...parts.flatMap((m) => m.rejected), ...claimed.rejected],
      nodeAddresses: sortedIPv4s(opts.nodePortAddresses),
    };
  }
}
