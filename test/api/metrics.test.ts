import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NodeMetrics } from "../../src/api/metrics.js";
import { silentLogger } from "../../src/logger.js";

describe("node metrics", () => {
  it("exports request counts, bytes and cumulative latency buckets in the Prometheus format", async () => {
    const metrics = new NodeMetrics({ groups: () => [], volumes: () => [], links: () => [], replicas: () => [], nbdPoll: () => ({ windows: 12, turns: 345 }) }, silentLogger);
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
    assert.match(text, /^lockstep_nbd_poll_windows_total 12$/m);
    assert.match(text, /^lockstep_nbd_poll_turns_total 345$/m);
  });

  it("exports each link's state, LSNs, lag and bytes, and each replica's progress", async () => {
    const link = { group: "db", peer: "site-b", streaming: true, consistent: false, durableLsn: 90n, appliedLsn: 80n, lagRecords: 20, recordBytesSent: 123456, regionBytesSent: 4096, connects: 3, overflows: 1 };
    const replica = { name: "logs", appliedLsn: 77n, consistent: true, appliedRecords: 70 };
    const metrics = new NodeMetrics({ groups: () => [], volumes: () => [], links: () => [link], replicas: () => [replica], nbdPoll: () => ({ windows: 0, turns: 0 }) }, silentLogger);
    const text = await metrics.text();
    assert.match(text, /^lockstep_link_streaming\{group="db",peer="site-b"\} 1$/m);
    assert.match(text, /^lockstep_link_consistent\{group="db",peer="site-b"\} 0$/m);
    assert.match(text, /^lockstep_link_applied_lsn\{group="db",peer="site-b"\} 80$/m);
    assert.match(text, /^lockstep_link_lag_records\{group="db",peer="site-b"\} 20$/m);
    assert.match(text, /^lockstep_link_region_bytes_sent_total\{group="db",peer="site-b"\} 4096$/m);
    assert.match(text, /^lockstep_link_overflows_total\{group="db",peer="site-b"\} 1$/m);
    assert.match(text, /^lockstep_replica_applied_lsn\{group="logs"\} 77$/m);
    assert.match(text, /^lockstep_replica_consistent\{group="logs"\} 1$/m);
  });
});
