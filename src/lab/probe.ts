// Client for lab tests; prints ONE JSON line {"results":[...]} on stdout.
//   node probe.js http   ADDR PORT [--count N] [--timeout MS] [--interval MS] [--path P]
//   node probe.js udp    ADDR PORT [--count N] [--timeout MS] [--interval MS] [--message M] [--connected] [--fresh] [--reconnect]
//   node probe.js stream ADDR PORT [--timeout MS] [--interval MS]
// The peer reported is what the socket says it is connected to (getpeername),
// which is exactly what kpx's cgroup programs rewrite. Every result carries
// `at`, when its attempt started (ms since the epoch), so a test can tell
// attempts before a change from attempts after it.
// --reconnect: after an attempt that failed otherwise than by a timeout, the
// next one goes on a new socket, as a client whose socket was aborted would.
// stream: one TCP connection to a name server's echo port. Prints
// "connected NAME" on the greeting, then exchanges a line every interval until
// an exchange fails or SIGTERM arrives; each exchange is one result.
import http from 'node:http';
import dgram from 'node:dgram';
import net from 'node:net';
import { createInterface } from 'node:readline';
import type { ProbeResult } from './probe-results.js';

interface Options {
  mode: 'http' | 'udp' | 'stream';
  address: string;
  port: number;
  count: number;
  timeoutMs: number;
  intervalMs: number;
  path: string;
  message: string | undefined;
  connected: boolean;
  fresh: boolean;
  reconnect: boolean;
}

const USAGE = 'usage: probe (http|udp|stream) ADDR PORT [--count N] [--timeout MS] [--interval MS] [--path P] [--message M] [--connected] [--fresh] [--reconnect]';

function parseArgs(argv: string[]): Options {
  const [mode, address, portText, ...flags] = argv;
  if ((mode !== 'http' && mode !== 'udp' && mode !== 'stream') || !address || !portText) throw new Error(USAGE);
  const opts: Options = {
    mode, address, port: Number(portText), count: 1,
    timeoutMs: mode === 'udp' ? 1000 : 2000, intervalMs: mode === 'stream' ? 50 : 0,
    path: '/', message: undefined, connected: false, fresh: false, reconnect: false,
  };
  for (let i = 0; i < flags.length; i++) {
    switch (flags[i]) {
      case '--count': opts.count = Number(flags[++i]); break;
      case '--timeout': opts.timeoutMs = Number(flags[++i]); break;
      case '--interval': opts.intervalMs = Number(flags[++i]); break;
      case '--path': opts.path = flags[++i] ?? ''; break;
      case '--message': opts.message = flags[++i]; break;
      case '--connected': opts.connected = true; break;
      case '--fresh': opts.fresh = true; break;
      case '--reconnect': opts.reconnect = true; break;
      default: throw new Error(`unknown flag ${flags[i]}\n${USAGE}`);
    }
  }
  const valid = Number.isInteger(opts.port) && Number.isInteger(opts.count) && opts.timeoutMs > 0 && opts.intervalMs >= 0;
  if (!valid || !opts.path.startsWith('/')) throw new Error(USAGE);
  return opts;
}

function errorCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.code ?? (e instanceof Error ? e.message : String(err));
}

function timeoutError(): NodeJS.ErrnoException {
  return Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One GET on a new TCP connection. */
function httpAttempt(opts: Options): Promise<ProbeResult> {
  const at = Date.now();
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: ProbeResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const req = http.get({ host: opts.address, port: opts.port, path: opts.path, agent: false }, (res) => {
      // Read the peer now, while the socket is still connected.
      const peer = `${res.socket.remoteAddress}:${res.socket.remotePort}`;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => { body += chunk; });
      res.on('end', () => finish({ ok: true, body: body.trim(), peer, at }));
      res.on('error', (err) => finish({ ok: false, error: errorCode(err), at }));
    });
    req.on('error', (err) => finish({ ok: false, error: errorCode(err), at }));
    const timer = setTimeout(() => finish({ ok: false, error: 'ETIMEDOUT', at }), opts.timeoutMs);
  });
}

/** An error a socket reported between attempts (an aborted socket's receive), for its next attempt. */
const errorsBetweenAttempts = new WeakMap<dgram.Socket, Error>();

function openUdpSocket(opts: Options): Promise<dgram.Socket> {
  const socket = dgram.createSocket('udp4');
  socket.on('error', (err) => {
    if (socket.listenerCount('error') === 1) errorsBetweenAttempts.set(socket, err);
  });
  if (!opts.connected) return Promise.resolve(socket);
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.connect(opts.port, opts.address, () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

/** Sends one datagram and waits for the first reply (or an ICMP error on a connected socket). */
function udpAttempt(socket: dgram.Socket, opts: Options, message: string): Promise<ProbeResult> {
  const at = Date.now();
  return new Promise((resolve) => {
    const finish = (r: ProbeResult): void => {
      clearTimeout(timer);
      socket.off('message', onMessage);
      socket.off('error', onError);
      resolve(r);
    };
    const onMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void =>
      finish({ ok: true, body: msg.toString('utf8').trim(), peer: `${rinfo.address}:${rinfo.port}`, at });
    const onError = (err: Error): void => finish({ ok: false, error: errorCode(err), at });
    const onSent = (err: Error | null): void => { if (err) onError(err); };
    socket.on('message', onMessage);
    socket.on('error', onError);
    const timer = setTimeout(() => finish({ ok: false, error: errorCode(timeoutError()), at }), opts.timeoutMs);
    const earlier = errorsBetweenAttempts.get(socket);
    if (earlier) {
      errorsBetweenAttempts.delete(socket);
      onError(earlier);
      return;
    }
    if (opts.connected) socket.send(message, onSent);
    else socket.send(message, opts.port, opts.address, onSent);
  });
}

async function udpAttemptOnFreshSocket(opts: Options, message: string): Promise<ProbeResult> {
  const at = Date.now();
  let socket: dgram.Socket | undefined;
  try {
    socket = await openUdpSocket(opts);
    return await udpAttempt(socket, opts, message);
  } catch (err) {
    return { ok: false, error: errorCode(err), at };
  } finally {
    socket?.close();
  }
}

async function runUdp(opts: Options): Promise<ProbeResult[]> {
  const results: ProbeResult[] = [];
  const messageOf = (i: number) => opts.message ?? `probe ${i}`;
  if (opts.fresh) {
    for (let i = 0; i < opts.count; i++) {
      if (i > 0) await sleep(opts.intervalMs);
      results.push(await udpAttemptOnFreshSocket(opts, messageOf(i)));
    }
    return results;
  }
  const at = Date.now();
  let socket: dgram.Socket;
  try {
    socket = await openUdpSocket(opts);
  } catch (err) {
    return Array.from({ length: opts.count }, () => ({ ok: false, error: errorCode(err), at }) as ProbeResult);
  }
  for (let i = 0; i < opts.count; i++) {
    if (i > 0) await sleep(opts.intervalMs);
    const result = await udpAttempt(socket, opts, messageOf(i));
    results.push(result);
    if (opts.reconnect && !result.ok && result.error !== 'ETIMEDOUT') {
      socket.close();
      try {
        socket = await openUdpSocket(opts);
      } catch (err) {
        const at = Date.now();
        while (results.length < opts.count) results.push({ ok: false, error: errorCode(err), at });
        return results;
      }
    }
  }
  socket.close();
  return results;
}

async function runHttp(opts: Options): Promise<ProbeResult[]> {
  const results: ProbeResult[] = [];
  for (let i = 0; i < opts.count; i++) {
    if (i > 0) await sleep(opts.intervalMs);
    results.push(await httpAttempt(opts));
  }
  return results;
}

/** Resolves with the next line, or with an error code on timeout, close or error. */
function nextLine(lines: AsyncIterator<string>, timeoutMs: number): Promise<{ line: string } | { error: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ error: string }>((resolve) => { timer = setTimeout(() => resolve({ error: 'ETIMEDOUT' }), timeoutMs); });
  const line = lines.next().then(
    (r) => (r.done ? { error: 'ECONNRESET' } : { line: r.value }),
    (err: unknown) => ({ error: errorCode(err) }),
  );
  return Promise.race([line, timeout]).finally(() => clearTimeout(timer));
}

async function runStream(opts: Options): Promise<ProbeResult[]> {
  const results: ProbeResult[] = [];
  let stopping = false;
  process.once('SIGTERM', () => { stopping = true; });
  const at = Date.now();
  const socket = net.connect({ host: opts.address, port: opts.port });
  const connectError = await new Promise<string | undefined>((resolve) => {
    socket.once('connect', () => resolve(undefined));
    socket.once('error', (err) => resolve(errorCode(err)));
  });
  if (connectError !== undefined) return [{ ok: false, error: connectError, at }];
  socket.on('error', () => { /* surfaces as the end of the line stream */ });
  const lines = createInterface({ input: socket })[Symbol.asyncIterator]();
  const greeting = await nextLine(lines, opts.timeoutMs);
  if ('error' in greeting) {
    socket.destroy();
    return [{ ok: false, error: greeting.error, at }];
  }
  const name = greeting.line;
  const peer = `${socket.remoteAddress}:${socket.remotePort}`;
  process.stdout.write(`connected ${name}\n`);
  for (let i = 0; !stopping; i++) {
    const started = Date.now();
    socket.write(`line ${i}\n`);
    const reply = await nextLine(lines, opts.timeoutMs);
    if ('error' in reply || reply.line !== `line ${i}`) {
      results.push({ ok: false, error: 'error' in reply ? reply.error : `unexpected reply: ${reply.line}`, at: started });
      break;
    }
    results.push({ ok: true, body: name, peer, at: started });
    await sleep(opts.intervalMs);
  }
  socket.destroy();
  return results;
}

async function main(): Promise<void> {
  let opts: Options;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  }
  const run = { http: runHttp, udp: runUdp, stream: runStream }[opts.mode];
  const results = await run(opts);
  process.stdout.write(`${JSON.stringify({ results })}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`probe: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
