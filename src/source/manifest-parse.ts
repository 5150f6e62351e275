/**
 * Parses one manifest file (YAML or JSON) into the objects kpx reads. Pure:
 * the caller reads the file; this only turns text into objects and
 * rejections. Nothing throws: a bad file or document becomes a Rejected.
 */

import { loadAll } from 'js-yaml';
import type { Endpoints, EndpointSlice, ObjectSnapshot, Origin, Service } from '../k8s/types.js';
import type { Rejected } from '../model/types.js';

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const WANT_API_VERSION: Record<string, string> = {
  Service: 'v1',
  Endpoints: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
};

/** Lists may nest (a List of Lists); this bounds the recursion on hostile input. */
const MAX_LIST_DEPTH = 8;

function firstLine(msg: string): string {
  const line = msg.split('\n', 1)[0]?.trim() ?? '';
  return line === '' ? 'parse error' : line;
}

function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

export function emptySnapshot(): ObjectSnapshot {
  return { services: [], endpoints: [], endpointSlices: [] };
}

export function parseManifestFile(path: string, text: string): { objects: ObjectSnapshot; rejected: Rejected[] } {
  const objects = emptySnapshot();
  const rejected: Rejected[] = [];
  const fileReject = (reason: string): void => {
    rejected.push({ kind: 'File', namespace: '', name: path, origin: path, reason });
  };

  let docs: unknown[];
  try {
    if (path.toLowerCase().endsWith('.json')) {
      const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
      docs = body.trim() === '' ? [] : [JSON.parse(body) as unknown];
    } else {
      docs = loadAll(text);
    }
  } catch (e) {
    fileReject(firstLine(errorMessage(e)));
    return { objects, rejected };
  }

  const visit = (doc: unknown, where: string, depth: number): void => {
    if (doc === null || doc === undefined) return; // empty document
    if (!isObj(doc)) {
      fileReject(`${where} is not an object`);
      return;
    }
    const meta = isObj(doc.metadata) ? doc.metadata : {};
    const name = typeof meta.name === 'string' ? meta.name : '';
    const namespace = typeof meta.namespace === 'string' ? meta.namespace : '';
    const kind = doc.kind;
    const reject = (k: string, reason: string): void => {
      rejected.push({ kind: k, namespace, name, origin: path, reason });
    };
    if (typeof kind !== 'string' || kind === '') {
      reject('Unknown', `${where}: missing kind`);
      return;
    }
    if (kind === 'List' || (kind.endsWith('List') && Array.isArray(doc.items))) {
      if (!Array.isArray(doc.items)) {
        reject(kind, `${where}: ${kind} without an items list`);
        return;
      }
      if (depth >= MAX_LIST_DEPTH) {
        reject(kind, `${where}: lists nested too deeply`);
        return;
      }
      doc.items.forEach((item: unknown, i: number) => visit(item, `${where}.items[${i}]`, depth + 1));
      return;
    }
    const want = WANT_API_VERSION[kind];
    if (want === undefined || !Object.prototype.hasOwnProperty.call(WANT_API_VERSION, kind)) {
      reject(kind, `unsupported kind ${kind}`);
      return;
    }
    if (doc.apiVersion !== want) {
      const got = typeof doc.apiVersion === 'string' ? doc.apiVersion : JSON.stringify(doc.apiVersion ?? null);
      reject(kind, `unsupported apiVersion ${got} for ${kind} (want ${want})`);
      return;
    }
    const withOrigin = { ...doc, origin: path };
    switch (kind) {
      case 'Service':
        objects.services.push(withOrigin as Service & Origin);
        break;
      case 'Endpoints':
        objects.endpoints.push(withOrigin as Endpoints & Origin);
        break;
      case 'EndpointSlice':
        objects.endpointSlices.push(withOrigin as EndpointSlice & Origin);
        break;
    }
  };

  docs.forEach((doc, i) => visit(doc, docs.length > 1 ? `document ${i + 1}` : 'document', 0));
  return { objects, rejected };
}

/** Concatenates snapshots, in the order given. */
export function mergeSnapshots(parts: ObjectSnapshot[]): ObjectSnapshot {
  const out = emptySnapshot();
  for (const p of parts) {
    out.services.push(...p.services);
    out.endpoints.push(...p.endpoints);
    out.endpointSlices.push(...p.endpointSlices);
  }
  return out;
}
