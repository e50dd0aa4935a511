// Freezes a process for a point-in-time read of its files: SIGSTOP, then waits until every one
// of its threads is stopped. kill() returns once the signal is queued, not once it took effect:
// a thread in the middle of a system call (a thread-pool write of a replica's run of records,
// say) runs on until the call returns, and a reader that started at once could see a later
// write of the run and not an earlier one.

import { readdirSync, readFileSync } from "node:fs";

const stopWaitMsMax = 2_000;

// The state letter of each thread of pid (/proc/pid/task/*/stat, the field after the name).
function threadStates(pid: number): string[] {
  const states: string[] = [];
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${task}/stat`, "utf8");
      states.push(stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3));
    } catch {
      // the thread ended meanwhile
    }
  }
  return states;
}

export function freezeProcess(pid: number): void {
  process.kill(pid, "SIGSTOP");
  const startMs = Date.now();
  for (;;) {
    const states = threadStates(pid);
    if (states.every((state) => state === "T" || state === "t")) return;
    if (Date.now() - startMs > stopWaitMsMax) {
      process.kill(pid, "SIGCONT"); // never leave it stopped: the caller's clean-up must be able to stop it
      throw new Error(`process ${pid}: threads not stopped ${stopWaitMsMax} ms after SIGSTOP (states ${states.join("")})`);
    }
  }
}
