import type { NodeFacts } from '../health/proxy-health.js';
import type { ObjectSnapshot } from '../k8s/types.js';
import type { Rejected } from '../model/types.js';

export interface SourceSnapshot {
  objects: ObjectSnapshot;
  /** Objects the source could not even read (bad files, unknown kinds). */
  rejected: Rejected[];
}

/** What changed, where a source can tell: a Service, or the endpoints of one (kube-proxy counts the two apart). */
export type ChangeKind = 'service' | 'endpoints';

/** Where Services and endpoints come from: a manifest folder or the API server. */
export interface Source {
  /** Resolves once the first complete view is available; onChange fires after every later change. */
  start(onChange: (kind?: ChangeKind) => void): Promise<void>;
  snapshot(): SourceSnapshot;
  /** This node's Node object, where the source has one (an API server). */
  node(): NodeFacts | undefined;
  close(): void;
}
