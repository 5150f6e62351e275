// Holds sockets open for test/e2e/socket-peer.test.ts, in a lab pod, and
// reports what they say of their peers on demand.
//   node peer-holder.js TCP_ADDR TCP_PORT UDP_ADDR UDP_PORT
// Connects one TCP socket and one UDP socket (connect()), and opens one
// unconnected UDP socket. Each check sends two datagrams from that one to
// UDP_ADDR:UDP_PORT (sendto), one after the other's reply, then prints
// {"check":N,"tcp":"A:P","udp":"A:P","sendto":"A:P","from":"NAME"}: the
// peers getpeername() gives, where the last reply came from (recvmsg) and
// which name server sent it. Check 0 runs at once, each next one on
// SIGUSR1. Exits on SIGTERM.
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
const unconnected = dgram.createSocket('udp4');

/** One sendto and its reply: where it came from and what it said. */
function exchange(): Promise<{ from: string; body: string }> {
  return new Promise((resolve) => {
    unconnected.once('message', (msg, rinfo) => resolve({ from: `${rinfo.address}:${rinfo.port}`, body: msg.toString().trim() }));
    unconnected.send('holder', Number(udpPort), udpAddress);
  });
}

let checks = 0;
async function report(): Promise<void> {
  await exchange();
  const last = await exchange();
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
      sendto: last.from,
      from: last.body,
    }),
  );
}

process.on('SIGUSR1', () => void report());
process.on('SIGTERM', () => {
  tcp.destroy();
  udp.close();
  unconnected.close();
  process.exit(0);
});
await report();
