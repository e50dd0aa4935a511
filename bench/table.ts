// A table of figures, printed as aligned text (stdout) or as Markdown (docs/BENCHMARKS.md).
// The first column is a name and left-aligned, as are the columns named in leftColumns;
// the others are figures, right-aligned.

export interface Table {
  readonly header: string[];
  readonly lines: string[][];
  readonly leftColumns?: readonly string[];
}

export const fixed = (value: number | null, digits: number) => (value === null || !Number.isFinite(value) ? "-" : value.toFixed(digits));
export const grouped = (value: number) => Math.round(value).toLocaleString("en-US");
export const mebibytes = (bytes: number) => (bytes / 1024 ** 2).toFixed(1);

export function textTable(table: Table): string {
  const widths = table.header.map((title, column) =>
    Math.max(title.length, ...table.lines.map((line) => (line[column] ?? "").length)));
  const leftAligned = (column: number) => column === 0 || (table.leftColumns ?? []).includes(table.header[column] ?? "");
  const format = (line: string[]) => line
    .map((cell, column) => (leftAligned(column) ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0)))
    .join("  ")
    .trimEnd();
  return [format(table.header), ...table.lines.map(format)].join("\n");
}

export function markdownTable(table: Table): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  const rule = table.header.map((title, column) => (column === 0 || (table.leftColumns ?? []).includes(title) ? "---" : "---:"));
  return [line(table.header), line(rule), ...table.lines.map(line)].join("\n");
}

/** A table with a title and notes under it: a section of the replication or snapshot output. */
export interface TitledTable {
  readonly title: string;
  readonly table: Table;
  readonly notes: string[];
}

export function titledText(sections: readonly TitledTable[]): string[] {
  return sections.map((section) => [`\n${section.title.replace(/`/g, "")}`, textTable(section.table), ...section.notes].join("\n"));
}

export function titledMarkdown(sections: readonly TitledTable[]): string[] {
  return sections.flatMap((section) => [
    "", `#### ${section.title}`, "", markdownTable(section.table), ...(section.notes.length > 0 ? ["", ...section.notes.map((note) => `- ${note}`)] : []),
  ]);
}
