// Planning a twin build (replication/twins.ts): which twins the peer keeps, builds and drops.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { doomedTwins, planTwins, treeOrder, type Twin } from "../../src/replication/twins.js";

const twin = (name: string, parent: string | null, createdLsn = 10n, extra: Partial<Twin> = {}): Twin => ({ name, parent, writable: false, size: 1 << 20, createdLsn, ...extra });

describe("twin build planning", () => {
  it("keeps identical twins it missed nothing of, builds missing, stale and changed ones", () => {
    const primary = [twin("a", null), twin("b", "a"), twin("c", null, 30n), twin("d", null, 40n), twin("e", null, 50n, { size: 2 << 20 })];
    const peer = [twin("a", null), twin("b", "a"), twin("d", null, 41n), twin("e", null, 50n)];
    const plan = planTwins(primary, peer, new Set(["b"]));
    assert.deepEqual(plan.map((entry) => [entry.name, entry.build]), [["a", false], ["b", true], ["c", true], ["d", true], ["e", true]]);
    assert.deepEqual(planTwins(primary, peer, null).map((entry) => entry.build), [true, true, true, true, true], "all stale: everything is built");
  });

  it("drops the peer's twins the primary lacks or that have another parent, with every twin taken of them, children first", () => {
    const peer = [twin("gone", null), twin("child", "gone"), twin("moved", null), twin("under", "moved"), twin("stays", null)];
    const primary = [twin("moved", "stays"), twin("stays", null), twin("under", "moved")];
    assert.deepEqual(doomedTwins(peer, primary), ["child", "gone", "under", "moved"]);
    const plan = planTwins(primary, peer, new Set());
    assert.deepEqual(plan.map((entry) => [entry.name, entry.build]), [["stays", false], ["moved", true], ["under", true]], "what goes with a doomed parent is built again");
  });

  it("orders parents before children", () => {
    const ordered = treeOrder([twin("c", "b"), twin("b", "a"), twin("a", null), twin("x", null)]);
    assert.deepEqual(ordered.map((entry) => entry.name), ["a", "b", "c", "x"]);
  });
});
