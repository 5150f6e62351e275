/**
 * The manifest-folder source: every *.yaml, *.yml and *.json file in one
 * folder, re-read whenever the folder changes. A burst of file events (an
 * editor saving, `cp` of many files) is coalesced into one reload.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { mergeSnapshots, parseManifestFile } from './manifest-parse.js';
import type { Source, SourceSnapshot } from './types.js';

const MANIFEST_FILE = /\.(ya?ml|json)$/;
/** Long enough to catch the rest of a burst, short enough to stay far under 200 ms. */
const SETTLE_MS = 15;

export class ManifestSource implements Source {
  private current: SourceSnapshot = { objects: { services: [], endpoints: [], endpointSlices: [] }, rejected: [] };
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reloading: Promise<void> | undefined;
  private again = false;

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {}

  async start(onChange: () => void): Promise<void> {
    this.watcher = watch(this.dir, () => this.scheduleReload(onChange));
    this.watcher.on('error', (err) => this.log.error({ dir: this.dir, err: err.message }, 'manifest folder watch failed'));
    await this.reload();
  }

  snapshot(): SourceSnapshot {
    return this.current;
  }

  /** A manifest folder has no Node objects. */
  node(): undefined {
    return undefined;
  }

  close(): void {
    this.watcher?.close();
    clearTimeout(this.timer);
  }

  private scheduleReload(onChange: () => void): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.reloadThenNotify(onChange), SETTLE_MS);
  }

  private async reloadThenNotify(onChange: () => void): Promise<void> {
    if (this.reloading) {
      this.again = true;
      return;
    }
    try {
      do {
        this.again = false;
        this.reloading = this.reload();
        await this.reloading;
      } while (this.again);
      onChange();
    } catch (err) {
      this.log.error({ dir: this.dir, err: (err as Error).message }, 'manifest folder reload failed; keeping the previous state');
    } finally {
      this.reloading = undefined;
    }
  }

  private async reload(): Promise<void> {
    const names = (await readdir(this.dir)).filter((n) => MANIFEST_FILE.test(n)).sort();
    const parts = [];
    const rejected = [];
    for (const name of names) {
      const path = join(this.dir, name);
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (err) {
        // Removed between readdir and read: the next event reloads again.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const parsed = parseManifestFile(path, text);
      parts.push(parsed.objects);
      rejected.push(...parsed.rejected);
    }
    this.current = { objects: mergeSnapshots(parts), rejected };
  }
}
