/**
 * Connected UDP sockets whose backend left their Service are aborted
 * (bpf/kpx_iter.c says why and how), in every network namespace that has a
 * process in the agent's cgroup: the iterator walks the namespace of the
 * process that opens it, so one short `nsenter ... cat` per namespace
 * opens and reads it. A sweep is asked for after a sync that changed UDP
 * Services; requests that come while one runs make one more.
 */
import { execFile, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import * as bpf from './libbpf.js';
import { openOnPinnedMaps } from './pinned-maps.js';

const PROGRAM = 'kpx_udp_stale_sockets';

/** Where the iterator's link is pinned, under the agent's bpffs. */
export function sweepPinPath(bpffs: string): string {
  return join(bpffs, PROGRAM);
}

/** The network namespaces of the processes in a cgroup and its children: one /proc path per namespace. */
function cgroupNetns(cgroup: string): string[] {
  const byInode = new Map<number, string>();
  const visit = (dir: string) => {
    let procs: string;
    let children: string[];
    try {
      procs = readFileSync(join(dir, 'cgroup.procs'), 'utf8');
      children = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
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
    for (const child of children) visit(join(dir, child));
  };
  visit(cgroup);
  return [...byInode.values()];
}

interface SweepOptions {
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
  private reader: ChildProcess | undefined;
  /** Whether the last sweep could read no namespace: said once, until one works again. */
  private failing = false;

  private constructor(
    private readonly opts: SweepOptions,
    private readonly obj: bpf.BpfObjectPtr,
    private readonly pin: string,
    /** The iterator's program: the pin is this sweeper's while it holds a link to it. */
    private readonly programId: number,
  ) {}

  /**
   * Loads the iterator on the agent's maps and pins its link (an earlier
   * agent's pin is replaced). Reading it needs nsenter and the processes'
   * /proc entries (the host's PID namespace).
   */
  static open(opts: SweepOptions): StaleUdpSocketSweeper {
    const nsenter = spawnSync('nsenter', ['--version']);
    if (nsenter.error) throw new Error(`nsenter: ${nsenter.error.message}`);
    const obj = openOnPinnedMaps(opts.objectPath, opts.bpffs);
    const pin = sweepPinPath(opts.bpffs);
    let link: number | undefined;
    try {
      const progFd = bpf.programFd(bpf.findProgram(obj, PROGRAM));
      link = bpf.linkCreate(progFd, 0, bpf.ATTACH.traceIter);
      unlinkQuiet(pin);
      bpf.objPin(link, pin);
      return new StaleUdpSocketSweeper(opts, obj, pin, bpf.programId(progFd));
    } catch (err) {
      bpf.closeObject(obj);
      throw err;
    } finally {
      // The pin holds the link from here on.
      if (link !== undefined) closeSync(link);
    }
  }

  /** Asks for a sweep; one that is running finishes first, then one more runs. */
  request(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    // Not in the caller's turn: the walk of the cgroup is no part of a sync.
    setImmediate(() => void this.runUntilQuiet());
  }

  /** A sweep running stops; the pin goes if it is still this sweeper's (a newer agent may have replaced it). */
  close(): void {
    this.closed = true;
    this.reader?.kill('SIGKILL');
    if (this.pinIsOurs()) unlinkQuiet(this.pin);
    bpf.closeObject(this.obj);
  }

  private pinIsOurs(): boolean {
    let fd: number;
    try {
      fd = bpf.objGet(this.pin);
    } catch {
      return false;
    }
    try {
      return bpf.linkInfo(fd).progId === this.programId;
    } finally {
      closeSync(fd);
    }
  }

  private async runUntilQuiet(): Promise<void> {
    do {
      this.again = false;
      try {
        await this.sweep();
      } catch (err) {
        // The next request tries again; the agent goes on.
        this.opts.log.warn({ err: (err as Error).message }, 'stale UDP socket sweep failed');
      }
    } while (this.again && !this.closed);
    this.running = false;
  }

  /** Reads the iterator once in each namespace; it writes one byte per socket it aborts. */
  private async sweep(): Promise<void> {
    const started = performance.now();
    const namespaces = cgroupNetns(this.opts.cgroup);
    let aborted = 0;
    let read = 0;
    let lastError: string | undefined;
    for (const netns of namespaces) {
      if (this.closed) return;
      try {
        aborted += await this.readIterator(netns);
        read++;
      } catch (err) {
        // A namespace whose processes all exited meanwhile; the others still count.
        lastError = (err as Error).message;
        this.opts.log.debug({ netns, err: lastError }, 'stale UDP socket sweep: namespace skipped');
      }
    }
    const failing = namespaces.length > 0 && read === 0;
    if (failing && !this.failing) {
      this.opts.log.warn({ namespaces: namespaces.length, err: lastError }, 'stale UDP socket sweep read no network namespace: connected UDP sockets keep a backend their Service dropped');
    }
    this.failing = failing;
    if (aborted > 0) {
      this.opts.log.info(
        { aborted, namespaces: namespaces.length, ms: Math.round(performance.now() - started) },
        'aborted connected UDP sockets whose backend left their Service; their next send() fails and they connect again',
      );
    }
  }

  private readIterator(netns: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.reader = execFile('nsenter', [`--net=${netns}`, '--', 'cat', this.pin], { encoding: 'buffer', maxBuffer: 1 << 24 }, (err, stdout) => {
        this.reader = undefined;
        if (err) reject(err);
        else resolve(stdout.length);
      });
    });
  }
}

function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}
