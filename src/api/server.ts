// The admin HTTP API, on loopback only, every route but /metrics behind the node's bearer
// token (compared in constant time). Bodies are JSON, bounded by apiBodyBytesMax. Errors are
// `{"error":{"code","message"}}` with the status from src/errors.ts.
//
//   GET    /v1/status
//   GET    /v1/volumes
//   POST   /v1/volumes                {name, group, size?, path?}
//   POST   /v1/volumes/:name/resize   {size}
//   DELETE /v1/volumes/:name[?force=true]
//   GET    /v1/links
//   POST   /v1/groups/:group/links    {peer, address, mode, intervalMs?, overflow?} → {link, credential}
//   POST   /v1/groups/:group/links/:peer/pause | resume
//   DELETE /v1/groups/:group/links/:peer
//   POST   /v1/links/accept            {credential}           (on the secondary)
//   POST   /v1/drain                   {group?, timeoutMs?}
//   POST   /v1/verify                  {group?}
//   POST   /v1/groups/:group/takeover  (on a secondary; refused while it is inconsistent)
//   GET    /v1/snapshots[?volume=V]
//   POST   /v1/snapshots               {image: "vol@name", from?: "vol" | "vol@snap", writable?}
//   POST   /v1/groups/:group/snapshots {name}   (every volume of the group, at one point)
//   DELETE /v1/snapshots/:image[?recursive=true&force=true]
//   POST   /v1/snapshots/:image/restore   {volume?}
//   POST   /v1/snapshots/:image/refresh   {fromVolume?}
//   GET    /v1/snapshots-diff?a=IMAGE&b=IMAGE
//   POST   /v1/snapshots-sync          {from: IMAGE, to: IMAGE}   (to: the volume, or a writable snapshot)
//   GET    /metrics                    Prometheus text format

import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { z } from "zod";
import { apiBodyBytesMax, apiRequestMsMax, drainMsDefault, linkPeriodicIntervalMsMin } from "../constants.js";
import { OperatingError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { LockstepNode } from "../node/node.js";
import { parseSize } from "../units.js";
import { isName } from "../names.js";
import { parseImageName } from "../node/node-snapshots.js";

type Handler = (request: { body: unknown; params: string[]; query: URLSearchParams }) => Promise<unknown>;

interface Route {
  readonly method: string;
  readonly pattern: RegExp;
  readonly handler: Handler;
}

const sizeField = z.union([z.number().int().positive(), z.string()]).transform((value) => parseSize(value));
const createBody = z.object({ name: z.string(), group: z.string(), size: sizeField.optional(), path: z.string().optional() }).strict();
const resizeBody = z.object({ size: sizeField }).strict();
const linkAddBody = z
  .object({
    peer: z.string().refine((value) => isName(value), "a node name"),
    address: z.string().regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "host:port"),
    mode: z.enum(["sync", "async", "periodic"]),
    intervalMs: z.number().int().min(linkPeriodicIntervalMsMin).max(24 * 3600 * 1000).optional(),
    overflow: z.enum(["bitmap", "stall"]).optional(),
  })
  .strict();
const acceptBody = z.object({ credential: z.string().min(1) }).strict();
const drainBody = z.object({ group: z.string().optional(), timeoutMs: z.number().int().positive().max(24 * 3600 * 1000).optional() }).strict();
const verifyBody = z.object({ group: z.string().optional() }).strict();
const snapshotCreateBody = z.object({ image: z.string().min(3), from: z.string().min(1).optional(), writable: z.boolean().optional() }).strict();
const snapshotSyncBody = z.object({ from: z.string().min(1), to: z.string().min(1) }).strict();
const groupSnapshotBody = z.object({ name: z.string().min(1) }).strict();
const snapshotRestoreBody = z.object({ volume: z.string().optional() }).strict();
const snapshotRefreshBody = z.object({ fromVolume: z.boolean().optional() }).strict();

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const result = schema.safeParse(body ?? {});
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new OperatingError("REQUEST_INVALID", `${issue.path.join(".") || "body"}: ${issue.message}`);
  }
  return result.data;
}

export function jsonText(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) => (typeof item === "bigint" ? item.toString() : item));
}

export class ApiServer {
  private readonly server: Server;
  private readonly routes: Route[];

  constructor(
    private readonly node: LockstepNode,
    private readonly logger: Logger,
  ) {
    this.routes = [
      { method: "GET", pattern: /^\/v1\/status$/, handler: async () => node.status() },
      { method: "GET", pattern: /^\/v1\/volumes$/, handler: async () => ({ volumes: node.volumeList() }) },
      {
        method: "POST", pattern: /^\/v1\/volumes$/,
        handler: async ({ body }) => ({ volume: await node.createVolume(parseBody(createBody, body)) }),
      },
      {
        method: "POST", pattern: /^\/v1\/volumes\/([^/]+)\/resize$/,
        handler: async ({ body, params }) => ({ volume: await node.resizeVolume(params[0]!, parseBody(resizeBody, body).size) }),
      },
      {
        method: "DELETE", pattern: /^\/v1\/volumes\/([^/]+)$/,
        handler: async ({ params, query }) => {
          await node.deleteVolume(params[0]!, { force: query.get("force") === "true" });
          return { deleted: params[0] };
        },
      },
      { method: "GET", pattern: /^\/v1\/links$/, handler: async () => ({ links: await node.replication.linkList() }) },
      {
        method: "POST", pattern: /^\/v1\/groups\/([^/]+)\/links$/,
        handler: async ({ body, params }) => {
          const request = parseBody(linkAddBody, body);
          const split = request.address.lastIndexOf(":");
          const host = request.address.slice(0, split).replace(/^\[|\]$/g, "");
          const port = Number(request.address.slice(split + 1));
          if (port < 1 || port > 65535) throw new OperatingError("REQUEST_INVALID", `address: port ${port}`);
          return node.replication.addLink({ group: params[0]!, peer: request.peer, host, port, mode: request.mode, intervalMs: request.intervalMs, overflow: request.overflow }, Date.now());
        },
      },
      {
        method: "POST", pattern: /^\/v1\/groups\/([^/]+)\/links\/([^/]+)\/(pause|resume)$/,
        handler: async ({ params }) => {
          await node.replication.groupLinks(params[0]!).setPaused(params[1]!, params[2] === "pause");
          return { group: params[0], peer: params[1], paused: params[2] === "pause" };
        },
      },
      {
        method: "DELETE", pattern: /^\/v1\/groups\/([^/]+)\/links\/([^/]+)$/,
        handler: async ({ params }) => {
          await node.replication.groupLinks(params[0]!).remove(params[1]!);
          return { group: params[0], removed: params[1] };
        },
      },
      {
        method: "POST", pattern: /^\/v1\/links\/accept$/,
        handler: async ({ body }) => node.acceptLink(parseBody(acceptBody, body).credential),
      },
      {
        method: "POST", pattern: /^\/v1\/drain$/,
        handler: async ({ body }) => {
          const request = parseBody(drainBody, body);
          return node.drain(request.group, request.timeoutMs ?? drainMsDefault);
        },
      },
      {
        method: "POST", pattern: /^\/v1\/verify$/,
        handler: async ({ body }) => node.verify(parseBody(verifyBody, body).group),
      },
      {
        method: "POST", pattern: /^\/v1\/groups\/([^/]+)\/takeover$/,
        handler: async ({ params }) => node.takeover(params[0]!),
      },
      { method: "GET", pattern: /^\/v1\/snapshots$/, handler: async ({ query }) => ({ snapshots: node.snapshots.list(query.get("volume") ?? undefined) }) },
      {
        method: "POST", pattern: /^\/v1\/snapshots$/,
        handler: async ({ body }) => {
          const request = parseBody(snapshotCreateBody, body);
          const image = parseImageName(request.image);
          if (image.snapshot === null) throw new OperatingError("REQUEST_INVALID", `image "${request.image}": name the new snapshot as VOLUME@NAME`);
          const from = request.from ?? image.volume;
          if (parseImageName(from).volume !== image.volume) throw new OperatingError("SNAPSHOT_CROSS_VOLUME", `${request.image} cannot be taken of ${from}`);
          return { snapshot: await node.snapshots.create({ source: from, name: image.snapshot, writable: request.writable ?? false }) };
        },
      },
      {
        method: "POST", pattern: /^\/v1\/groups\/([^/]+)\/snapshots$/,
        handler: async ({ params, body }) => node.snapshots.createGroupSnapshot(params[0]!, parseBody(groupSnapshotBody, body).name),
      },
      {
        method: "DELETE", pattern: /^\/v1\/snapshots\/([^/]+)$/,
        handler: async ({ params, query }) => node.snapshots.delete(params[0]!, { recursive: query.get("recursive") === "true", force: query.get("force") === "true" }),
      },
      {
        method: "POST", pattern: /^\/v1\/snapshots\/([^/]+)\/restore$/,
        handler: async ({ params, body }) => node.snapshots.restore(params[0]!, parseBody(snapshotRestoreBody, body).volume),
      },
      {
        method: "POST", pattern: /^\/v1\/snapshots\/([^/]+)\/refresh$/,
        handler: async ({ params, body }) => ({ snapshot: await node.snapshots.refresh(params[0]!, parseBody(snapshotRefreshBody, body).fromVolume ?? false) }),
      },
      {
        method: "POST", pattern: /^\/v1\/snapshots-sync$/,
        handler: async ({ body }) => {
          const request = parseBody(snapshotSyncBody, body);
          return node.snapshots.syncImages(request.from, request.to);
        },
      },
      {
        method: "GET", pattern: /^\/v1\/snapshots-diff$/,
        handler: async ({ query }) => {
          const a = query.get("a");
          const b = query.get("b");
          if (a === null || b === null) throw new OperatingError("REQUEST_INVALID", "diff needs a=IMAGE and b=IMAGE");
          return node.snapshots.diff(a, b);
        },
      },
    ];
    this.server = createServer((request, response) => void this.handle(request, response));
    // drain and verify may run long: their own limits bound them, not the request timeout
    this.server.requestTimeout = 0;
    this.server.headersTimeout = apiRequestMsMax;
  }

  async listen(host: string, port: number): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => resolve());
    });
    const address = this.server.address() as AddressInfo;
    const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
    return `http://${shownHost}:${address.port}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private authorized(request: IncomingMessage): boolean {
    const header = request.headers.authorization ?? "";
    const presented = Buffer.from(header.startsWith("Bearer ") ? header.slice(7).trim() : "");
    const expected = Buffer.from(this.node.token);
    return presented.length === expected.length && timingSafeEqual(presented, expected);
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    try {
      const url = new URL(request.url ?? "/", "http://localhost");
      if (request.method === "GET" && url.pathname === "/metrics") {
        response.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(await this.node.metrics.text());
        return;
      }
      if (!this.authorized(request)) throw new OperatingError("UNAUTHORIZED", "send the node's token as 'Authorization: Bearer <token>'");
      const body = await readBody(request);
      for (const route of this.routes) {
        const match = route.method === request.method ? route.pattern.exec(url.pathname) : null;
        if (match === null) continue;
        const params = match.slice(1).map((part) => decodeURIComponent(part));
        const result = await route.handler({ body, params, query: url.searchParams });
        response.writeHead(200, { "content-type": "application/json" }).end(`${jsonText(result)}\n`);
        return;
      }
      throw new OperatingError("ROUTE_NOT_FOUND", { method: request.method ?? "?", path: url.pathname });
    } catch (error) {
      this.reply(response, error);
    }
  }

  private reply(response: ServerResponse, error: unknown): void {
    const typed = error instanceof OperatingError ? error : new OperatingError("INTERNAL", (error as Error)?.message ?? String(error), { cause: error });
    if (typed.code === "INTERNAL") this.logger.error({ err: error }, "admin API request failed");
    if (response.headersSent) {
      response.destroy();
      return;
    }
    response.writeHead(typed.httpStatus, { "content-type": "application/json" }).end(`${jsonText({ error: typed.toJSON() })}\n`);
  }
}

async function readBody(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > apiBodyBytesMax) throw new OperatingError("REQUEST_TOO_LARGE", { bodyBytesMax: apiBodyBytesMax });
    chunks.push(chunk);
  }
  if (total === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new OperatingError("REQUEST_INVALID", "the body is not JSON");
  }
}
