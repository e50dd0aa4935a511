// The CLI's client of the admin API. `--node` is a node directory (its api.json and
// api.token tell where and how) or a URL (token from --token or LOCKSTEP_TOKEN).

import { readFileSync } from "node:fs";
import { cliRequestMsMax } from "../constants.js";
import { OperatingError, isErrorCode } from "../errors.js";
import { nodeFiles, type ApiInfo } from "../node/node-files.js";

export interface NodeTarget {
  readonly url: string;
  readonly token: string;
}

// What a group of commands needs from the program: its global options and the printers.
export interface CommandOutput {
  json: () => boolean | undefined;
  target: () => NodeTarget;
  print: (json: boolean | undefined, value: unknown, human: () => string) => void;
  table: (rows: string[][]) => string;
}

export function resolveTarget(node: string | undefined, token: string | undefined): NodeTarget {
  const where = node ?? process.env.LOCKSTEP_NODE;
  if (where === undefined) throw new OperatingError("USAGE", "say which node: --node DIR_OR_URL (or LOCKSTEP_NODE)");
  if (/^https?:\/\//.test(where)) {
    const secret = token ?? process.env.LOCKSTEP_TOKEN;
    if (secret === undefined) throw new OperatingError("USAGE", "a URL needs --token (or LOCKSTEP_TOKEN)");
    return { url: where.replace(/\/$/, ""), token: secret };
  }
  let info: ApiInfo;
  try {
    info = JSON.parse(readFileSync(nodeFiles.api(where), "utf8")) as ApiInfo;
  } catch {
    throw new OperatingError("NODE_UNREACHABLE", `${where}: no running node there (no api.json)`);
  }
  let secret = token;
  if (secret === undefined) {
    try {
      secret = readFileSync(nodeFiles.token(where), "utf8").trim();
    } catch {
      throw new OperatingError("UNAUTHORIZED", `${where}: cannot read api.token`);
    }
  }
  return { url: info.url, token: secret };
}

// The answer may take up to `answerMsMax` (a drain's own timeout, say); the CLI gives up a
// little after that, so the node's own TIMEOUT, not an aborted request, is what the user sees.
export async function callApi(target: NodeTarget, method: string, path: string, body?: unknown, answerMsMax = 0): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(`${target.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${target.token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(cliRequestMsMax + answerMsMax),
    });
  } catch (error) {
    throw new OperatingError("NODE_UNREACHABLE", `${target.url}: ${(error as Error).message}`, { cause: error });
  }
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text.length > 0 ? JSON.parse(text) : undefined;
  } catch {
    throw new OperatingError("INTERNAL", `${target.url}${path}: answer is not JSON (HTTP ${response.status})`);
  }
  if (!response.ok) {
    const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
    const code = error?.code !== undefined && isErrorCode(error.code) ? error.code : "INTERNAL";
    throw new OperatingError(code, error?.message ?? `HTTP ${response.status}`);
  }
  return parsed;
}
