/**
 * What kpx's objects read from the kernel's build configuration (__kconfig
 * externs), found where libbpf would look: /proc/config.gz, then
 * /boot/config-<release>. Many hosts and containers have neither; the
 * programs then take their fallback, where libbpf alone would refuse to
 * load them.
 */
import { readFileSync } from 'node:fs';
import { release } from 'node:os';
import { gunzipSync } from 'node:zlib';

function readKernelConfig(): string | undefined {
  try {
    return gunzipSync(readFileSync('/proc/config.gz')).toString('utf8');
  } catch {
    // not built in (CONFIG_IKCONFIG_PROC), or not readable here
  }
  try {
    return readFileSync(`/boot/config-${release()}`, 'utf8');
  } catch {
    return undefined;
  }
}

/** CONFIG_HZ in a kernel config's text, 0 when it says none. */
export function configHz(config: string | undefined): number {
  const m = config && /^CONFIG_HZ=(\d+)$/m.exec(config);
  return m ? Number(m[1]) : 0;
}

/** The kernel's tick rate, or 0 where its config cannot be read. */
export function kernelHz(): number {
  return configHz(readKernelConfig());
}

/** The kconfig text every kpx object is opened with (bpf/include/kpx_nat.h reads CONFIG_HZ; 0: unknown). */
export function objectKconfig(hz: number): string {
  return `CONFIG_HZ=${hz}\n`;
}
