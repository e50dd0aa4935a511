import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatSize, parseSize } from "../../src/units.js";
import { allocationRuns, extentIndices } from "../../src/volume/region.js";

describe("sizes and regions", () => {
  it("parses and formats binary sizes", () => {
    assert.equal(parseSize("4096"), 4096);
    assert.equal(parseSize("1GiB"), 2 ** 30);
    assert.equal(parseSize("512M"), 512 * 2 ** 20);
    assert.equal(parseSize("1.5k"), 1536);
    assert.throws(() => parseSize("1.3"), /whole number/);
    assert.throws(() => parseSize("ten"), /cannot read/);
    assert.equal(formatSize(3 * 2 ** 30), "3GiB");
  });

  it("splits ranges into extents and allocation runs", () => {
    assert.deepEqual(extentIndices(4095, 2, 4096), { first: 0, last: 1 });
    assert.deepEqual(extentIndices(8192, 4096, 4096), { first: 2, last: 2 });
    assert.deepEqual(allocationRuns(0, 100, [{ offset: 10, length: 20 }, { offset: 90, length: 50 }]), [
      { offset: 0, length: 10, allocated: false },
      { offset: 10, length: 20, allocated: true },
      { offset: 30, length: 60, allocated: false },
      { offset: 90, length: 10, allocated: true },
    ]);
  });
});
