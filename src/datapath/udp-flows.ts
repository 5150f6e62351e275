/**
 * The UDP conntrack flows a sync leaves pointing the wrong way, found as
 * kube-proxy's conntrack reconciler finds them (pkg/proxy/conntrack,
 * CleanStaleEntries): iptables NATs only the first packet of a flow, and
 * conntrack sends the rest of a UDP flow, for as long as it keeps sending,
 * where that first packet went. So every sync looks at the UDP flows the
 * kernel tracks, and a flow to a UDP Service frontend (address and port, or
 * a NodePort on any address) whose replies do not come from an endpoint of
 * that service port (one that takes new flows, or a draining one) goes:
 * NATed to an endpoint the port dropped, or never NATed (sent while the port
 * had no endpoints), its next datagram then starts a flow that is. Pure: the
 * kernel's flows and the model in, the deletions out.
 */
import { NODE_PORT_ADDRESS, type Model } from '../model/types.js';

/** A tracked UDP flow: where its first packet was sent, and where its replies come from. */
export interface UdpFlow {
  origDst: string;
  origPortDst: number;
  replySrc: string;
}

/** One `conntrack -D -p udp` filter: the flow's original destination (address and port, or port alone for a NodePort) and its reply source. */
export interface UdpFlowFilter {
  origDst?: string;
  origPortDst: number;
  replySrc: string;
}

export function staleUdpFlows(model: Model, flows: readonly UdpFlow[]): UdpFlowFilter[] {
  // The endpoint addresses behind each UDP frontend: by address:port, and by port for NodePorts.
  const byFrontend = new Map<string, Set<string>>();
  const byNodePort = new Map<number, Set<string>>();
  for (const sp of model.servicePorts) {
    if (sp.ref.protocol !== 'UDP') continue;
    // A draining endpoint keeps its flows: kube-proxy clears only those of an endpoint that no longer serves.
    const endpoints = new Set([...sp.backends, ...(sp.draining ?? [])].map((b) => b.address));
    for (const f of sp.frontends) {
      if (f.address === NODE_PORT_ADDRESS) byNodePort.set(f.port, endpoints);
      else byFrontend.set(`${f.address}:${f.port}`, endpoints);
    }
  }
  const filters = new Map<string, UdpFlowFilter>();
  for (const flow of flows) {
    const endpoints = byFrontend.get(`${flow.origDst}:${flow.origPortDst}`);
    if (endpoints && !endpoints.has(flow.replySrc)) {
      filters.set(`${flow.origDst}:${flow.origPortDst}<${flow.replySrc}`, { origDst: flow.origDst, origPortDst: flow.origPortDst, replySrc: flow.replySrc });
    }
    const nodePortEndpoints = byNodePort.get(flow.origPortDst);
    if (nodePortEndpoints && !nodePortEndpoints.has(flow.replySrc)) {
      filters.set(`*:${flow.origPortDst}<${flow.replySrc}`, { origPortDst: flow.origPortDst, replySrc: flow.replySrc });
    }
  }
  return [...filters.values()];
}

/** Whether the model has any UDP service port: without one there is nothing to look at. */
export function hasUdpServicePorts(model: Model): boolean {
  return model.servicePorts.some((sp) => sp.ref.protocol === 'UDP');
}

/**
 * The flows of `conntrack -L -p udp` output, one per line:
 * "udp 17 29 src=A dst=B sport=P dport=Q [UNREPLIED] src=C dst=D sport=R dport=S ...";
 * the first src/dst/sport/dport are the original direction, the second the reply.
 */
export function parseConntrackList(text: string): UdpFlow[] {
  const flows: UdpFlow[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('udp')) continue;
    const dst: string[] = [];
    const src: string[] = [];
    const dport: string[] = [];
    for (const token of line.split(/\s+/)) {
      const eq = token.indexOf('=');
      if (eq < 0) continue;
      const [name, value] = [token.slice(0, eq), token.slice(eq + 1)];
      if (name === 'dst') dst.push(value);
      else if (name === 'src') src.push(value);
      else if (name === 'dport') dport.push(value);
    }
    if (dst.length < 2 || src.length < 2 || dport.length < 1) continue;
    flows.push({ origDst: dst[0]!, origPortDst: Number(dport[0]), replySrc: src[1]! });
  }
  return flows;
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
    '--reply-src',
    filter.replySrc,
  ];
}
