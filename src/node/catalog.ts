// The node's catalog: which volumes exist, in which group, backed by which image. One small
// JSON document, replaced atomically (io/atomic-file.ts: a temporary file, fdatasync, rename
// over the old one, directory fsync), so a crash leaves either the old or the new catalog.
//
// Volume ids are never reused: log records name volumes by id, and a record of a deleted
// volume must never be replayed into a newer one.

import { promises as fsp } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { OperatingError } from "../errors.js";
import { writeFileAtomic } from "../io/atomic-file.js";

const volumeEntry = z.object({
  id: z.number().int().positive(),
  name: z.string(),
  group: z.string(),
  path: z.string(),
  size: z.number().int().nonnegative(),
  owned: z.boolean(), // lockstep created the image (delete removes it) or adopted it (kept)
  createdAtMs: z.number(),
});

const catalogSchema = z.object({
  version: z.literal(1),
  nextVolumeId: z.number().int().positive(),
  volumes: z.array(volumeEntry),
});

export type VolumeEntry = z.infer<typeof volumeEntry>;
export type CatalogData = z.infer<typeof catalogSchema>;

export class Catalog {
  private constructor(
    private readonly path: string,
    private data: CatalogData,
  ) {}

  static async open(path: string): Promise<Catalog> {
    let text: string;
    try {
      text = await fsp.readFile(path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return new Catalog(path, { version: 1, nextVolumeId: 1, volumes: [] });
      throw new OperatingError("DISK_IO", { what: `read ${path}` }, { cause: error });
    }
    const parsed = catalogSchema.safeParse(JSON.parse(text));
    if (!parsed.success) throw new OperatingError("CONFIG_INVALID", `${path}: catalog is damaged: ${parsed.error.issues[0]!.message}`);
    return new Catalog(path, parsed.data);
  }

  get nextVolumeId(): number {
    return this.data.nextVolumeId;
  }

  get volumes(): readonly VolumeEntry[] {
    return this.data.volumes;
  }

  find(name: string): VolumeEntry | undefined {
    return this.data.volumes.find((volume) => volume.name === name);
  }

  // Applies a change to a copy, persists it, and only then makes it current.
  async update(change: (draft: CatalogData) => void): Promise<void> {
    const draft = structuredClone(this.data);
    change(draft);
    await this.persist(draft);
    this.data = draft;
  }

  private persist(data: CatalogData): Promise<void> {
    return writeFileAtomic(this.path, `${JSON.stringify(data, null, 2)}\n`);
  }
}

export function catalogPath(dataDir: string): string {
  return join(dataDir, "catalog.json");
}
