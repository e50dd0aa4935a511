import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NodeMetrics } from "../../src/api/metrics.js";
import { silentLogger } from "../../src/logger.js";

describe("node metrics", () => {
  it("exports request counts, bytes and cumulative latency buckets in the Prometheus format", async () => {
    const metrics = new NodeMetrics({ groups: () => [], volumes: () => [] }, silentLogger);
    metrics.request("write", "v", 4096, 0.2, undefined); // 0.2 ms
    metrics.request("write", "v", 4096, 3, undefined); // 3 ms
    metrics.request("write", "v", 0, 0.04, "WRITE_OUT_OF_RANGE");
    metrics.request("read", "v", 512, 7000, undefined); // 7 s: only +Inf
    const text = await metrics.text();
    assert.match(text, /^lockstep_nbd_requests_total\{kind="write",result="ok"\} 2$/m);
    assert.match(text, /^lockstep_nbd_requests_total\{kind="write",result="WRITE_OUT_OF_RANGE"\} 1$/m);
    assert.match(text, /^lockstep_nbd_bytes_total\{kind="write"\} 8192$/m);
    assert.match(text, /^lockstep_nbd_request_duration_seconds_bucket\{le="0.00005",kind="write"\} 1$/m);
    assert.match(text, /^lockstep_nbd_request_duration_seconds_bucket\{le="0.00025",kind="write"\} 2$/m);
    assert.match(text, /^lockstep_nbd_request_duration_seconds_bucket\{le="0.005",kind="write"\} 3$/m);
    assert.match(text, /^lockstep_nbd_request_duration_seconds_bucket\{le="5",kind="read"\} 0$/m);
    assert.match(text, /^lockstep_nbd_request_duration_seconds_bucket\{le="\+Inf",kind="read"\} 1$/m);
    assert.match(text, /^lockstep_nbd_request_duration_seconds_count\{kind="write"\} 3$/m);
    assert.match(text, /^# TYPE lockstep_nbd_request_duration_seconds histogram$/m);
  });
});
