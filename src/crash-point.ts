// Named points where a test may have the process die at once (SIGKILL, as a power cut or a
// kill -9 would), to prove that recovery handles exactly that moment. Off unless the
// environment variable LOCKSTEP_CRASH_POINT names the point; read once at start.
//
//   operation-logged             the primary: an operation's record is durable, not performed
//   operation-performed          the primary: performed (committed), writes not resumed yet
//   replica-operation-received   a secondary: the record is durable in its log, not performed
//   replica-operation-performed  a secondary: performed, its applied LSN not advanced yet

const armed = process.env.LOCKSTEP_CRASH_POINT ?? null;

export type CrashPointName = "operation-logged" | "operation-performed" | "replica-operation-received" | "replica-operation-performed";

export function crashPoint(name: CrashPointName): void {
  if (armed === name) process.kill(process.pid, "SIGKILL");
}
