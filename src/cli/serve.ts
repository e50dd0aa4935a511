// `lockstep serve --config FILE`: run one node in the foreground until SIGINT/SIGTERM.
// An assertion failure or any other bug ends the process (exit 70): recovery replays the log.

import { ApiServer } from "../api/server.js";
import { bufferPoolBytes } from "../constants.js";
import { nodeBlockFileOpener } from "../io/node-block-file.js";
import { createLogger } from "../logger.js";
import { loadConfig } from "../node/config.js";
import { LockstepNode } from "../node/node.js";
import { serveNodeFlagsMissing } from "./node-flags.js";

// exitWithParent: stop (cleanly) when standard input closes — `lockstep demo` starts nodes
// with a pipe there, so a demo that is killed outright never leaves its nodes behind.
export async function serve(configPath: string, options: { exitWithParent?: boolean } = {}): Promise<void> {
  Buffer.poolSize = bufferPoolBytes;
  const config = loadConfig(configPath);
  const logger = createLogger({ level: config.log.level, name: config.node.name });
  process.on("uncaughtException", (error) => {
    logger.fatal({ err: error }, "bug: uncaught exception; stopping (recovery replays the log on restart)");
    logger.flush();
    process.exit(70);
  });
  process.on("unhandledRejection", (error) => {
    logger.fatal({ err: error }, "bug: unhandled rejection; stopping (recovery replays the log on restart)");
    logger.flush();
    process.exit(70);
  });
  const node = await LockstepNode.start(config, { files: nodeBlockFileOpener, nowMs: Date.now, logger });
  const api = new ApiServer(node, logger.child({ subsystem: "api" }));
  const url = await api.listen(config.api.listen.host, config.api.listen.port);
  await node.announce(url);
  logger.info({ api: url, nbdSocket: config.nbd.socket, nbdTcp: node.nbdTcp }, "serving");
  const missing = serveNodeFlagsMissing();
  if (missing.length > 0) logger.warn({ missing }, "started without the Node flags the lockstep command sets: large writes may cost several times the CPU (see src/cli/node-flags.ts)");
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      logger.info({ signal }, "signal received");
      resolve();
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
    if (options.exitWithParent) {
      process.stdin.once("close", () => stop("parent gone"));
      process.stdin.resume();
    }
  });
  await api.close();
  await node.stop();
  // Stdin, resumed to hear the parent go, would otherwise keep the stopped process alive
  // (the demo then killed its nodes after 15 s).
  if (options.exitWithParent) process.stdin.destroy();
  logger.flush();
}
