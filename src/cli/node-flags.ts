// Node flags a `lockstep serve` process is started with. The lockstep command carries them in
// its first line (bin/lockstep.js: `#!/usr/bin/env -S node <flags>`); every place that starts a
// node with `node bin/lockstep.js serve` (the demo, the tests, the bench) passes them too, and a
// node started without them says so in its log.
//
// --initial-old-space-size=128: a node that had served small writes for a while and then took
// 1 MiB writes ran a full (mark-compact) garbage collection 20 to 30 times a second: V8 started
// incremental marking whenever the old generation's room (its limit, about 40 MB for a 17 MB
// heap, less what is used) fell below the young generation's capacity, and each 1 MiB payload
// that outlived two scavenges brought that closer. The writes cost 4.4 ms of CPU per MiB instead
// of 1.4 (`--trace-gc`: 465 full collections against 1 in a 15 s run, 360 against 670-900 MiB/s).
// A larger initial old generation keeps the room above that line (128 MB: 1 full collection in
// that run; 64 MB: 131; 256 MB: 1, with about 80 MB more RSS); the heap itself stays small (the
// node's RSS was about 210 MB instead of 145 MB). Setting it at run time (v8.setFlagsFromString)
// has no effect: V8 reads it when the heap is made.
export const serveNodeFlags: readonly string[] = ["--initial-old-space-size=128"];

// The flags of serveNodeFlags this process was not started with.
export function serveNodeFlagsMissing(execArgv: readonly string[] = process.execArgv): string[] {
  return serveNodeFlags.filter((flag) => !execArgv.includes(flag));
}
