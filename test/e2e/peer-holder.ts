// Holds connected sockets open for test/e2e/socket-peer.test.ts, in a lab
// pod, and reports what getpeername() says of them on demand.
//   node peer-holder.js TCP_ADDR TCP_PORT UDP_ADDR UDP_PORT
// Connects one TCP socket and one UDP socket (connect()), then prints
// {"check":0,"tcp":"A:P","udp":"A:P"} and one more such line, with the next
// number, on every SIGUSR1. Exits on SIGTERM.
import dgram from 'node:dgram';
import net from 'node:net';

const [tcpAddress, tcpPort, udpAddress, udpPort] = process.argv.slice(2);
if (!tcpAddress || !tcpPort || !udpAddress || !udpPort) throw new Error('usage: peer-holder TCP_ADDR TCP_PORT UDP_ADDR UDP_PORT');

const tcp = net.connect({ host: tcpAddress, port: Number(tcpPort) });
await new Promise<void>((resolve, reject) => {
  tcp.once('connect', resolve);
  tcp.once('error', reject);
});
const udp = dgram.createSocket('udp4');
await new Promise<void>((resolve) => udp.connect(Number(udpPort), udpAddress, resolve));

let checks = 0;
function report(): void {
  // net.Socket caches its peer after the first read; ask the kernel each time.
  const handle = (tcp as unknown as { _handle: { getpeername(out: { address?: string; port?: number }): number } })._handle;
  const peer: { address?: string; port?: number } = {};
  const err = handle.getpeername(peer);
  const udpPeer = udp.remoteAddress();
  console.log(
    JSON.stringify({
      check: checks++,
      tcp: err === 0 ? `${peer.address}:${peer.port}` : `error ${err}`,
      udp: `${udpPeer.address}:${udpPeer.port}`,
    }),
  );
}

process.on('SIGUSR1', report);
process.on('SIGTERM', () => {
  tcp.destroy();
  udp.close();
  process.exit(0);
});
report();
