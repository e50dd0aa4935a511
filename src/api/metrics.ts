// Prometheus metrics for one node: NBD requests (counts, bytes, latency histograms), NBD
// connections and protocol errors, log usage per group, volume errors. Hot-path updates go to
// pre-resolved label children, so a request costs a few additions, not a label lookup.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { NbdObserver, NbdRequestKind } from "../nbd/export.js";
import type { Logger } from "../logger.js";

export interface MetricSources {
  groups(): readonly {
    name: string;
    log: { usage(): { sizeBytes: number; usedBytes: number; headLsn: bigint; durableLsn: bigint; syncs: number; batches: number } };
    stats: { stalls: number; logFullErrors: number; checkpoints: number };
  }[];
  volumes(): readonly { name: string; errorCount: number; size: number }[];
}

const kinds: readonly NbdRequestKind[] = ["read", "write", "flush", "trim", "zero", "cache", "block_status", "disc"];

export class NodeMetrics implements NbdObserver {
  readonly registry = new Registry();
  private readonly requests: Counter<"kind" | "result">;
  private readonly bytes: Counter<"kind">;
  private readonly latency: Histogram<"kind">;
  private readonly connections: Gauge;
  private readonly protocolErrors: Counter<"code">;
  private readonly okChildren = new Map<string, { inc(value?: number): void }>();
  private readonly bytesChildren = new Map<string, { inc(value?: number): void }>();
  private readonly latencyChildren = new Map<string, { observe(value: number): void }>();
  private openConnections = 0;

  constructor(
    private readonly sources: MetricSources,
    private readonly logger: Logger,
  ) {
    collectDefaultMetrics({ register: this.registry, prefix: "lockstep_process_" });
    this.requests = new Counter({ name: "lockstep_nbd_requests_total", help: "NBD requests by kind and result (ok or error code)", labelNames: ["kind", "result"], registers: [this.registry] });
    this.bytes = new Counter({ name: "lockstep_nbd_bytes_total", help: "Bytes moved by NBD requests", labelNames: ["kind"], registers: [this.registry] });
    this.latency = new Histogram({
      name: "lockstep_nbd_request_duration_seconds",
      help: "NBD request latency, receipt of the request to the reply",
      labelNames: ["kind"],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
      registers: [this.registry],
    });
    this.connections = new Gauge({ name: "lockstep_nbd_connections", help: "Open NBD connections", registers: [this.registry], collect: () => undefined });
    this.protocolErrors = new Counter({ name: "lockstep_nbd_protocol_errors_total", help: "NBD protocol violations by error code", labelNames: ["code"], registers: [this.registry] });
    for (const kind of kinds) {
      this.okChildren.set(kind, this.requests.labels(kind, "ok"));
      this.bytesChildren.set(kind, this.bytes.labels(kind));
      this.latencyChildren.set(kind, this.latency.labels(kind));
    }
    this.registerLogGauges();
  }

  private registerLogGauges(): void {
    const sources = this.sources;
    const perGroup = (name: string, help: string, value: (group: ReturnType<MetricSources["groups"]>[number]) => number) =>
      new Gauge({
        name, help, labelNames: ["group"], registers: [this.registry],
        collect() {
          for (const group of sources.groups()) this.set({ group: group.name }, value(group));
        },
      });
    perGroup("lockstep_log_size_bytes", "Size of the group log's record area", (group) => group.log.usage().sizeBytes);
    perGroup("lockstep_log_used_bytes", "Bytes of the group log holding records still needed", (group) => group.log.usage().usedBytes);
    perGroup("lockstep_log_head_lsn", "Newest LSN appended to the group log", (group) => Number(group.log.usage().headLsn));
    perGroup("lockstep_log_durable_lsn", "Newest LSN made durable in the group log", (group) => Number(group.log.usage().durableLsn));
    perGroup("lockstep_log_syncs_total", "fdatasync calls on the group log (group commits)", (group) => group.log.usage().syncs);
    perGroup("lockstep_log_batches_total", "Batched writes to the group log", (group) => group.log.usage().batches);
    perGroup("lockstep_group_stalls_total", "Writes that waited for log room", (group) => group.stats.stalls);
    perGroup("lockstep_group_log_full_errors_total", "Writes refused because the log stayed full", (group) => group.stats.logFullErrors);
    perGroup("lockstep_group_checkpoints_total", "Checkpoints (volumes made durable, log released)", (group) => group.stats.checkpoints);
    new Gauge({
      name: "lockstep_volume_errors_total", help: "Disk errors on a volume's image", labelNames: ["volume"], registers: [this.registry],
      collect() {
        for (const volume of sources.volumes()) this.set({ volume: volume.name }, volume.errorCount);
      },
    });
    new Gauge({
      name: "lockstep_volume_size_bytes", help: "Volume size", labelNames: ["volume"], registers: [this.registry],
      collect() {
        for (const volume of sources.volumes()) this.set({ volume: volume.name }, volume.size);
      },
    });
  }

  connectionOpened(): void {
    this.openConnections += 1;
    this.connections.set(this.openConnections);
  }

  connectionClosed(remote: string, reason: string): void {
    this.openConnections -= 1;
    this.connections.set(this.openConnections);
    this.logger.debug({ remote, reason }, "nbd connection closed");
  }

  request(kind: NbdRequestKind, _exportName: string, bytes: number, latencyMs: number, errorCode: string | undefined): void {
    if (errorCode === undefined) this.okChildren.get(kind)!.inc();
    else this.requests.labels(kind, errorCode).inc();
    if (bytes > 0) this.bytesChildren.get(kind)!.inc(bytes);
    this.latencyChildren.get(kind)!.observe(latencyMs / 1000);
  }

  protocolError(remote: string, code: string, message: string): void {
    this.protocolErrors.labels(code).inc();
    this.logger.warn({ remote, code }, message);
  }

  get nbdConnections(): number {
    return this.openConnections;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
