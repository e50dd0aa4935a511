import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatSize, parseSize } from "../../src/units.js";
import { extentIndices } from "../../src/volume/region.js";

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

  it("splits ranges into extents", () => {
    assert.deepEqual(extentIndices(4095, 2, 4096), { first: 0, last: 1 });
    assert.deepEqual(extentIndices(8192, 4096, 4096), { first: 2, last: 2 });
    assert.deepEqual(extentIndices(0, 0, 4096), { first: 0, last: 0 });
  });
});
