/**
 * The node addresses that answer NodePorts, from the node's interfaces and
 * kube-proxy's --nodeport-addresses, and the --service-node-port-range
 * syntax. Pure: the caller hands in os.networkInterfaces() and logs the
 * problems; nothing here throws on bad input.
 */
import { looksLikeIPv6, parseIPv4, parseIPv4CIDR, sortedIPv4s, type IPv4CIDR } from './cluster-ip.js';
import { isValidPortRange } from './node-port.js';
import type { PortRange } from './types.js';

/** One address of an interface, as os.networkInterfaces() lists it (Node 18.0 to 18.3 gave family as a number). */
export interface InterfaceAddress {
  address: string;
  family: string | number;
  internal: boolean;
}

export interface NodePortAddresses {
  /** Sorted numerically, without duplicates. */
  addresses: string[];
  /** What was asked for but could not be honoured, one sentence each, for the log. */
  problems: string[];
}

/** kube-proxy's --nodeport-addresses value for "the node's primary IPs". */
const PRIMARY = 'primary';

/** kube-proxy's iptables mode answers NodePorts on localhost too, unless CIDRs say otherwise. */
const LOCALHOST = '127.0.0.1';

function ipv4Addresses(addresses: readonly InterfaceAddress[]): string[] {
  return addresses.filter((a) => a.family === 'IPv4' || a.family === 4).map((a) => a.address);
}

function contains(cidr: IPv4CIDR, address: string): boolean {
  const n = parseIPv4(address);
  return n !== null && n >= cidr.base && n < cidr.base + cidr.size;
}

/**
 * kube-proxy's --nodeport-addresses semantics over the interfaces kpx serves:
 * without CIDRs, every IPv4 address of the named interfaces plus 127.0.0.1;
 * with CIDRs, only the addresses of the named interfaces or of loopback that
 * fall in one of them. A CIDR that cannot be used is a problem and is left
 * out; the others still restrict, so asking for CIDRs never widens the set.
 */
export function resolveNodePortAddresses(
  interfaces: Readonly<Record<string, readonly InterfaceAddress[] | undefined>>,
  interfaceNames: readonly string[],
  cidrs: readonly string[],
): NodePortAddresses {
  const problems: string[] = [];
  const named: string[] = [];
  for (const name of interfaceNames) {
    const addresses = interfaces[name];
    if (addresses === undefined) problems.push(`interface ${JSON.stringify(name)} does not exist`);
    else named.push(...ipv4Addresses(addresses));
  }
  if (cidrs.length === 0) return { addresses: sortedIPv4s([...named, LOCALHOST]), problems };

  const ranges: IPv4CIDR[] = [];
  for (const text of cidrs) {
    const cidr = parseIPv4CIDR(text);
    if (cidr !== null) ranges.push(cidr);
    else if (text === PRIMARY) problems.push(`NodePort address ${JSON.stringify(PRIMARY)} is not supported; ignored`);
    else if (looksLikeIPv6(text.split('/')[0])) problems.push(`NodePort CIDR ${text} ignored: NodePorts are served on IPv4 only`);
    else problems.push(`NodePort CIDR ${JSON.stringify(text)} is not a valid IPv4 CIDR; ignored`);
  }
  const loopback = Object.values(interfaces).flatMap((addresses) => ipv4Addresses((addresses ?? []).filter((a) => a.internal)));
  const addresses = sortedIPv4s([...named, ...loopback].filter((a) => ranges.some((r) => contains(r, a))));
  if (addresses.length === 0) problems.push('no node address falls in the NodePort CIDRs: NodePorts answer on no address');
  return { addresses, problems };
}

/** Parses kube-apiserver's --service-node-port-range syntax, "min-max", or says what is wrong. */
export function parseNodePortRange(text: string): PortRange | string {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(text.trim());
  const range = m ? { min: Number(m[1]), max: Number(m[2]) } : null;
  if (range === null || !isValidPortRange(range)) {
    return `invalid NodePort range ${JSON.stringify(text)} (want min-max with 1 <= min <= max <= 65535, e.g. 30000-32767)`;
  }
  return range;
}
