// The admin HTTP API, on loopback only, every route but /metrics behind the node's bearer
// token (compared in constant time). Bodies are JSON, bounded by apiBodyBytesMax. Errors are
// `{"error":{"code","message"}}` with the status from src/errors.ts.
//
//   GET    /v1/status
//   GET    /v1/volumes
//   POST   /v1/volumes                {name, group, size?, path?}
//   POST   /v1/volumes/:name/resize   {size}
//   DELETE /v1/volumes/:name[?force=true]
//   GET    /metrics                    Prometheus text format

import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { z } from "zod";
import { apiBodyBytesMax, apiRequestMsMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { LockstepNode } from "../node/node.js";
import { parseSize } from "../units.js";

type Handler = (request: { body: unknown; params: string[]; query: URLSearchParams }) => Promise<unknown>;

interface Route {
  readonly method: string;
  readonly pattern: RegExp;
  readonly handler: Handler;
}

const sizeField = z.union([z.number().int().positive(), z.string()]).transform((value) => parseSize(value));
const createBody = z.object({ name: z.string(), group: z.string(), size: sizeField.optional(), path: z.string().optional() }).strict();
const resizeBody = z.object({ size: sizeField }).strict();

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
    ];
    this.server = createServer((request, response) => void this.handle(request, response));
    this.server.requestTimeout = apiRequestMsMax;
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
