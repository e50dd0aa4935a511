// The operations part of the bench's output (target lockstep-operations), beside the per-row
// tables of report.ts: per operation (snapshot create, snapshot restore) the table,
// Lockstep's in-band operation against the baseline that re-replicates the changed data, for
// bytes on the wire and the time until the secondary matches, with their ratio, and the write
// pause at the primary; the details and the checks in the notes under it.

import type { OperationComparison, OperationsRowResult } from "./operations-in-band.js";
import type { BenchResult } from "./report.js";
import { fixed, grouped, mebibytes, titledMarkdown, titledText, type TitledTable } from "./table.js";

const gibibyte = 1024 ** 3;
const mebibyte = 1024 ** 2;

/** baseline / in-band, readable whatever its size. */
function times(baseline: number, inBand: number): string {
  if (inBand <= 0) return "-";
  const ratio = baseline / inBand;
  return `×${ratio >= 100 ? grouped(ratio) : ratio.toFixed(ratio >= 10 ? 1 : 2)}`;
}

const sizeText = (bytes: number) => (bytes >= gibibyte && bytes % gibibyte === 0 ? `${bytes / gibibyte} GiB` : `${mebibytes(bytes)} MiB`);

function title(measured: OperationsRowResult, comparison: OperationComparison): string {
  const volume = sizeText(measured.volumeBytes);
  const change = sizeText(measured.changeBytes);
  return comparison.operation === "create"
    ? `Operations in lockstep: snapshot create on a ${volume} volume with ${change} changed since the previous snapshot (\`${measured.row}\`)`
    : `Operations in lockstep: snapshot restore on a ${volume} volume with ${change} written since the snapshot (\`${measured.row}\`)`;
}

function notes(comparison: OperationComparison): string[] {
  const { inBand, baseline } = comparison;
  const copy = baseline.copy;
  return [
    `in band: \`${comparison.command}\` (the API request it sends) at LSN ${inBand.lsn}, answered in ${inBand.requestSeconds.toFixed(3)} s; ` +
      `the link carried ${grouped(inBand.wire.bytesToTarget)} bytes to the secondary and ${grouped(inBand.wire.bytesFromTarget)} back; ` +
      `the node reports a record of ${inBand.recordBytes} bytes for the link (its recordBytesSent grew by ${grouped(inBand.recordBytesSent)})` +
      (inBand.bytesWritten === null ? "" : `; ${mebibytes(inBand.bytesWritten)} MiB written back into the primary's volume`),
    `baseline: the same ${comparison.operation} on the primary ${inBand.requestSeconds.toFixed(3)} s + \`snapshot diff\` ${baseline.diffSeconds.toFixed(3)} s ` +
      `(${grouped(copy.regions)} region(s), ${mebibytes(comparison.changedBytes)} MiB) + nbdcopy ${copy.seconds.toFixed(2)} s ` +
      `(${fixed(copy.regionBytes / mebibyte / copy.seconds, 0)} MiB/s, ${copy.wire.connections} connection(s), ${copy.requestSize / 1024} KiB requests); ` +
      `${grouped(copy.wire.bytesToTarget)} bytes to the secondary side, ${grouped(copy.wire.bytesFromTarget)} back; wire / changed bytes ${fixed(copy.wire.bytes / comparison.changedBytes, 4)}`,
    ...comparison.checks.map((check) => `check, outside the timing: ${check}`),
  ];
}

function comparisonTable(measured: OperationsRowResult, comparison: OperationComparison): TitledTable {
  const { inBand, baseline } = comparison;
  return {
    title: title(measured, comparison),
    table: {
      header: ["figure", "Lockstep's in-band operation", "baseline: re-replicate the changed data", "baseline / in-band"],
      lines: [
        ["bytes on the wire (both ways)", grouped(inBand.wire.bytes), grouped(baseline.copy.wire.bytes), times(baseline.copy.wire.bytes, inBand.wire.bytes)],
        ["time until the secondary matches, s", inBand.matchedSeconds.toFixed(3), baseline.matchedSeconds.toFixed(3), times(baseline.matchedSeconds, inBand.matchedSeconds)],
        ["write pause at the primary, ms", String(inBand.pauseMs), `${inBand.pauseMs} (the same local ${comparison.operation})`, ""],
      ],
    },
    notes: notes(comparison),
  };
}

function sections(result: BenchResult): TitledTable[] {
  return result.targets.flatMap((target) => target.operationRows).flatMap((measured) => {
    const tables = measured.comparisons.map((comparison) => comparisonTable(measured, comparison));
    const last = tables[tables.length - 1];
    if (last !== undefined) last.notes.push(`link: ${measured.linkMode}, TLS, through the bench's byte-counting relay`, ...measured.observations.map((text) => `set-up: ${text}`));
    return tables;
  });
}

/** One line for the bench's progress output. */
export function operationsRowText(measured: OperationsRowResult): string {
  return measured.comparisons.map((comparison) =>
    `${comparison.operation}: in band ${grouped(comparison.inBand.wire.bytes)} B, ${comparison.inBand.matchedSeconds.toFixed(3)} s, paused ${comparison.inBand.pauseMs} ms; ` +
    `baseline ${grouped(comparison.baseline.copy.wire.bytes)} B, ${comparison.baseline.matchedSeconds.toFixed(2)} s` +
    (comparison.mismatches > 0 ? `; ${comparison.mismatches} CHECK(S) FAILED` : "")).join("; ");
}

export function operationsText(result: BenchResult): string[] {
  return titledText(sections(result));
}

export function operationsMarkdown(result: BenchResult): string[] {
  return titledMarkdown(sections(result));
}
