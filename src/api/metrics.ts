// Prometheus metrics for one node: NBD requests (counts, bytes, latency histograms, kept by
// request-tallies.ts in plain numbers until a scrape), NBD connections, protocol errors and
// the event loop's polling after replies,
// log usage per group, volume errors, and replication: per link (state, consistency, LSNs,
// lag, bytes sent, overflows) and per replica (applied LSN, consistency).

import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from "prom-client";
import type { NbdObserver, NbdRequestKind } from "../nbd/export.js";
import { RequestTallies } from "./request-tallies.js";
import type { Logger } from "../logger.js";

export interface MetricSources {
  groups(): readonly {
    name: string;
    log: { usage(): { sizeBytes: number; usedBytes: number; headLsn: bigint; durableLsn: bigint; syncs: number; batches: number } };
    stats: { stalls: number; logFullErrors: number; checkpoints: number };
  }[];
  volumes(): readonly { name: string; errorCount: number; size: number; snapshots: SnapshotMetricsView | null }[];
  links(): readonly LinkMetricsView[];
  replicas(): readonly { name: string; appliedLsn: bigint; consistent: boolean; appliedRecords: number }[];
  nbdPoll(): { readonly windows: number; readonly turns: number }; // the NBD server's PollWindow
}

export interface SnapshotMetricsView {
  readonly snapshots: number;
  readonly usedBytes: number;
  readonly storeBytesMax: number;
  readonly stats: { readonly preservedChunks: number; readonly storeFullErrors: number };
}

export interface LinkMetricsView {
  readonly group: string;
  readonly peer: string;
  readonly streaming: boolean;
  readonly consistent: boolean;
  readonly durableLsn: bigint;
  readonly appliedLsn: bigint;
  readonly lagRecords: number;
  readonly recordBytesSent: number;
  readonly regionBytesSent: number;
  readonly connects: number;
  readonly overflows: number;
}

export class NodeMetrics implements NbdObserver {
  readonly registry = new Registry();
  private readonly tallies = new RequestTallies();
  private readonly connections: Gauge;
  private readonly protocolErrors: Counter<"code">;
  private openConnections = 0;

  constructor(
    private readonly sources: MetricSources,
    private readonly logger: Logger,
  ) {
    collectDefaultMetrics({ register: this.registry, prefix: "lockstep_process_" });
    for (const metric of this.tallies.metrics()) this.registry.registerMetric(metric as unknown as Metric);
    this.connections = new Gauge({ name: "lockstep_nbd_connections", help: "Open NBD connections", registers: [this.registry], collect: () => undefined });
    this.protocolErrors = new Counter({ name: "lockstep_nbd_protocol_errors_total", help: "NBD protocol violations by error code", labelNames: ["code"], registers: [this.registry] });
    this.registerLogGauges();
    this.registerReplicationGauges();
    this.registerPollGauges();
  }

  private registerPollGauges(): void {
    const sources = this.sources;
    const poll = (name: string, help: string, value: (window: { windows: number; turns: number }) => number) =>
      new Gauge({
        name, help, registers: [this.registry],
        collect() {
          this.set(value(sources.nbdPoll()));
        },
      });
    poll("lockstep_nbd_poll_windows_total", "Times the event loop polled after a reply instead of sleeping (nbd.pollMicros)", (window) => window.windows);
    poll("lockstep_nbd_poll_turns_total", "Event loop turns spent polling after replies", (window) => window.turns);
  }

  private registerReplicationGauges(): void {
    const sources = this.sources;
    const perLink = (name: string, help: string, value: (link: LinkMetricsView) => number) =>
      new Gauge({
        name, help, labelNames: ["group", "peer"], registers: [this.registry],
        collect() {
          for (const link of sources.links()) this.set({ group: link.group, peer: link.peer }, value(link));
        },
      });
    perLink("lockstep_link_streaming", "1 while the link streams to its peer", (link) => (link.streaming ? 1 : 0));
    perLink("lockstep_link_consistent", "1 when the peer is a consistent copy (no resync pending)", (link) => (link.consistent ? 1 : 0));
    perLink("lockstep_link_durable_lsn", "Newest LSN the peer holds durably", (link) => Number(link.durableLsn));
    perLink("lockstep_link_applied_lsn", "Newest LSN the peer has applied", (link) => Number(link.appliedLsn));
    perLink("lockstep_link_lag_records", "Records written on the primary and not yet applied by the peer", (link) => link.lagRecords);
    perLink("lockstep_link_record_bytes_sent_total", "Log record bytes sent on the link", (link) => link.recordBytesSent);
    perLink("lockstep_link_region_bytes_sent_total", "Resync region bytes sent on the link", (link) => link.regionBytesSent);
    perLink("lockstep_link_connects_total", "Connections the link made", (link) => link.connects);
    perLink("lockstep_link_overflows_total", "Times the link overflowed the log into its bitmap", (link) => link.overflows);
    const perReplica = (name: string, help: string, value: (replica: ReturnType<MetricSources["replicas"]>[number]) => number) =>
      new Gauge({
        name, help, labelNames: ["group"], registers: [this.registry],
        collect() {
          for (const replica of sources.replicas()) this.set({ group: replica.name }, value(replica));
        },
      });
    perReplica("lockstep_replica_applied_lsn", "Newest LSN this replica has applied", (replica) => Number(replica.appliedLsn));
    perReplica("lockstep_replica_consistent", "1 when this replica is a consistent image (no resync under way)", (replica) => (replica.consistent ? 1 : 0));
    perReplica("lockstep_replica_applied_records_total", "Records this replica applied", (replica) => replica.appliedRecords);
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
    this.registerSnapshotGauges();
  }

  private registerSnapshotGauges(): void {
    const sources = this.sources;
    const perVolume = (name: string, help: string, value: (snapshots: SnapshotMetricsView) => number) =>
      new Gauge({
        name, help, labelNames: ["volume"], registers: [this.registry],
        collect() {
          for (const volume of sources.volumes()) if (volume.snapshots !== null) this.set({ volume: volume.name }, value(volume.snapshots));
        },
      });
    perVolume("lockstep_snapshots", "Snapshots of a volume", (snapshots) => snapshots.snapshots);
    perVolume("lockstep_snapshot_store_used_bytes", "Bytes of a volume's snapshot store in use", (snapshots) => snapshots.usedBytes);
    perVolume("lockstep_snapshot_store_size_bytes", "What a volume's snapshot store may hold", (snapshots) => snapshots.storeBytesMax);
    perVolume("lockstep_snapshot_preserved_chunks_total", "Chunks copied into the store before the volume overwrote them", (snapshots) => snapshots.stats.preservedChunks);
    perVolume("lockstep_snapshot_store_full_errors_total", "Changes refused because the snapshot store was full", (snapshots) => snapshots.stats.storeFullErrors);
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
    this.tallies.record(kind, bytes, latencyMs / 1000, errorCode);
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
