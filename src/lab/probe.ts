// Client for lab tests; prints ONE JSON line {"results":[...]} on stdout.
//   node probe.js http ADDR PORT [--count N] [--timeout MS]
//   node probe.js udp  ADDR PORT [--count N] [--timeout MS] [--connected] [--fresh]
// The peer reported is what the socket says it is connected to (getpeername),
// which is exactly what kpx's cgroup programs rewrite.
import http from 'node:http';
import dgram from 'node:dgram';
import type { ProbeResult } from './probe-results.js';

interface Options {
  mode: 'http' | 'udp';
  address: string;
  port: number;
  count: number;
  timeoutMs: number;
  connected: boolean;
  fresh: boolean;
}

const USAGE = 'usage: probe (http|udp) ADDR PORT [--count N] [--timeout MS] [--connected] [--fresh]';

function parseArgs(argv: string[]): Options {
  const [mode, address, portText, ...flags] = argv;
  if ((mode !== 'http' && mode !== 'udp') || !address || !portText) throw new Error(USAGE);
  const opts: Options = {
    mode, address, port: Number(portText), count: 1,
    timeoutMs: mode === 'http' ? 2000 : 1000, connected: false, fresh: false,
  };
  for (let i = 0; i < flags.length; i++) {
    switch (flags[i]) {
      case '--count': opts.count = Number(flags[++i]); break;
      case '--timeout': opts.timeoutMs = Number(flags[++i]); break;
      case '--connected': opts.connected = true; break;
      case '--fresh': opts.fresh = true; break;
      default: throw new Error(`unknown flag ${flags[i]}\n${USAGE}`);
    }
  }
  if (!Number.isInteger(opts.port) || !Number.isInteger(opts.count) || !(opts.timeoutMs > 0)) throw new Error(USAGE);
  return opts;
}

function errorCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.code ?? (e instanceof Error ? e.message : String(err));
}

function timeoutError(): NodeJS.ErrnoException {
  return Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' });
}

/** One GET on a new TCP connection. */
function httpAttempt(address: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: ProbeResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const req = http.get({ host: address, port, path: '/', agent: false }, (res) => {
      // Read the peer now, while the socket is still connected.
      const peer = `${res.socket.remoteAddress}:${res.socket.remotePort}`;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => { body += chunk; });
      res.on('end', () => finish({ ok: true, body: body.trim(), peer }));
      res.on('error', (err) => finish({ ok: false, error: errorCode(err) }));
    });
    req.on('error', (err) => finish({ ok: false, error: errorCode(err) }));
    const timer = setTimeout(() => finish({ ok: false, error: 'ETIMEDOUT' }), timeoutMs);
  });
}

function openUdpSocket(opts: Options): Promise<dgram.Socket> {
  const socket = dgram.createSocket('udp4');
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
  return new Promise((resolve) => {
    const finish = (r: ProbeResult): void => {
      clearTimeout(timer);
      socket.off('message', onMessage);
      socket.off('error', onError);
      resolve(r);
    };
    const onMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void =>
      finish({ ok: true, body: msg.toString('utf8').trim(), peer: `${rinfo.address}:${rinfo.port}` });
    const onError = (err: Error): void => finish({ ok: false, error: errorCode(err) });
    const onSent = (err: Error | null): void => { if (err) onError(err); };
    socket.on('message', onMessage);
    socket.on('error', onError);
    const timer = setTimeout(() => finish({ ok: false, error: errorCode(timeoutError()) }), opts.timeoutMs);
    if (opts.connected) socket.send(message, onSent);
    else socket.send(message, opts.port, opts.address, onSent);
  });
}

async function udpAttemptOnFreshSocket(opts: Options, message: string): Promise<ProbeResult> {
  let socket: dgram.Socket | undefined;
  try {
    socket = await openUdpSocket(opts);
    return await udpAttempt(socket, opts, message);
  } catch (err) {
    return { ok: false, error: errorCode(err) };
  } finally {
    socket?.close();
  }
}

async function runUdp(opts: Options): Promise<ProbeResult[]> {
  const results: ProbeResult[] = [];
  if (opts.fresh) {
    for (let i = 0; i < opts.count; i++) results.push(await udpAttemptOnFreshSocket(opts, `probe ${i}`));
    return results;
  }
  let socket: dgram.Socket;
  try {
    socket = await openUdpSocket(opts);
  } catch (err) {
    return Array.from({ length: opts.count }, () => ({ ok: false, error: errorCode(err) }) as ProbeResult);
  }
  for (let i = 0; i < opts.count; i++) results.push(await udpAttempt(socket, opts, `probe ${i}`));
  socket.close();
  return results;
}

async function runHttp(opts: Options): Promise<ProbeResult[]> {
  const results: ProbeResult[] = [];
  for (let i = 0; i < opts.count; i++) results.push(await httpAttempt(opts.address, opts.port, opts.timeoutMs));
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
  const results = opts.mode === 'http' ? await runHttp(opts) : await runUdp(opts);
  process.stdout.write(`${JSON.stringify({ results })}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`probe: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
