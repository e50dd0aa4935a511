#!/usr/bin/env node
// The lockstep command: see src/cli/main.ts. Built output lives in dist/ (npm run build).
import { main } from "../dist/src/cli/main.js";

await main(process.argv);
