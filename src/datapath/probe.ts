/**
 * What the running kernel offers the eBPF datapath, and the datapath that
 * follows from it. `probeKernel` asks the kernel (program types, map types,
 * attach types, and the helpers kpx's programs call, per program type);
 * `chooseMode` turns the answer and `--mode` into a decision with a reason.
 * Probing loads throwaway programs and closes them: nothing is attached.
 */
import { closeSync } from 'node:fs';
import * as bpf from './libbpf.js';

export interface FeatureReport {
  /** Features the eBPF datapath needs and the kernel lacks (or that could not be probed, with why). */
  missing: string[];
  /** Every feature looked at. */
  checked: string[];
}

export type RequestedMode = 'auto' | 'ebpf' | 'iptables';
export type ModeChoice = { mode: 'ebpf' | 'iptables'; reason: string } | { error: string };

/** enum bpf_prog_type values of the programs kpx loads. */
export const PROG_TYPE = { sched_cls: 3, xdp: 6, cgroup_sock: 9, cgroup_sock_addr: 18 } as const;
export type ProgTypeName = keyof typeof PROG_TYPE;

/** enum bpf_map_type values of kpx_maps.h. */
export const MAP_TYPE = { hash: 1, array: 2, lru_hash: 9, sk_storage: 24 } as const; // sk_storage: Linux 5.2

/** enum bpf_attach_type values of kpx_sock.o's programs. */
export const SOCK_ATTACH = { connect4: 10, post_bind4: 12, sendmsg4: 14, recvmsg4: 19, getpeername4: 29 } as const;

/** The SEC() names of kpx_sock.o, with their program type and attach type. */
const SOCKET_ATTACH_TYPES: ReadonlyArray<{ section: string; progType: ProgTypeName; attachType: number }> = [
  { section: 'cgroup/connect4', progType: 'cgroup_sock_addr', attachType: SOCK_ATTACH.connect4 },
  { section: 'cgroup/sendmsg4', progType: 'cgroup_sock_addr', attachType: SOCK_ATTACH.sendmsg4 },
  { section: 'cgroup/recvmsg4', progType: 'cgroup_sock_addr', attachType: SOCK_ATTACH.recvmsg4 },
  { section: 'cgroup/getpeername4', progType: 'cgroup_sock_addr', attachType: SOCK_ATTACH.getpeername4 }, // Linux 5.8
  { section: 'cgroup/post_bind4', progType: 'cgroup_sock', attachType: SOCK_ATTACH.post_bind4 },
];

/** enum bpf_func_id values (linux/bpf.h) of the helpers kpx's programs call. */
const HELPER_ID = {
  bpf_get_prandom_u32: 7,
  bpf_skb_store_bytes: 9,
  bpf_l4_csum_replace: 11,
  bpf_redirect: 23,
  bpf_skb_pull_data: 39,
  bpf_get_socket_cookie: 46,
  bpf_fib_lookup: 69,
  bpf_sk_storage_get: 107, // in cgroup sock_addr programs since Linux 5.3
  bpf_jiffies64: 118, // Linux 5.5
  bpf_redirect_neigh: 152,
  bpf_ktime_get_coarse_ns: 160, // Linux 5.11
  bpf_set_retval: 187, // Linux 5.18
} as const;
export type HelperName = keyof typeof HELPER_ID;

/**
 * Helper availability can depend on the attach type (bpf_set_retval is
 * refused to recvmsg and getpeername programs): each type is probed as the
 * kpx program that calls the helpers is attached.
 */
const HELPER_PROBE_ATTACH_TYPE: Record<ProgTypeName, number> = {
  cgroup_sock_addr: SOCK_ATTACH.connect4,
  cgroup_sock: SOCK_ATTACH.post_bind4,
  sched_cls: 0,
  xdp: 0,
};

/** Per program type, the helpers bpf/kpx_sock.c and bpf/kpx_net.c (with their headers) call; map helpers exist wherever the type does. */
const HELPERS_BY_PROG_TYPE: Record<ProgTypeName, readonly HelperName[]> = {
  cgroup_sock_addr: ['bpf_set_retval', 'bpf_get_socket_cookie', 'bpf_get_prandom_u32', 'bpf_sk_storage_get'],
  cgroup_sock: ['bpf_set_retval'],
  sched_cls: [
    'bpf_fib_lookup',
    'bpf_redirect_neigh',
    'bpf_skb_pull_data',
    'bpf_skb_store_bytes',
    'bpf_l4_csum_replace', // CHECKSUM_COMPLETE packets only
    'bpf_ktime_get_coarse_ns',
    'bpf_jiffies64',
    'bpf_get_prandom_u32',
  ],
  xdp: ['bpf_fib_lookup', 'bpf_redirect', 'bpf_ktime_get_coarse_ns', 'bpf_jiffies64', 'bpf_get_prandom_u32'],
};

/** Kernel functions kpx_net.c's tc programs call: bpf_cast_to_kern_ctx (Linux 6.3), whose CO-RE access needs kernel BTF too. */
const KFUNCS = ['bpf_cast_to_kern_ctx'] as const;

/** tcx links (Linux 6.6), attached per --interfaces device. */
const TCX_ATTACH_TYPES = [
  { name: 'tcx_ingress', attachType: bpf.ATTACH.tcxIngress },
  { name: 'tcx_egress', attachType: bpf.ATTACH.tcxEgress },
] as const;

/** An ifindex no device has: a tcx attach to it can only get as far as the device lookup. */
const NO_SUCH_IFINDEX = 0x7fffffff;
const EPERM = 1;
const EACCES = 13;
const EINVAL = 22;
const ENODEV = 19;

/** `return 1`: valid in every program type kpx uses, and a verdict that lets everything through. */
const RETURN_ONE = bpf.constantProgram(1);

/** `call helper; return 1`. */
function callingHelper(helperId: number): Buffer {
  const call = Buffer.from([0x85, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
  call.writeInt32LE(helperId, 4);
  return Buffer.concat([call, RETURN_ONE]);
}

/** What the verifier says of a helper the kernel lacks (unknown ID), or lacks for this program type (before and since 6.2). */
const HELPER_UNAVAILABLE = ['invalid func ', 'unknown func ', 'program of this type cannot use helper '];

interface FeatureCheck {
  name: string;
  /** The check of this program type itself. */
  definesProgType?: ProgTypeName;
  /** The program type this feature is used from: skipped when the type itself is missing. */
  progType?: ProgTypeName;
  supported: () => boolean;
}

const FEATURE_CHECKS: readonly FeatureCheck[] = [
  ...(Object.keys(PROG_TYPE) as ProgTypeName[]).map((type) => ({
    name: `prog type ${type}`,
    definesProgType: type,
    supported: () => bpf.probeProgramType(PROG_TYPE[type]),
  })),
  ...(Object.keys(MAP_TYPE) as Array<keyof typeof MAP_TYPE>).map((type) => ({
    name: `map type ${type}`,
    supported: () => bpf.probeMapType(MAP_TYPE[type]),
  })),
  ...SOCKET_ATTACH_TYPES.map(({ section, progType, attachType }) => ({
    name: `attach type ${section}`,
    progType,
    supported: () => loadsWithAttachType(PROG_TYPE[progType], attachType),
  })),
  ...TCX_ATTACH_TYPES.map(({ name, attachType }) => ({
    name: `attach type ${name}`,
    progType: 'sched_cls' as const,
    supported: () => tcxAttachTypeExists(attachType),
  })),
  ...KFUNCS.map((kfunc) => ({
    name: `kfunc ${kfunc} in sched_cls`,
    progType: 'sched_cls' as const,
    supported: () => bpf.kernelHasFunc(kfunc),
  })),
  ...(Object.keys(HELPERS_BY_PROG_TYPE) as ProgTypeName[]).flatMap((progType) =>
    HELPERS_BY_PROG_TYPE[progType].map((helper) => ({
      name: `helper ${helper} in ${progType}`,
      progType,
      supported: () => helperAvailable(progType, helper),
    })),
  ),
];

/** The kernel refuses an expected attach type it does not know with EINVAL at load time. */
function loadsWithAttachType(progType: number, attachType: number): boolean {
  let fd: number;
  try {
    fd = bpf.loadProgram(progType, attachType, RETURN_ONE);
  } catch (err) {
    if (err instanceof bpf.BpfError && err.errno === EINVAL) return false;
    throw err;
  }
  closeSync(fd);
  return true;
}

/**
 * A program calling the helper either loads, or is refused: for the helper
 * itself (see HELPER_UNAVAILABLE), or further on (arguments a bare call
 * does not satisfy), which means the verifier accepted the call.
 */
export function helperAvailable(progType: ProgTypeName, helper: HelperName): boolean {
  let fd: number;
  try {
    fd = bpf.loadProgram(PROG_TYPE[progType], HELPER_PROBE_ATTACH_TYPE[progType], callingHelper(HELPER_ID[helper]));
  } catch (err) {
    if (!(err instanceof bpf.ProgramLoadError)) throw err;
    if (HELPER_UNAVAILABLE.some((said) => err.verifierLog.includes(said))) return false;
    if ((err.errno === EINVAL || err.errno === EACCES) && err.verifierLog !== '') return true;
    throw err;
  }
  closeSync(fd);
  return true;
}

/**
 * A tcx link is created through BPF_LINK_CREATE with BPF_TCX_INGRESS/EGRESS
 * (46/47). A kernel with tcx (6.6+) accepts the attach type and only then
 * looks the device up, so an ifindex no device has gives ENODEV. An older
 * kernel does not map those attach types to sched_cls programs and refuses
 * with EINVAL before any device lookup. Either way nothing is attached.
 */
function tcxAttachTypeExists(attachType: number): boolean {
  const progFd = bpf.loadProgram(PROG_TYPE.sched_cls, 0, RETURN_ONE);
  try {
    // Should a device have that index after all, the link (never pinned) goes with its fd.
    closeSync(bpf.linkCreate(progFd, NO_SUCH_IFINDEX, attachType));
    return true;
  } catch (err) {
    if (err instanceof bpf.BpfError && err.errno === ENODEV) return true;
    if (err instanceof bpf.BpfError && err.errno === EINVAL) return false;
    throw err;
  } finally {
    closeSync(progFd);
  }
}

/**
 * Without the privilege to load programs (CAP_BPF with CAP_NET_ADMIN, or
 * root) every probe fails, and libbpf's type probes would blame the kernel.
 */
const PRIVILEGE = 'privilege to load BPF programs (CAP_BPF and CAP_NET_ADMIN, or root)';

function mayLoadPrograms(): boolean {
  try {
    closeSync(bpf.loadProgram(PROG_TYPE.sched_cls, 0, RETURN_ONE));
  } catch (err) {
    if (err instanceof bpf.BpfError && (err.errno === EPERM || err.errno === EACCES)) return false;
  }
  return true;
}

/** The names of every feature the eBPF datapath needs, in probing order. */
export function featureNames(): string[] {
  return [PRIVILEGE, ...FEATURE_CHECKS.map((c) => c.name)];
}

export interface ProbeOptions {
  /**
   * A probe result to use instead of asking the kernel, as JSON
   * `{"missing": [...], "checked"?: [...]}` (tests and operators simulate an
   * older kernel with it; the CLI passes KPX_PROBE_OVERRIDE).
   */
  override?: string;
}

/**
 * What the kernel lacks of what kpx's eBPF datapath needs. Without the
 * privilege to load programs that is the one finding; a probe that fails
 * otherwise counts its feature as missing, with why.
 * Throws only for an override that is not valid JSON of the right shape.
 */
export function probeKernel(options: ProbeOptions = {}): FeatureReport {
  if (options.override !== undefined && options.override.trim() !== '') {
    const parsed = parseProbeOverride(options.override);
    if ('error' in parsed) throw new Error(parsed.error);
    return parsed;
  }
  if (!mayLoadPrograms()) return { missing: [PRIVILEGE], checked: [PRIVILEGE] };
  const missing: string[] = [];
  const checked: string[] = [PRIVILEGE];
  const missingProgTypes = new Set<ProgTypeName>();
  for (const check of FEATURE_CHECKS) {
    // Whatever is used from a program type the kernel lacks fails for that
    // reason alone: the missing type is the finding that matters.
    if (check.progType !== undefined && missingProgTypes.has(check.progType)) continue;
    checked.push(check.name);
    let supported: boolean;
    try {
      supported = check.supported();
    } catch (err) {
      missing.push(`${check.name} (probe failed: ${(err as Error).message})`);
      continue;
    }
    if (supported) continue;
    missing.push(check.name);
    if (check.definesProgType !== undefined) missingProgTypes.add(check.definesProgType);
  }
  return { missing, checked };
}

/** Parses a probe override; `checked` defaults to every feature kpx probes, plus any missing one not among them. */
export function parseProbeOverride(text: string): FeatureReport | { error: string } {
  const shape = 'expected JSON like {"missing": ["attach type cgroup/connect4"], "checked": [...]} ("checked" optional)';
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { error: `probe override: ${shape}; ${(err as Error).message}` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { error: `probe override: ${shape}; got ${text}` };
  const { missing, checked } = value as { missing?: unknown; checked?: unknown };
  if (!isStringArray(missing)) return { error: `probe override: "missing" must be an array of strings; ${shape}` };
  if (checked !== undefined && !isStringArray(checked)) return { error: `probe override: "checked" must be an array of strings; ${shape}` };
  const all = checked ?? featureNames();
  return { missing, checked: [...all, ...missing.filter((name) => !all.includes(name))] };
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}

/** The datapath for `--mode`, given what the kernel offers. */
export function chooseMode(requested: RequestedMode, report: FeatureReport): ModeChoice {
  const missingText = `missing for the eBPF datapath: ${report.missing.join(', ')}`;
  switch (requested) {
    case 'iptables':
      return { mode: 'iptables', reason: 'forced by --mode iptables' };
    case 'ebpf':
      if (report.missing.length > 0) return { error: `--mode ebpf: ${missingText} (--mode auto falls back to iptables)` };
      return { mode: 'ebpf', reason: `forced by --mode ebpf; the kernel has all ${report.checked.length} features checked` };
    case 'auto':
      if (report.missing.length > 0) return { mode: 'iptables', reason: missingText };
      return { mode: 'ebpf', reason: `the kernel has all ${report.checked.length} features the eBPF datapath needs` };
    default:
      return { error: `unknown mode "${requested as string}" (expected auto, ebpf or iptables)` };
  }
}
