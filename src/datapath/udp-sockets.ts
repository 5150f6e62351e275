/**
 * Connected UDP sockets whose backend left their Service are aborted
 * (bpf/kpx_iter.c says why and how), in every network namespace that has a
 * process in the agent's cgroup: the iterator walks the namespace of the
 * process that opens it, so one short `nsenter ... cat` per namespace
 * opens and reads it. A sweep is asked for after a sync that changed UDP
 * Services; requests that come while one runs make one more.
 */
import { execFile } from 'node:child_process';
import { closeSync, existsSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import * as bpf from './libbpf.js';
import { openOnPinnedMaps } from './pinned-maps.js';

/** enum bpf_attach_type BPF_TRACE_ITER. */
const TRACE_ITER = 28;
const PROGRAM = 'kpx_udp_stale_sockets';

/** Where the iterator's link is pinned, under the agent's bpffs. */
export function sweepPinPath(bpffs: string): string {
  return join(bpffs, PROGRAM);
}

/** The network namespaces of the processes in a cgroup and its children: one /proc path per namespace. */
export function cgroupNetns(cgroup: string): string[] {
  const byInode = new Map<number, string>();
  const visit = (dir: string) => {
    let procs: string;
    try {
      procs = readFileSync(join(dir, 'cgroup.procs'), 'utf8');
    } catch {
      return; // removed meanwhile
    }
    for (const pid of procs.split('\n')) {
      if (pid === '') continue;
      const path = `/proc/${pid}/ns/net`;
      try {
        const { ino } = statSync(path);
        if (!byInode.has(ino)) byInode.set(ino, path);
      } catch {
        // exited meanwhile
      }
    }
    for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) visit(join(dir, entry.name));
  };
  visit(cgroup);
  return [...byInode.values()];
}

export interface SweepOptions {
  bpffs: string;
  /** The object, bpf/kpx_iter.o. */
  objectPath: string;
  cgroup: string;
  log: Logger;
}

export class StaleUdpSocketSweeper {
  private running = false;
  private again = false;
  private closed = false;

  private constructor(
    private readonly opts: SweepOptions,
    private readonly obj: bpf.BpfObjectPtr,
    private readonly pin: string,
  ) {}

  /** Loads the iterator on the agent's maps and pins its link (an earlier agent's pin is replaced). */
  static open(opts: SweepOptions): StaleUdpSocketSweeper {
    const obj = openOnPinnedMaps(opts.objectPath, opts.bpffs);
    const pin = sweepPinPath(opts.bpffs);
    let link: number | undefined;
    try {
      link = bpf.linkCreate(bpf.programFd(bpf.findProgram(obj, PROGRAM)), 0, TRACE_ITER);
      if (existsSync(pin)) unlinkSync(pin);
      bpf.objPin(link, pin);
    } catch (err) {
      bpf.closeObject(obj);
      throw err;
    } finally {
      // The pin holds the link from here on.
      if (link !== undefined) closeSync(link);
    }
    return new StaleUdpSocketSweeper(opts, obj, pin);
  }

  /** Asks for a sweep; one that is running finishes first, then one more runs. */
  request(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.runUntilQuiet();
  }

  /** A sweep running goes on with what it opened (the kernel holds the iterator) and stops after it. */
  close(): void {
    this.closed = true;
    if (existsSync(this.pin)) unlinkSync(this.pin);
    bpf.closeObject(this.obj);
  }

  private async runUntilQuiet(): Promise<void> {
    try {
      do {
        this.again = false;
        await this.sweep();
      } while (this.again && !this.closed);
    } catch (err) {
      // The next request tries again; the agent goes on.
      this.opts.log.warn({ err: (err as Error).message }, 'stale UDP socket sweep failed');
    } finally {
      this.running = false;
    }
  }

  /** Reads the iterator once in each namespace; it writes one byte per socket it aborts. */
  private async sweep(): Promise<void> {
    const started = performance.now();
    const namespaces = cgroupNetns(this.opts.cgroup);
    let aborted = 0;
    for (const netns of namespaces) {
      try {
        aborted += await readIterator(netns, this.pin);
      } catch (err) {
        // A namespace whose processes all exited meanwhile; the others still count.
        this.opts.log.debug({ netns, err: (err as Error).message }, 'stale UDP socket sweep: namespace skipped');
      }
    }
    if (aborted > 0) {
      this.opts.log.info(
        { aborted, namespaces: namespaces.length, ms: Math.round(performance.now() - started) },
        'aborted connected UDP sockets whose backend left their Service; their next send() fails and they connect again',
      );
    }
  }
}

function readIterator(netns: string, pin: string): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile('nsenter', [`--net=${netns}`, '--', 'cat', pin], { encoding: 'buffer', maxBuffer: 1 << 24 }, (err, stdout) => {
      if (err) reject(err);
      else resolve(stdout.length);
    });
  });
}
