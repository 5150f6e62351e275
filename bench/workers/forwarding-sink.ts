/**
 * The backend of bench/forwarding-rate: a UDP socket bound to a port that is
 * never read. Every datagram goes the whole way through the backend's stack
 * (IP, UDP socket lookup) and, once the receive buffer is full, is dropped
 * at the socket: delivery costs the backend almost nothing, and no ICMP
 * "port unreachable" goes back. Node's dgram would read (and spend a CPU on)
 * every datagram, so the socket is made with libc directly.
 *
 *   node forwarding-sink.js PORT     prints "listening", then waits to be killed
 */
import koffi from 'koffi';

const AF_INET = 2;
const SOCK_DGRAM = 2;

const libc = koffi.load('libc.so.6');
const socket = libc.func('int socket(int domain, int type, int protocol)');
const bind = libc.func('int bind(int fd, const void *addr, uint32_t addrlen)');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  process.stderr.write('usage: forwarding-sink PORT\n');
  process.exit(2);
}
const fd = socket(AF_INET, SOCK_DGRAM, 0) as number;
// struct sockaddr_in: family (host order), port (network order), address 0.0.0.0, 8 bytes of zero.
const address = Buffer.alloc(16);
address.writeUInt16LE(AF_INET, 0);
address.writeUInt16BE(port, 2);
if (fd < 0 || (bind(fd, address, address.length) as number) < 0) {
  process.stderr.write(`forwarding-sink: cannot bind udp port ${port}\n`);
  process.exit(1);
}
process.stdout.write('listening\n');
// Keeps the process, and so the socket, alive until the lab stops it.
setInterval(() => {}, 1 << 30);
