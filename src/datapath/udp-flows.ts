/**
 * The UDP conntrack flows a sync leaves pointing the wrong way, as
 * kube-proxy clears them (its conntrack cleanup): iptables NATs only the
 * first packet of a flow, and conntrack sends the rest of a UDP flow, for
 * as long as it keeps sending, to the endpoint it was NATed to. So
 *  - a flow to a Service frontend NATed to an endpoint the service port no
 *    longer has goes, so its next datagram picks a live endpoint;
 *  - every flow to the frontends of a service port that had no endpoints
 *    (or did not exist) and now has some goes: one that started while its
 *    packets were rejected or not NATed would never be.
 * Pure: from the model the kernel had to the one it has now.
 */
import { NODE_PORT_ADDRESS, type Model, type ServicePort } from '../model/types.js';

/** One `conntrack -D -p udp` filter: the flow's original destination (address and port, or port alone for a NodePort), and for a stale endpoint the address it was NATed to. */
export interface UdpFlowFilter {
  origDst?: string;
  origPortDst: number;
  dstNat?: string;
}

const key = (sp: ServicePort) => `${sp.ref.namespace}/${sp.ref.name}:${sp.ref.portName}`;

export function staleUdpFlows(previous: Model, next: Model): UdpFlowFilter[] {
  const before = new Map(previous.servicePorts.filter((sp) => sp.ref.protocol === 'UDP').map((sp) => [key(sp), sp]));
  const filters: UdpFlowFilter[] = [];
  const seen = new Set<string>();
  const add = (filter: UdpFlowFilter) => {
    const id = `${filter.origDst ?? '*'}:${filter.origPortDst}>${filter.dstNat ?? '*'}`;
    if (seen.has(id)) return;
    seen.add(id);
    filters.push(filter);
  };
  const origin = (frontend: ServicePort['frontends'][number]) =>
    frontend.address === NODE_PORT_ADDRESS ? { origPortDst: frontend.port } : { origDst: frontend.address, origPortDst: frontend.port };

  for (const sp of next.servicePorts) {
    if (sp.ref.protocol !== 'UDP') continue;
    const old = before.get(key(sp));
    if (sp.backends.length > 0 && (!old || old.backends.length === 0)) {
      for (const frontend of sp.frontends) add(origin(frontend));
      continue;
    }
    if (!old) continue;
    // A frontend the service port no longer has (an externalIP taken off): nothing NATs its new flows.
    const frontends = new Set(sp.frontends.map((f) => `${f.address}:${f.port}`));
    for (const frontend of old.frontends) if (!frontends.has(`${frontend.address}:${frontend.port}`)) add(origin(frontend));
    // kube-proxy compares endpoints by address and port; the flows go by the address they were NATed to.
    const kept = new Set(sp.backends.map((b) => `${b.address}:${b.port}`));
    for (const gone of old.backends.filter((b) => !kept.has(`${b.address}:${b.port}`))) {
      for (const frontend of old.frontends) add({ ...origin(frontend), dstNat: gone.address });
    }
  }
  // A service port that went: whatever still flows to its frontends was NATed for it.
  const remaining = new Set(next.servicePorts.map(key));
  for (const [id, old] of before) {
    if (remaining.has(id)) continue;
    for (const frontend of old.frontends) add(origin(frontend));
  }
  return filters;
}

/** The filter as `conntrack` arguments. */
export function conntrackDeleteArgs(filter: UdpFlowFilter): string[] {
  return [
    '-D',
    '-p',
    'udp',
    ...(filter.origDst ? ['--orig-dst', filter.origDst] : []),
    '--orig-port-dst',
    String(filter.origPortDst),
    ...(filter.dstNat ? ['--dst-nat', filter.dstNat] : []),
  ];
}
