#!/usr/bin/env -S node --initial-old-space-size=128
// The lockstep command: see src/cli/main.ts. Built output lives in dist/ (npm run build).
// The flags on the first line are src/cli/node-flags.ts's serveNodeFlags (a test keeps them equal).
import { main } from "../dist/src/cli/main.js";

await main(process.argv);
