/**
 * Codecs of kernel-owned map types that codecs.ts does not hold: read back
 * by tests and checked against the objects' BTF like the others.
 */
import { StructCodec } from './codecs.js';

export interface SockPeer {
  backend_addr: string;
  backend_port: number;
  addr: string;
  port: number;
}

/** The value of kpx_sock_peer: a connected socket's backend and the Service it asked for. */
export const sockPeerValue = new StructCodec<SockPeer>('kpx_sock_peer', 16, [
  { c: 'backend_addr', kind: 'ipv4', offset: 0 },
  { c: 'backend_port', kind: 'be16', offset: 4 },
  { c: 'pad', kind: 'u16', offset: 6 },
  { c: 'addr', kind: 'ipv4', offset: 8 },
  { c: 'port', kind: 'be16', offset: 12 },
  { c: 'pad2', kind: 'u16', offset: 14 },
]);

/** The int key socket-local storage maps require (the kernel checks the BTF type: a plain int, not a typedef). */
export const socketFdKey = new StructCodec<{ fd: number }>('int', 4, [{ c: 'fd', kind: 'u32', offset: 0 }]);

/** Contract structs of this file, for the BTF layout check. */
export const KERNEL_CONTRACT_STRUCTS = [sockPeerValue];
