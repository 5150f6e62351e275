/**
 * buildModel, kept up to date per Service. The model of one Service depends
 * only on that Service's group of objects (ServiceGroups), so an update
 * rebuilds the groups that changed and nothing else, and says what changed
 * (ModelDelta): a single change costs one Service's worth of work whatever
 * the number of Services.
 *
 * What spans Services is kept as an index rather than redone: frontend
 * claims (one address:port/protocol leads to one service port, the first
 * in model order) are held per frontend key, and a change re-decides only
 * the keys the changed service ports use. ClusterIP and nodePort
 * allocation span Services too, so when either is on (manifest mode, small
 * folders) build() falls back to buildModel over everything. A Service's
 * model also depends on the node name (which endpoints are local), so a
 * different node name starts the cache afresh.
 */
import type { ObjectSnapshot } from '../k8s/types.js';
import { buildModel, claimedElsewhere, frontendClaimKey, sizedArray, unaddressable } from './build.js';
import { sortedIPv4s } from './cluster-ip.js';
import { ServiceGroups, type Group } from './groups.js';
import type { IgnoredService, Model, ModelOptions, ModelUpdate, Rejected, ServicePort } from './types.js';

/** A group's model, as much of it as is kept: 10,000 Services make 10,000 of these. */
interface Part {
  inputs: object[];
  servicePorts: ServicePort[];
  ignored: IgnoredService[];
  rejected: Rejected[];
  /** Where the group's Service came from, for rejections of its ports. */
  origin: string;
}

/** The list of a part that has nothing of a kind: one shared array rather than one empty array per part. */
const NONE: never[] = [];

/** A service port competing for a frontend key. */
interface Claimant {
  order: string;
  owner: string;
}

/** Where a service port stands after the claims: what is emitted and why frontends were taken away. */
interface Effective {
  raw: ServicePort;
  emitted: ServicePort | undefined;
  rejected: Rejected[];
}

/** Model order of service ports: (namespace, name, port name, protocol), compared as buildModel does. */
function orderOf(sp: ServicePort): string {
  return `${sp.ref.namespace}\0${sp.ref.name}\0${sp.ref.portName}\0${sp.ref.protocol}`;
}

function byOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sameInputs(a: object[], b: object[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Exactly as long as it needs to be: it is kept, one per group. */
function inputsOf(g: Group): object[] {
  const inputs = sizedArray<object>(g.services.length + g.endpointSlices.length + g.endpoints.length);
  let at = 0;
  for (const list of [g.services, g.endpointSlices, g.endpoints]) for (const obj of list) inputs[at++] = obj;
  return inputs;
}

/** The whole model as a datapath that starts over takes it, with no delta. */
export function wholeModel(model: Model, sequence = 0): ModelUpdate {
  return { sequence, full: () => model, rejected: model.rejected, servicePortCount: model.servicePorts.length };
}

export class ModelCache {
  private parts = new Map<string, Part>();
  private claims = new Map<string, Claimant[]>();
  private effective = new Map<string, Effective>();
  /** Groups and service ports that hold rejections: listing them must not cost a pass over everything. */
  private rejectingGroups = new Set<string>();
  private rejectingPorts = new Set<string>();
  private cachedNodeName: string | undefined;
  private sequence = 0;
  /** The groups build() files a snapshot into. */
  private readonly snapshotGroups = new ServiceGroups();

  /** The whole model of a snapshot (manifest folders, tests, tools). */
  build(snapshot: ObjectSnapshot, opts: ModelOptions): Model {
    if (opts.allocateClusterIPs || opts.allocateNodePorts) return buildModel(snapshot, opts);
    this.snapshotGroups.replaceAll(snapshot);
    return this.update(this.snapshotGroups, opts).full();
  }

  /**
   * Brings the model up to date with the groups that changed since the last
   * call and says what changed. The first call (or a new node name) takes
   * every group.
   */
  update(groups: ServiceGroups, opts: ModelOptions): ModelUpdate {
    const dirty = groups.takeDirty();
    const since = this.sequence;
    let fresh = false;
    if (opts.nodeName !== this.cachedNodeName || this.sequence === 0) {
      this.parts = new Map();
      this.claims = new Map();
      this.effective = new Map();
      this.rejectingGroups = new Set();
      this.rejectingPorts = new Set();
      this.cachedNodeName = opts.nodeName;
      fresh = true;
      for (const key of groups.keys()) dirty.add(key);
    }
    const upserted: Array<ServicePort | IgnoredService> = [];
    const removed: Array<ServicePort | IgnoredService> = [];
    try {
      this.apply(groups, dirty, opts, upserted, removed);
    } catch (err) {
      // Half-applied: start over on the next call.
      this.sequence = 0;
      throw err;
    }
    this.sequence = since + 1;
    const nodeAddresses = sortedIPv4s(opts.nodePortAddresses);
    let whole: Model | undefined;
    const rejected = this.rejected();
    return {
      sequence: this.sequence,
      full: () => (whole ??= this.whole(nodeAddresses, rejected)),
      ...(fresh ? {} : { delta: { since, upserted, removed, nodeAddresses } }),
      rejected,
      servicePortCount: this.effective.size,
    };
  }

  private apply(
    groups: ServiceGroups,
    dirty: Set<string>,
    opts: ModelOptions,
    upserted: Array<ServicePort | IgnoredService>,
    removed: Array<ServicePort | IgnoredService>,
  ): void {
    const goneRaw: ServicePort[] = [];
    const newRaw: ServicePort[] = [];
    for (const key of dirty) {
      const group = groups.get(key);
      const previous = this.parts.get(key);
      const inputs = group ? inputsOf(group) : [];
      if (previous && sameInputs(previous.inputs, inputs)) continue;
      if (previous) {
        goneRaw.push(...previous.servicePorts);
        removed.push(...previous.ignored);
      }
      this.rejectingGroups.delete(key);
      if (!group) {
        this.parts.delete(key);
        continue;
      }
      const model = buildModel(group, opts);
      this.parts.set(key, {
        inputs,
        servicePorts: model.servicePorts.length ? model.servicePorts : NONE,
        ignored: model.ignored.length ? model.ignored : NONE,
        rejected: model.rejected.length ? model.rejected : NONE,
        origin: group.services[0]?.origin ?? '',
      });
      if (model.rejected.length) this.rejectingGroups.add(key);
      newRaw.push(...model.servicePorts);
      upserted.push(...model.ignored);
    }

    // Claims: take the old service ports out, put the new ones in, then re-decide every key they touch.
    const touchedKeys = new Set<string>();
    const reconsider = new Map<string, ServicePort>();
    for (const sp of goneRaw) {
      const order = orderOf(sp);
      for (const fe of sp.frontends) {
        const key = frontendClaimKey(fe, sp.ref.protocol);
        const list = this.claims.get(key);
        if (!list) continue;
        const at = list.findIndex((c) => c.order === order);
        if (at >= 0) list.splice(at, 1);
        if (list.length === 0) this.claims.delete(key);
        touchedKeys.add(key);
      }
      const was = this.effective.get(order);
      if (was?.emitted) removed.push(was.emitted);
      this.effective.delete(order);
      this.rejectingPorts.delete(order);
    }
    for (const sp of newRaw) {
      const order = orderOf(sp);
      this.effective.set(order, { raw: sp, emitted: undefined, rejected: NONE });
      reconsider.set(order, sp);
      if (unaddressable(sp) !== undefined) continue;
      const owner = `${sp.ref.namespace}/${sp.ref.name}`;
      for (const fe of sp.frontends) {
        const key = frontendClaimKey(fe, sp.ref.protocol);
        const list = this.claims.get(key);
        touchedKeys.add(key);
        if (!list) {
          this.claims.set(key, [{ order, owner }]);
          continue;
        }
        let at = list.length;
        while (at > 0 && byOrder(list[at - 1]!.order, order) > 0) at--;
        list.splice(at, 0, { order, owner });
      }
    }
    for (const key of touchedKeys) {
      for (const c of this.claims.get(key) ?? []) {
        const e = this.effective.get(c.order);
        if (e) reconsider.set(c.order, e.raw);
      }
    }
    for (const [order, sp] of reconsider) this.decide(order, sp, upserted, removed);
  }

  /** Emits a service port with the frontends it holds; an unchanged outcome emits nothing. */
  private decide(order: string, sp: ServicePort, upserted: Array<ServicePort | IgnoredService>, removed: Array<ServicePort | IgnoredService>): void {
    const e = this.effective.get(order)!;
    const reject = (reason: string): Rejected => ({
      kind: 'Service',
      namespace: sp.ref.namespace,
      name: sp.ref.name,
      origin: this.parts.get(`${sp.ref.namespace}\0${sp.ref.name}`)?.origin ?? '',
      reason,
    });
    const tooMany = unaddressable(sp);
    let next: ServicePort | undefined;
    const rejected: Rejected[] = [];
    if (tooMany !== undefined) {
      rejected.push(reject(tooMany));
    } else {
      const owner = `${sp.ref.namespace}/${sp.ref.name}`;
      // Made only when a frontend is lost: most service ports hold all of theirs.
      let frontends = sp.frontends;
      sp.frontends.forEach((fe, i) => {
        const first = this.claims.get(frontendClaimKey(fe, sp.ref.protocol))![0]!;
        if (first.order === order) {
          if (frontends !== sp.frontends) frontends.push(fe);
          return;
        }
        if (first.owner !== owner) rejected.push(reject(claimedElsewhere(fe, sp.ref.protocol, first.owner)));
        if (frontends === sp.frontends) frontends = sp.frontends.slice(0, i);
      });
      const same =
        e.emitted !== undefined &&
        e.emitted.frontends.length === frontends.length &&
        e.emitted.frontends.every((fe, i) => fe === frontends[i]);
      next = same ? e.emitted : frontends.length === sp.frontends.length ? sp : { ...sp, frontends };
    }
    e.rejected = rejected.length ? rejected : NONE;
    if (rejected.length) this.rejectingPorts.add(order);
    else this.rejectingPorts.delete(order);
    if (next === e.emitted) return;
    if (e.emitted) removed.push(e.emitted);
    if (next) upserted.push(next);
    e.emitted = next;
  }

  private rejected(): Rejected[] {
    const out: Rejected[] = [];
    for (const key of this.rejectingGroups) out.push(...this.parts.get(key)!.rejected);
    for (const order of this.rejectingPorts) out.push(...this.effective.get(order)!.rejected);
    return out;
  }

  private whole(nodeAddresses: string[], rejected: Rejected[]): Model {
    // sort() without a comparator orders strings by UTF-16 code units, as byOrder does, without a call per comparison.
    const servicePorts: ServicePort[] = [];
    for (const order of [...this.effective.keys()].sort()) {
      const emitted = this.effective.get(order)!.emitted;
      if (emitted) servicePorts.push(emitted);
    }
    const ignored: IgnoredService[] = [];
    for (const key of [...this.parts.keys()].sort()) ignored.push(...this.parts.get(key)!.ignored);
    return { servicePorts, ignored, rejected, nodeAddresses };
  }
}
