// Asynchronous I/O that completes on another thread (node:fs calls, LMDB's commits) finishes at
// a moment nobody controls. In a node that does not matter and the operation simply runs. The
// deterministic simulator (src/sim/) runs two nodes in one process on simulated disks and a
// simulated clock; these few real operations on its path (small state files, the snapshot
// metadata) would make the order of events depend on the machine's timing. So each goes
// through scheduleIo(): the simulator installs a scheduler that starts one operation at a
// time, in the order they were asked for, only while the simulated world is idle, and refuses
// those of a node it has crashed. `path` names the file or directory (the simulator tells the
// nodes apart by it).

export type IoScheduler = <T>(path: string, operation: () => Promise<T>) => Promise<T>;

let scheduler: IoScheduler | null = null;

export function scheduleIo<T>(path: string, operation: () => Promise<T>): Promise<T> {
  return scheduler === null ? operation() : scheduler(path, operation);
}

// The simulator's hook; null restores the default (run at once).
export function installIoScheduler(next: IoScheduler | null): void {
  scheduler = next;
}
