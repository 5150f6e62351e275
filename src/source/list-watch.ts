/**
 * List and watch of one resource, as client-go's reflector does it: list in
 * pages, then watch from the list's resourceVersion; a watch that ends is
 * resumed from the last resourceVersion seen, 410 Gone lists again, any
 * other failure is retried with backoff while the last objects stay.
 *
 * The store holds objects as `slim` returns them, one copy each: the raw
 * JSON of a page or an event is dropped once slimmed.
 */
import http from 'node:http';
import https from 'node:https';
import type { Logger } from 'pino';
import type { KubeConnection } from './kube-connection.js';

/** Objects per list page, as client-go's reflector: the agent never holds the whole list's JSON at once. */
const PAGE_SIZE = 500;
/** Server-side watch timeout; client-go picks 5-10 minutes at random so that watches of many clients do not end together. */
const WATCH_TIMEOUT_MIN_S = 300;
/** With no byte for this long past the watch's own timeout, the connection is presumed dead. */
const IDLE_GRACE_MS = 60_000;

export interface Named {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
}

/** A failed request, with the HTTP status or the status of an in-stream ERROR event. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly statusCode: number | undefined,
  ) {
    super(message);
  }
}

const isGone = (err: unknown): boolean => err instanceof ApiError && err.statusCode === 410;

export interface ListWatchOptions<T extends Named> {
  /** For log lines. */
  resource: string;
  /** Collection path, e.g. /api/v1/services. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** What the store keeps of an object. */
  slim: (raw: unknown) => T;
  /** An object new, or changed (by resourceVersion). */
  onUpsert: (obj: T) => void;
  /** The stored object, now gone. */
  onDelete: (obj: T) => void;
  log: Logger;
  retryMinMs: number;
  retryMaxMs: number;
}

interface Status {
  code?: unknown;
  message?: unknown;
}

/** GETs path and resolves with the response once its headers are in; non-2xx statuses reject with the server's message. */
async function get(conn: KubeConnection, path: string, query: Record<string, string | undefined>, signal: AbortSignal): Promise<http.IncomingMessage> {
  const url = new URL(path, conn.server);
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
  const options = { ...(await conn.requestOptions()), method: 'GET', signal };
  const send = url.protocol === 'http:' ? http.request : https.request;
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = send(url, options, resolve);
    req.once('error', reject);
    req.end();
  });
  const code = res.statusCode ?? 0;
  if (code >= 200 && code < 300) return res;
  const body = await readBody(res).catch(() => '');
  let message = body;
  try {
    const status = JSON.parse(body) as Status;
    if (typeof status.message === 'string') message = status.message;
  } catch {
    // Not a Status: the body as it is.
  }
  throw new ApiError(`${code} ${http.STATUS_CODES[code] ?? ''} ${message}`.trim(), code);
}

async function readBody(res: http.IncomingMessage): Promise<string> {
  res.setEncoding('utf8');
  let body = '';
  for await (const chunk of res) body += chunk as string;
  return body;
}

/** Whether `path` is served: false on 404 (the group or version is not there), throws on any other failure. */
export async function isServed(conn: KubeConnection, path: string): Promise<boolean> {
  const controller = new AbortController();
  try {
    await readBody(await get(conn, path, { limit: '1' }, controller.signal));
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.statusCode === 404) return false;
    throw err;
  } finally {
    controller.abort();
  }
}

/** Built by join, which makes one flat string; a template literal would keep a rope of its parts. */
const keyOf = (obj: Named): string => [obj.metadata?.namespace ?? '', obj.metadata?.name ?? ''].join('/');

export class ListWatch<T extends Named> {
  private readonly store = new Map<string, T>();
  private resourceVersion = '';
  /** After the first list, a relist (our resourceVersion is gone) must not go back in time: it reads from etcd. */
  private listedOnce = false;
  private retryDelay: number;
  private stopped = false;
  /** Aborts the request in flight and a backoff wait. */
  private controller = new AbortController();
  private listed!: () => void;
  /** Settles once the first list is stored, however many attempts that takes. */
  readonly firstList = new Promise<void>((resolve) => (this.listed = resolve));

  constructor(
    private readonly conn: KubeConnection,
    private readonly opts: ListWatchOptions<T>,
  ) {
    this.retryDelay = opts.retryMinMs;
  }

  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.controller.abort();
  }

  list(): IterableIterator<T> {
    return this.store.values();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      this.controller = new AbortController();
      try {
        if (this.resourceVersion === '') await this.relist();
        await this.watch();
      } catch (err) {
        if (this.stopped) return;
        if (isGone(err)) {
          // Our resourceVersion is older than the server keeps: start over from a fresh list.
          this.resourceVersion = '';
          continue;
        }
        const e = err as { message?: string; code?: unknown };
        this.opts.log.warn(
          { resource: this.opts.resource, err: e?.message ?? String(err), code: err instanceof ApiError ? err.statusCode : e?.code, retryInMs: this.retryDelay },
          'watch failed; serving the last known state and retrying',
        );
        await this.pause(this.retryDelay);
        this.retryDelay = Math.min(this.retryDelay * 2, this.opts.retryMaxMs);
      }
    }
  }

  private pause(ms: number): Promise<void> {
    const signal = this.controller.signal;
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }

  private query(extra: Record<string, string | undefined>): Record<string, string | undefined> {
    return { labelSelector: this.opts.labelSelector, fieldSelector: this.opts.fieldSelector, ...extra };
  }

  /** Lists every page, then makes the store match: deletes for what is gone, upserts for what is new or changed. */
  private async relist(): Promise<void> {
    const fresh = new Map<string, T>();
    let continueToken: string | undefined;
    let resourceVersion = '';
    // As client-go's reflector: the first list of a run asks for resourceVersion 0, which the API
    // server answers from its watch cache, so a DaemonSet starting on every node does not read etcd
    // once per node; later pages follow the continue token, which carries its own version.
    const first = this.listedOnce ? {} : { resourceVersion: '0' };
    do {
      const res = await get(
        this.conn,
        this.opts.path,
        this.query({ limit: String(PAGE_SIZE), continue: continueToken, ...(continueToken === undefined ? first : {}) }),
        this.controller.signal,
      );
      const page = JSON.parse(await readBody(res)) as { metadata?: { resourceVersion?: string; continue?: string }; items?: unknown[] };
      for (const raw of page.items ?? []) {
        const obj = this.slimmed(raw);
        if (obj !== undefined) fresh.set(keyOf(obj), obj);
      }
      continueToken = page.metadata?.continue || undefined;
      resourceVersion = page.metadata?.resourceVersion ?? '';
    } while (continueToken !== undefined);

    for (const [key, old] of this.store) {
      if (fresh.has(key)) continue;
      this.store.delete(key);
      this.opts.onDelete(old);
    }
    for (const [key, obj] of fresh) this.upsert(key, obj);
    this.resourceVersion = resourceVersion;
    this.listedOnce = true;
    this.retryDelay = this.opts.retryMinMs;
    this.listed();
  }

  /** The object as the store keeps it; one without a name is logged and skipped. */
  private slimmed(raw: unknown): T | undefined {
    const obj = this.opts.slim(raw);
    if (typeof obj?.metadata?.name === 'string' && obj.metadata.name !== '') return obj;
    this.opts.log.warn({ resource: this.opts.resource }, 'skipping an object without metadata.name');
    return undefined;
  }

  /** Stores obj unless the stored copy has the same resourceVersion (a relist of unchanged objects changes nothing). */
  private upsert(key: string, obj: T): void {
    const old = this.store.get(key);
    const version = obj.metadata?.resourceVersion;
    if (old !== undefined && version !== undefined && old.metadata?.resourceVersion === version) return;
    this.store.set(key, obj);
    this.opts.onUpsert(obj);
  }

  /** One watch request: resolves when the server ends it, rejects on failure (ApiError 410 when our resourceVersion is too old). */
  private async watch(): Promise<void> {
    const timeoutSeconds = WATCH_TIMEOUT_MIN_S + Math.floor(Math.random() * WATCH_TIMEOUT_MIN_S);
    const res = await get(
      this.conn,
      this.opts.path,
      this.query({ watch: 'true', resourceVersion: this.resourceVersion, allowWatchBookmarks: 'true', timeoutSeconds: String(timeoutSeconds) }),
      this.controller.signal,
    );
    this.retryDelay = this.opts.retryMinMs;
    res.socket.setKeepAlive(true, 30_000);
    res.socket.setTimeout(timeoutSeconds * 1000 + IDLE_GRACE_MS, () => res.destroy(new Error('watch idle past its timeout')));
    res.setEncoding('utf8');
    let pending = '';
    try {
      for await (const chunk of res) {
        pending += chunk as string;
        let start = 0;
        for (let end = pending.indexOf('\n'); end >= 0; end = pending.indexOf('\n', start)) {
          const line = pending.slice(start, end);
          start = end + 1;
          if (line.trim() !== '') this.onEvent(line);
        }
        pending = pending.slice(start);
      }
    } finally {
      res.socket.setTimeout(0);
      res.destroy();
    }
  }

  private onEvent(line: string): void {
    let event: { type?: unknown; object?: unknown };
    try {
      event = JSON.parse(line) as typeof event;
    } catch {
      this.opts.log.warn({ resource: this.opts.resource, line: line.slice(0, 200) }, 'skipping a watch event that is not JSON');
      return;
    }
    if (event.type === 'ERROR') {
      const status = (event.object ?? {}) as Status;
      throw new ApiError(`watch: ${typeof status.message === 'string' ? status.message : 'ERROR event'}`, typeof status.code === 'number' ? status.code : undefined);
    }
    const version = (event.object as Named | undefined)?.metadata?.resourceVersion;
    if (event.type === 'ADDED' || event.type === 'MODIFIED') {
      const obj = this.slimmed(event.object);
      if (obj !== undefined) this.upsert(keyOf(obj), obj);
    } else if (event.type === 'DELETED') {
      const gone = this.slimmed(event.object);
      const key = gone === undefined ? undefined : keyOf(gone);
      const old = key === undefined ? undefined : this.store.get(key);
      if (key !== undefined && old !== undefined) {
        this.store.delete(key);
        this.opts.onDelete(old);
      }
    } else if (event.type !== 'BOOKMARK') {
      this.opts.log.warn({ resource: this.opts.resource, type: event.type }, 'skipping a watch event of unknown type');
      return;
    }
    if (typeof version === 'string' && version !== '') this.resourceVersion = version;
  }
}
