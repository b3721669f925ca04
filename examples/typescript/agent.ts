// A minimal Meshplane agent in TypeScript: serves `example.greet` and `example.count`.
//
//   make run                          # terminal 1: the mesh (meshplane up --demo)
//   npm start -w examples/typescript  # terminal 2: this agent (after `make node`)
//   .venv/bin/meshplane task submit example.greet -i '{"name": "Ada"}' --wait
//
// MESHPLANE_TARGET (default 127.0.0.1:50051) and MESHPLANE_TOKEN say where and how to connect.
// Ctrl-C (or SIGTERM) drains: in-flight tasks finish and their results are delivered first.

import { Agent, NonRetryableError } from "@meshplane/sdk";

const agent = new Agent({
  name: "example-ts",
  version: "0.1.0",
  maxConcurrency: 4,
  labels: { lang: "typescript" },
  logger: "info",
});

// Returns a JSON object; a missing name fails the task at once (no retry).
agent.task("example.greet", async (ctx, input: { name?: string }) => {
  if (!input?.name) {
    throw new NonRetryableError("missing_name", 'the input needs a "name"');
  }
  return { greeting: `hello ${input.name}`, from: ctx.instanceId, attempt: ctx.attempt };
});

// Counts to `to`, one step per 200 ms, reporting progress; stops early when cancelled.
agent.task("example.count", async (ctx, input: { to?: number }) => {
  const to = input?.to ?? 5;
  for (let i = 1; i <= to; i++) {
    await ctx.sleep(200); // rejects when the task is cancelled; the SDK reports the cancellation
    ctx.progress(i / to, `counted to ${i}`);
  }
  return { counted: to };
});

agent.stopOnSignals();
agent.waitConnected().then(
  () => console.log(`example-ts connected as ${agent.instanceId}; submit example.greet or example.count`),
  () => undefined,
);
agent.run().then(
  () => console.log("example-ts stopped"),
  (error: unknown) => {
    console.error("example-ts failed:", error);
    process.exitCode = 1;
  },
);
