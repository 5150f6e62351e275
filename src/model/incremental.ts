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
import { buildModel, byHealthCheck, claimedElsewhere, frontendClaimKey, sizedArray, unaddressable } from './build.js';
import { sortedIPv4s } from './cluster-ip.js';
import { ServiceGroups, type Group } from './groups.js';
import type { HealthCheckNodePort, IgnoredService, Model, ModelOptions, ModelUpdate, Rejected, ServicePort, ServicePortRef } from './types.js';

/** A group's model, as much of it as is kept: 10,000 Services make 10,000 of these. */
interface Part {
  inputs: object[];
  servicePorts: ServicePort[];
  ignored: IgnoredService[];
  rejected: Rejected[];
  healthChecks: HealthCheckNodePort[];
  /** Where the group's Service came from, for rejections of its ports. */
  origin: string;
}

/** The list of a part that has nothing of a kind: one shared array rather than one empty array per part. */
const NONE: never[] = [];

/**
 * Where a service port stands after the claims: what is emitted and why
 * frontends were taken away. It is also what competes for its frontend keys
 * (ModelCache.claims); its Service (ownerOf) owns a key when it is first, and
 * another port of the same Service then loses that key without a rejection.
 */
interface Effective {
  /** orderOf(raw). */
  order: string;
  raw: ServicePort;
  /** frontendClaimKey of each of raw's frontends, made once rather than at every decision. */
  claimKeys: string[];
  emitted: ServicePort | undefined;
  rejected: Rejected[];
}

/** Model order of service ports: (namespace, name, port name, protocol), compared as buildModel does. */
function orderOf(sp: ServicePort): string {
  return `${sp.ref.namespace}\0${sp.ref.name}\0${sp.ref.portName}\0${sp.ref.protocol}`;
}

/** The Service a claim key belongs to, as buildModel's claimFrontends names it. */
function ownerOf(ref: ServicePortRef): string {
  return `${ref.namespace}/${ref.name}`;
}

function byOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * keys in byOrder order. Map keys keep the order groups arrived in, often
 * already sorted (a first sync lists them by name): checking costs a
 * comparison a key where sort() cost some 0.5 us a key at 10,000 Services.
 * sort() without a comparator orders strings by UTF-16 code units, as
 * byOrder does.
 */
function sorted(keys: string[]): string[] {
  for (let i = 1; i < keys.length; i++) if (keys[i - 1]! > keys[i]!) return keys.sort();
  return keys;
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
  return { sequence, full: () => model, rejected: model.rejected, healthChecks: model.healthChecks, servicePortCount: model.servicePorts.length };
}

export class ModelCache {
  private parts = new Map<string, Part>();
  /** Per frontend key, the service ports that claim it in model order. */
  private claims = new Map<string, Effective[]>();
  private effective = new Map<string, Effective>();
  /** Groups and service ports that hold rejections: listing them must not cost a pass over everything. */
  private rejectingGroups = new Set<string>();
  /** Groups whose Service has a health check node port: few, and listed at every update. */
  private healthCheckedGroups = new Set<string>();
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
      this.healthCheckedGroups = new Set();
      this.rejectingPorts = new Set();
      this.cachedNodeName = opts.nodeName;
      fresh = true;
    }
    const upserted: Array<ServicePort | IgnoredService> = [];
    const removed: Array<ServicePort | IgnoredService> = [];
    try {
      // Starting afresh, every group is new (a dirty key without a group has nothing to take out). The dirty ones
      // first, as every update takes them: the order of the keys is the order of `rejected` (and of its log lines).
      this.apply(groups, fresh ? freshOrder(groups, dirty) : [...dirty], fresh, opts, upserted, removed);
    } catch (err) {
      // Half-applied: start over on the next call.
      this.sequence = 0;
      throw err;
    }
    this.sequence = since + 1;
    const nodeAddresses = sortedIPv4s(opts.nodePortAddresses);
    let whole: Model | undefined;
    const rejected = this.rejected();
    const healthChecks = this.healthChecks();
    return {
      sequence: this.sequence,
      full: () => (whole ??= this.whole(nodeAddresses, rejected, healthChecks)),
      ...(fresh ? {} : { delta: { since, upserted, removed, nodeAddresses } }),
      rejected,
      healthChecks,
      servicePortCount: this.effective.size,
    };
  }

  /*
   * Indexed loops and forEach rather than for...of: a first sync runs these
   * loops before V8 optimizes them, and unoptimized for...of makes an object
   * per step (10 MB of them in a first sync at 10,000 Services).
   */
  private apply(
    groups: ServiceGroups,
    dirty: string[],
    fresh: boolean,
    opts: ModelOptions,
    upserted: Array<ServicePort | IgnoredService>,
    removed: Array<ServicePort | IgnoredService>,
  ): void {
    const goneRaw: ServicePort[] = [];
    const newRaw: ServicePort[] = [];
    for (let d = 0; d < dirty.length; d++) {
      const key = dirty[d]!;
      const group = groups.get(key);
      const previous = this.parts.get(key);
      const inputs = group ? inputsOf(group) : [];
      if (previous && sameInputs(previous.inputs, inputs)) continue;
      if (previous) {
        goneRaw.push(...previous.servicePorts);
        removed.push(...previous.ignored);
      }
      this.rejectingGroups.delete(key);
      this.healthCheckedGroups.delete(key);
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
        healthChecks: model.healthChecks.length ? model.healthChecks : NONE,
        origin: group.services[0]?.origin ?? '',
      });
      if (model.rejected.length) this.rejectingGroups.add(key);
      if (model.healthChecks.length) this.healthCheckedGroups.add(key);
      for (let i = 0; i < model.servicePorts.length; i++) newRaw.push(model.servicePorts[i]!);
      for (let i = 0; i < model.ignored.length; i++) upserted.push(model.ignored[i]!);
    }

    // Claims: take the old service ports out, put the new ones in, then re-decide every key they touch
    // (starting afresh, every service port once).
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
    const newOrders = sizedArray<string>(newRaw.length);
    for (let n = 0; n < newRaw.length; n++) {
      const sp = newRaw[n]!;
      const order = orderOf(sp);
      newOrders[n] = order;
      const claimKeys = sizedArray<string>(sp.frontends.length);
      for (let i = 0; i < claimKeys.length; i++) claimKeys[i] = frontendClaimKey(sp.frontends[i]!, sp.ref.protocol);
      const e: Effective = { order, raw: sp, claimKeys, emitted: undefined, rejected: NONE };
      this.effective.set(order, e);
      if (!fresh) reconsider.set(order, sp);
      if (unaddressable(sp) !== undefined) continue;
      for (let i = 0; i < claimKeys.length; i++) {
        const key = claimKeys[i]!;
        const list = this.claims.get(key);
        if (!fresh) touchedKeys.add(key);
        if (!list) {
          this.claims.set(key, [e]);
          continue;
        }
        let at = list.length;
        while (at > 0 && byOrder(list[at - 1]!.order, order) > 0) at--;
        list.splice(at, 0, e);
      }
    }
    if (fresh) {
      // Every claimant is new and every port is decided once: no set of keys to go back to nor map of ports to
      // make, 10,000 each at 10,000 Services.
      for (let n = 0; n < newRaw.length; n++) this.decide(newOrders[n]!, newRaw[n]!, upserted, removed);
      return;
    }
    touchedKeys.forEach((key) => {
      const list = this.claims.get(key);
      for (let i = 0; list !== undefined && i < list.length; i++) reconsider.set(list[i]!.order, list[i]!.raw);
    });
    reconsider.forEach((sp, order) => this.decide(order, sp, upserted, removed));
  }

  /** Emits a service port with the frontends it holds; an unchanged outcome emits nothing. */
  private decide(order: string, sp: ServicePort, upserted: Array<ServicePort | IgnoredService>, removed: Array<ServicePort | IgnoredService>): void {
    const e = this.effective.get(order)!;
    const tooMany = unaddressable(sp);
    let next: ServicePort | undefined;
    // Made when there is one: most service ports have none.
    let rejected: Rejected[] = NONE;
    if (tooMany !== undefined) {
      rejected = [this.rejection(sp, tooMany)];
    } else {
      // Made only when a frontend is lost: most service ports hold all of theirs.
      let frontends = sp.frontends;
      for (let i = 0; i < sp.frontends.length; i++) {
        const fe = sp.frontends[i]!;
        const first = this.claims.get(e.claimKeys[i]!)![0]!;
        if (first.order === order) {
          if (frontends !== sp.frontends) frontends.push(fe);
          continue;
        }
        const owner = ownerOf(first.raw.ref);
        if (owner !== ownerOf(sp.ref)) {
          if (rejected === NONE) rejected = [];
          rejected.push(this.rejection(sp, claimedElsewhere(fe, sp.ref.protocol, owner)));
        }
        if (frontends === sp.frontends) frontends = sp.frontends.slice(0, i);
      }
      const same =
        e.emitted !== undefined &&
        e.emitted.frontends.length === frontends.length &&
        e.emitted.frontends.every((fe, i) => fe === frontends[i]);
      next = same ? e.emitted : frontends.length === sp.frontends.length ? sp : { ...sp, frontends };
    }
    e.rejected = rejected;
    if (rejected.length) this.rejectingPorts.add(order);
    else this.rejectingPorts.delete(order);
    if (next === e.emitted) return;
    if (e.emitted) removed.push(e.emitted);
    if (next) upserted.push(next);
    e.emitted = next;
  }

  private rejection(sp: ServicePort, reason: string): Rejected {
    const { namespace, name } = sp.ref;
    return { kind: 'Service', namespace, name, origin: this.parts.get(`${namespace}\0${name}`)?.origin ?? '', reason };
  }

  private rejected(): Rejected[] {
    const out: Rejected[] = [];
    for (const key of this.rejectingGroups) out.push(...this.parts.get(key)!.rejected);
    for (const order of this.rejectingPorts) out.push(...this.effective.get(order)!.rejected);
    return out;
  }

  private healthChecks(): HealthCheckNodePort[] {
    const out: HealthCheckNodePort[] = [];
    for (const key of this.healthCheckedGroups) out.push(...this.parts.get(key)!.healthChecks);
    return out.sort(byHealthCheck);
  }

  private whole(nodeAddresses: string[], rejected: Rejected[], healthChecks: HealthCheckNodePort[]): Model {
    const servicePorts: ServicePort[] = [];
    const orders = sorted([...this.effective.keys()]);
    for (let i = 0; i < orders.length; i++) {
      const emitted = this.effective.get(orders[i]!)!.emitted;
      if (emitted) servicePorts.push(emitted);
    }
    const ignored: IgnoredService[] = [];
    const keys = sorted([...this.parts.keys()]);
    for (let i = 0; i < keys.length; i++) ignored.push(...this.parts.get(keys[i]!)!.ignored);
    return { servicePorts, ignored, rejected, healthChecks, nodeAddresses };
  }
}

/** Every group's key, the dirty ones first, in their own order. */
function freshOrder(groups: ServiceGroups, dirty: ReadonlySet<string>): string[] {
  const keys = [...dirty];
  for (const key of groups.keys()) if (!dirty.has(key)) keys.push(key);
  return keys;
}
