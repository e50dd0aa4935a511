// Structured logs: one JSON object per line on stderr (pino). Subsystems take a child logger
// with their own `subsystem` field; nothing logs through console.*.

import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino(
    { level: options.level ?? process.env.LOCKSTEP_LOG_LEVEL ?? "info", base: { node: options.name } },
    pino.destination({ fd: 2, sync: false }),
  );
}

// For tests and tools: a logger that drops everything.
export const silentLogger: Logger = pino({ level: "silent" });
