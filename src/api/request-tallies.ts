// NBD request counts, bytes and latency histograms, kept in plain numbers on the hot path and
// turned into Prometheus metrics only when scraped. prom-client's own counters and histograms
// cost about 1.5 µs per request (label lookups, objects); this costs a few additions.
//
// Exposed as three metrics in the standard text format:
//   lockstep_nbd_requests_total{kind,result}   result = ok or the error code
//   lockstep_nbd_bytes_total{kind}
//   lockstep_nbd_request_duration_seconds{kind} histogram (le buckets, _sum, _count)

import type { NbdRequestKind } from "../nbd/export.js";

const requestKinds: readonly NbdRequestKind[] = ["read", "write", "flush", "trim", "zero", "cache", "block_status", "disc"];
const latencyBucketsSeconds = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];

interface Tally {
  ok: number;
  bytes: number;
  readonly buckets: Float64Array; // per bucket (not cumulative); the last slot is +Inf
  sum: number;
  count: number;
  readonly errors: Map<string, number>;
}

interface MetricValue {
  readonly labels: Record<string, string | number>;
  readonly value: number;
  readonly metricName?: string;
}

// The shape prom-client's Registry accepts from a custom metric.
export interface CustomMetric {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "histogram";
  readonly aggregator: "sum";
  get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: "sum" }>;
  reset(): void;
}

export class RequestTallies {
  private readonly tallies = new Map<NbdRequestKind, Tally>();

  constructor() {
    for (const kind of requestKinds) {
      this.tallies.set(kind, { ok: 0, bytes: 0, buckets: new Float64Array(latencyBucketsSeconds.length + 1), sum: 0, count: 0, errors: new Map() });
    }
  }

  record(kind: NbdRequestKind, bytes: number, seconds: number, errorCode: string | undefined): void {
    const tally = this.tallies.get(kind)!;
    if (errorCode === undefined) tally.ok += 1;
    else tally.errors.set(errorCode, (tally.errors.get(errorCode) ?? 0) + 1);
    tally.bytes += bytes;
    let bucket = 0;
    while (bucket < latencyBucketsSeconds.length && seconds > latencyBucketsSeconds[bucket]!) bucket += 1;
    tally.buckets[bucket]! += 1;
    tally.sum += seconds;
    tally.count += 1;
  }

  metrics(): CustomMetric[] {
    return [
      this.metric("lockstep_nbd_requests_total", "NBD requests by kind and result (ok or error code)", "counter", () =>
        this.each((kind, tally) => [
          { labels: { kind, result: "ok" }, value: tally.ok },
          ...[...tally.errors].map(([code, value]) => ({ labels: { kind, result: code }, value })),
        ]),
      ),
      this.metric("lockstep_nbd_bytes_total", "Bytes moved by NBD requests", "counter", () =>
        this.each((kind, tally) => [{ labels: { kind }, value: tally.bytes }]),
      ),
      this.metric("lockstep_nbd_request_duration_seconds", "NBD request latency, receipt of the request to the reply", "histogram", () =>
        this.each((kind, tally) => this.histogramValues(kind, tally)),
      ),
    ];
  }

  private histogramValues(kind: NbdRequestKind, tally: Tally): MetricValue[] {
    const name = "lockstep_nbd_request_duration_seconds";
    let cumulative = 0;
    const values: MetricValue[] = latencyBucketsSeconds.map((bound, index) => {
      cumulative += tally.buckets[index]!;
      return { labels: { le: bound, kind }, value: cumulative, metricName: `${name}_bucket` };
    });
    values.push({ labels: { le: "+Inf", kind }, value: tally.count, metricName: `${name}_bucket` });
    values.push({ labels: { kind }, value: tally.sum, metricName: `${name}_sum` });
    values.push({ labels: { kind }, value: tally.count, metricName: `${name}_count` });
    return values;
  }

  private each(values: (kind: NbdRequestKind, tally: Tally) => MetricValue[]): MetricValue[] {
    return [...this.tallies].flatMap(([kind, tally]) => values(kind, tally));
  }

  private metric(name: string, help: string, type: "counter" | "histogram", values: () => MetricValue[]): CustomMetric {
    return {
      name, help, type, aggregator: "sum",
      get: async () => ({ name, help, type, values: values(), aggregator: "sum" }),
      reset: () => undefined,
    };
  }
}
