// Tiny server that answers with its own name, so a client can tell which
// backend it reached. Usage:
//   node name-server.js --name NAME [--tcp P[,P...]] [--udp P[,P...]] [--address A]
// Prints "listening" once every port is bound; exits cleanly on SIGTERM.
import http from 'node:http';
import dgram from 'node:dgram';
import type { AddressInfo } from 'node:net';

interface Options {
  name: string;
  tcpPorts: number[];
  udpPorts: number[];
  address: string;
}

function parsePorts(value: string): number[] {
  return value.split(',').filter(Boolean).map((p) => {
    const port = Number(p);
    if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`bad port: ${p}`);
    return port;
  });
}

function parseArgs(argv: string[]): Options {
  const opts: Options = { name: '', tcpPorts: [], udpPorts: [], address: '0.0.0.0' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new Error(`missing value for ${flag}`);
    switch (flag) {
      case '--name': opts.name = value; break;
      case '--tcp': opts.tcpPorts.push(...parsePorts(value)); break;
      case '--udp': opts.udpPorts.push(...parsePorts(value)); break;
      case '--address': opts.address = value; break;
      default: throw new Error(`unknown flag: ${flag}`);
    }
  }
  if (!opts.name) throw new Error('--name is required');
  if (opts.tcpPorts.length + opts.udpPorts.length === 0) throw new Error('give --tcp and/or --udp ports');
  return opts;
}

function startHttp(name: string, address: string, port: number): Promise<http.Server> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', Connection: 'close' });
    res.end(`${name}\n`);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => resolve(server));
  });
}

function startUdp(name: string, address: string, port: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (_msg, rinfo) => socket.send(name, rinfo.port, rinfo.address));
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, address, () => resolve(socket));
  });
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const httpServers = await Promise.all(opts.tcpPorts.map((p) => startHttp(opts.name, opts.address, p)));
  const udpSockets = await Promise.all(opts.udpPorts.map((p) => startUdp(opts.name, opts.address, p)));

  process.once('SIGTERM', () => {
    for (const s of udpSockets) s.close();
    for (const s of httpServers) {
      s.close();
      s.closeAllConnections();
    }
    // Listeners are closed; nothing left should keep us alive, but don't hang on a stuck socket.
    setTimeout(() => process.exit(0), 500).unref();
  });

  const bound = [
    ...httpServers.map((s) => `tcp/${(s.address() as AddressInfo).port}`),
    ...udpSockets.map((s) => `udp/${s.address().port}`),
  ];
  process.stdout.write(`listening ${opts.name} ${bound.join(' ')}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`name-server: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
