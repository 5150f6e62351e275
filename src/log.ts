/** The one pino instance of a process, created by the CLI and passed down. */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string): Logger {
  return pino({ level, base: { app: 'kpx' } });
}
