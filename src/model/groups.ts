/**
 * The objects of each Service, kept grouped as they arrive, with the groups
 * touched since the model last looked. A Service's model depends only on
 * its own group (the Service, its EndpointSlices, its Endpoints), so a
 * change costs one group's worth of work however many Services there are.
 * Pure data structure: the watch feeds it, the model cache reads it.
 */
import type { EndpointSlice, Endpoints, ObjectSnapshot, Origin, Service } from '../k8s/types.js';
import { SERVICE_NAME_LABEL } from '../k8s/types.js';
import { sizedArray } from './build.js';

export interface Group {
  services: Array<Service & Origin>;
  endpointSlices: Array<EndpointSlice & Origin>;
  endpoints: Array<Endpoints & Origin>;
}

export type GroupedKind = keyof Group;

type Named = { metadata?: { namespace?: string; name?: string; labels?: Record<string, string> } } | undefined;

function metaOf(obj: Named): { namespace?: string; name?: string; labels?: Record<string, string> } | undefined {
  return obj && typeof obj === 'object' && obj.metadata && typeof obj.metadata === 'object' ? obj.metadata : undefined;
}

/**
 * The group an object belongs to: "namespace NUL service name". NUL sorts
 * before every name character, so sorting keys sorts by (namespace, name).
 * A slice without the service-name label gets a group of its own, where
 * buildModel rejects it with the reason.
 */
export function groupKeyOf(kind: GroupedKind, obj: Named): string {
  const meta = metaOf(obj);
  const namespace = meta?.namespace ?? 'default';
  if (kind !== 'endpointSlices') return `${namespace}\0${meta?.name ?? ''}`;
  const service = meta?.labels && typeof meta.labels === 'object' ? meta.labels[SERVICE_NAME_LABEL] : undefined;
  return `${namespace}\0${typeof service === 'string' ? service : `(unlabelled) ${meta?.name ?? ''}`}`;
}

function objectId(kind: GroupedKind, obj: Named): string {
  const meta = metaOf(obj);
  return `${kind}\0${meta?.namespace ?? 'default'}\0${meta?.name ?? ''}`;
}

/**
 * list and obj in a new array of just that length: an array pushed to keeps
 * room for 16 more elements, and every group has its lists.
 */
function appended<T>(list: readonly T[], obj: T): T[] {
  const out = sizedArray<T>(list.length + 1);
  for (let i = 0; i < list.length; i++) out[i] = list[i]!;
  out[list.length] = obj;
  return out;
}

export class ServiceGroups {
  private readonly groups = new Map<string, Group>();
  /** Object identity -> the group it was filed under (a slice's label can move it). */
  private readonly filedUnder = new Map<string, string>();
  private dirty = new Set<string>();

  /** Adds or replaces an object (identified by kind, namespace and name). */
  set(kind: GroupedKind, obj: Group[GroupedKind][number]): void {
    const id = objectId(kind, obj);
    const key = groupKeyOf(kind, obj);
    const previous = this.filedUnder.get(id);
    if (previous !== undefined) this.removeFrom(previous, kind, id);
    let group = this.groups.get(key);
    if (!group) this.groups.set(key, (group = { services: [], endpointSlices: [], endpoints: [] }));
    (group as Record<GroupedKind, Array<typeof obj>>)[kind] = appended(group[kind] as Array<typeof obj>, obj);
    this.filedUnder.set(id, key);
    this.dirty.add(key);
  }

  delete(kind: GroupedKind, obj: Named): void {
    const id = objectId(kind, obj);
    const previous = this.filedUnder.get(id);
    if (previous === undefined) return;
    this.removeFrom(previous, kind, id);
    this.filedUnder.delete(id);
  }

  /** Makes the groups hold exactly the snapshot's objects; only groups whose objects differ (by reference) become dirty. */
  replaceAll(snapshot: ObjectSnapshot): void {
    const seen = new Set<string>();
    const kinds: Array<[GroupedKind, readonly Named[]]> = [
      ['services', snapshot.services],
      ['endpointSlices', snapshot.endpointSlices],
      ['endpoints', snapshot.endpoints],
    ];
    for (const [kind, objects] of kinds) {
      for (const obj of objects) {
        const id = objectId(kind, obj);
        seen.add(id);
        const key = this.filedUnder.get(id);
        if (key !== undefined && (this.groups.get(key)![kind] as Named[]).includes(obj)) continue;
        this.set(kind, obj as Group[GroupedKind][number]);
      }
    }
    for (const [id, key] of [...this.filedUnder]) {
      if (seen.has(id)) continue;
      this.removeFrom(key, id.slice(0, id.indexOf('\0')) as GroupedKind, id);
      this.filedUnder.delete(id);
    }
  }

  get(key: string): Group | undefined {
    return this.groups.get(key);
  }

  keys(): IterableIterator<string> {
    return this.groups.keys();
  }

  /** The groups changed since the last call (including groups that are now gone). */
  takeDirty(): Set<string> {
    const dirty = this.dirty;
    this.dirty = new Set();
    return dirty;
  }

  private removeFrom(key: string, kind: GroupedKind, id: string): void {
    const group = this.groups.get(key)!;
    const list = group[kind] as Named[];
    const at = list.findIndex((o) => objectId(kind, o) === id);
    if (at >= 0) list.splice(at, 1);
    if (group.services.length + group.endpointSlices.length + group.endpoints.length === 0) this.groups.delete(key);
    this.dirty.add(key);
  }
}
