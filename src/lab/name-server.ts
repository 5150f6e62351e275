// Tiny server that answers with its own name, so a client can tell which
// backend it reached. Usage:
//   node name-server.js --name NAME [--tcp P[,P...]] [--udp P[,P...]] [--echo P[,P...]] [--address A]
// HTTP GET /client and the datagram "client" are answered with "NAME ADDR",
// ADDR being the client's address as the server sees it (after any SNAT).
// --echo ports greet a TCP connection with "NAME\n", then echo every line back.
// Prints "listening" once every port is bound; exits cleanly on SIGTERM.
import http from 'node:http';
import dgram from 'node:dgram';
import net, { type AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';

interface Options {
  name: string;
  tcpPorts: number[];
  udpPorts: number[];
  echoPorts: number[];
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
  const opts: Options = { name: '', tcpPorts: [], udpPorts: [], echoPorts: [], address: '0.0.0.0' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new Error(`missing value for ${flag}`);
    switch (flag) {
      case '--name': opts.name = value; break;
      case '--tcp': opts.tcpPorts.push(...parsePorts(value)); break;
      case '--udp': opts.udpPorts.push(...parsePorts(value)); break;
      case '--echo': opts.echoPorts.push(...parsePorts(value)); break;
      case '--address': opts.address = value; break;
      default: throw new Error(`unknown flag: ${flag}`);
    }
  }
  if (!opts.name) throw new Error('--name is required');
  if (opts.tcpPorts.length + opts.udpPorts.length + opts.echoPorts.length === 0) throw new Error('give --tcp, --udp or --echo ports');
  return opts;
}

function startHttp(name: string, address: string, port: number): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', Connection: 'close' });
    res.end(req.url === '/client' ? `${name} ${req.socket.remoteAddress}\n` : `${name}\n`);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => resolve(server));
  });
}

function startUdp(name: string, address: string, port: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (msg, rinfo) => {
    const answer = msg.toString('utf8').trim() === 'client' ? `${name} ${rinfo.address}` : name;
    socket.send(answer, rinfo.port, rinfo.address);
  });
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, address, () => resolve(socket));
  });
}

/** A long-lived connection: proves a flow keeps its backend across changes. */
function startEcho(name: string, address: string, port: number): Promise<net.Server> {
  const server = net.createServer((conn) => {
    conn.on('error', () => { /* the client went away */ });
    conn.write(`${name}\n`);
    createInterface({ input: conn }).on('line', (line) => conn.write(`${line}\n`));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => resolve(server));
  });
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const httpServers = await Promise.all(opts.tcpPorts.map((p) => startHttp(opts.name, opts.address, p)));
  const udpSockets = await Promise.all(opts.udpPorts.map((p) => startUdp(opts.name, opts.address, p)));
  const echoServers = await Promise.all(opts.echoPorts.map((p) => startEcho(opts.name, opts.address, p)));

  process.once('SIGTERM', () => {
    for (const s of udpSockets) s.close();
    for (const s of echoServers) s.close();
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
    ...echoServers.map((s) => `echo/${(s.address() as AddressInfo).port}`),
  ];
  process.stdout.write(`listening ${opts.name} ${bound.join(' ')}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`name-server: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
