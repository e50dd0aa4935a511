// The event loop's poll window after a reply (nbd/poll-window.ts): it keeps the loop turning
// for windowMicros after the last extend(), then stops; a window of 0 never turns; stop() ends
// it. An NBD server polls after each reply only when asked to (the node passes nbd.pollMicros).

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PollWindow } from "../../src/nbd/poll-window.js";
import { MemoryExport } from "./memory-export.js";
import { RawClient } from "./raw-client.js";
import { flushSlowThenFast, run, startHarness, waitFor } from "./harness.js";

// A clock that moves 10 µs each time it is read.
function steppingClock(): () => number {
  let now = 0;
  return () => (now += 0.01);
}

const settled = (window: PollWindow) => waitFor(() => !window.active, 2000);

describe("PollWindow", () => {
  it("turns the loop until the window after the last extend has passed, then stops", async () => {
    const window = new PollWindow(200, steppingClock());
    window.extend();
    assert.ok(window.active);
    await settled(window);
    const first = window.turns;
    assert.ok(first >= 10 && first <= 25, `${first} turns for a 200 µs window read every 10 µs`);
    window.extend();
    await settled(window);
    assert.ok(window.turns > first, "a later extend starts a new window");
  });

  it("never turns with a window of 0, and stop() ends a window at once", async () => {
    const none = new PollWindow(0, steppingClock());
    none.extend();
    assert.equal(none.active, false);
    const endless = new PollWindow(1000, () => 0); // the clock never moves: only stop() ends it
    endless.extend();
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(endless.active && endless.turns > 0);
    endless.stop();
    await settled(endless);
    const spins = endless.turns;
    endless.extend();
    assert.equal(endless.active, false, "a stopped window stays stopped");
    assert.equal(endless.turns, spins);
  });

  it("a reply opens a window only when nothing else of its connection is in flight", async () => {
    const disk = new MemoryExport("disk", 1 << 20);
    const harness = await startHarness([disk], { pollMicros: 500 });
    const client = await RawClient.connect(harness.socketPath);
    const window = harness.server.pollWindow;
    try {
      await client.handshake("disk");
      await settled(window);
      const before = window.windows;
      await flushSlowThenFast(client, disk);
      assert.equal((await client.reply()).handleLow, 2);
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(window.windows, before, "a window opened while flush 1 was still in flight");
      assert.equal((await client.reply()).handleLow, 1);
      await waitFor(() => window.windows === before + 1);
    } finally {
      client.destroy();
      await harness.close();
    }
  });

  it("an NBD server polls after replies only with pollMicros set", async () => {
    for (const pollMicros of [0, 500]) {
      const harness = await startHarness([new MemoryExport("disk", 1 << 20)], { pollMicros });
      try {
        const result = await run("qemu-io", ["-f", "raw", harness.uri("disk"), "-c", "write -P 0x11 0 4k", "-c", "read -P 0x11 0 4k"]);
        assert.equal(result.code, 0, result.stderr);
        if (pollMicros === 0) assert.equal(harness.server.pollWindow.turns, 0);
        else assert.ok(harness.server.pollWindow.turns > 0, "no polling after the replies");
      } finally {
        await harness.close();
      }
    }
  });
});
