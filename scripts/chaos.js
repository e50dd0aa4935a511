#!/usr/bin/env node
// `npm run chaos -- --minutes M [--seed S] [--trials N] [--trial-seconds T] [--planted-bug NAME]
// [--keep] [--dir DIR]`: process-level chaos trials against real `lockstep` processes (kill -9,
// SIGSTOP/SIGCONT, link cuts through the fault proxy) under the tagged-block workload, each
// judged by the prefix checker and qemu-img compare. The runner is test/chaos/chaos-main.ts,
// compiled to dist/ by `npm run build`; its header says what it prints.

await import("../dist/test/chaos/chaos-main.js");
