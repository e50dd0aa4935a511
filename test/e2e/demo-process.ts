// `lockstep demo` as a child process: started, read up to its ready line, stopped with SIGINT.

import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { children } from "../child-process.js";
import { lockstepBin } from "./harness.js";

export interface Ready {
  ready: boolean;
  mode: string;
  nodes: Record<string, { role: string; pid: number; node: string; nbd: string; volumes: Record<string, string> }>;
}

export function startDemo(dir: string, args: readonly string[]): Promise<{ child: ChildProcess; ready: Ready }> {
  const child = spawn(process.execPath, [lockstepBin, "demo", "--dir", dir, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  child.once("exit", () => children.delete(child));
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo not ready in 60 s: ${stderr}`)), 60_000);
    createInterface({ input: child.stdout! }).once("line", (line) => {
      clearTimeout(timer);
      resolve({ child, ready: JSON.parse(line) as Ready });
    });
    child.once("exit", (code) => reject(new Error(`demo exited ${code} before ready: ${stderr}`)));
  });
}

export async function stopDemo(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGINT");
  await exited;
}

