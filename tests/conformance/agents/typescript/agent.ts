// The TypeScript SDK's conformance agent: exactly what tests/conformance/CONTRACT.md specifies,
// built with the SDK's public API only.
//
//   node dist/agent.js --target HOST:PORT --name NAME --instance-id ID --max-concurrency N [--token TOKEN]
//                      [--drain-timeout SECONDS]
//
// Prints `READY <instance-id>` once registered, `STOPPED` after a graceful shutdown (SIGTERM/SIGINT).
// Logs go to stderr.

import { parseArgs } from "node:util";

import {
  Agent,
  InvalidArgumentError,
  NonRetryableError,
  ResourceExhaustedError,
  type TaskContext,
  TaskError,
  VersionConflictError,
} from "@meshplane/sdk";

const LANGUAGE = "typescript";

interface Args {
  target: string;
  name: string;
  instanceId: string;
  maxConcurrency: number;
  token: string | undefined;
  drainTimeoutMs: number;
}

function parse(argv: string[]): Args {
  const { values } = parseArgs({
    args: argv,
    options: {
      target: { type: "string" },
      name: { type: "string" },
      "instance-id": { type: "string" },
      "max-concurrency": { type: "string" },
      token: { type: "string" },
      "drain-timeout": { type: "string" },
    },
    strict: true,
  });
  const { target, name } = values;
  const instanceId = values["instance-id"];
  const maxConcurrency = Number(values["max-concurrency"]);
  const drainTimeoutMs = Number(values["drain-timeout"] ?? 30) * 1000;
  if (!target || !name || !instanceId || !Number.isInteger(maxConcurrency) || !(drainTimeoutMs >= 0)) {
    throw new Error(
      "usage: agent.js --target HOST:PORT --name NAME --instance-id ID --max-concurrency N [--token TOKEN] " +
        "[--drain-timeout SECONDS]",
    );
  }
  return { target, name, instanceId, maxConcurrency, token: values.token, drainTimeoutMs };
}

/** Waits `ms`, resolving early when `signal` aborts. */
function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** A string whose JSON encoding is `size` bytes (its quotes included). */
function jsonTextOf(size: number): string {
  return "x".repeat(Math.max(size - 2, 0));
}

/** Publishes; a publish the SDK refuses at once fails the attempt with the contract's code for its kind. */
function publishOrFail(ctx: TaskContext, channel: string, data: unknown, headers?: Record<string, string>): void {
  try {
    ctx.publish(channel, data, { headers });
  } catch (error) {
    if (error instanceof InvalidArgumentError) {
      throw new NonRetryableError("invalid_argument", error.message, { cause: error });
    }
    if (error instanceof ResourceExhaustedError) {
      throw new NonRetryableError("resource_exhausted", error.message, { cause: error });
    }
    throw error;
  }
}

function build(args: Args): Agent {
  const agent = new Agent({
    name: args.name,
    version: "0.1.0",
    instanceId: args.instanceId,
    maxConcurrency: args.maxConcurrency,
    labels: { lang: LANGUAGE },
    token: args.token,
    drainTimeoutMs: args.drainTimeoutMs,
    logger: "info",
  });

  agent.task("conf.echo", (_ctx, input: unknown) => input);

  agent.task("conf.progress", (ctx, input: { steps: number }) => {
    const steps = input.steps;
    for (let i = 1; i <= steps; i++) {
      ctx.progress(i / steps, `step ${i}`);
    }
    return { steps };
  });

  agent.task("conf.flaky", (ctx, input: { fail_times: number }) => {
    if (ctx.attempt <= input.fail_times) {
      throw new TaskError("Flaky", `attempt ${ctx.attempt} fails (fail_times ${input.fail_times})`);
    }
    return { attempt: ctx.attempt };
  });

  agent.task("conf.fatal", () => {
    throw new NonRetryableError("Fatal", "fatal");
  });

  agent.task("conf.sleep", async (ctx, input: { seconds: number }) => {
    await sleepUnlessAborted(input.seconds * 1000, ctx.signal); // the SDK reports a cancellation itself
    return { slept: input.seconds };
  });

  agent.task("conf.sleep_first", async (ctx, input: { seconds: number }) => {
    if (ctx.attempt === 1) {
      await sleepUnlessAborted(input.seconds * 1000, ctx.signal); // the SDK reports a cancellation itself
    }
    return { attempt: ctx.attempt };
  });

  agent.task("conf.await_cancel", async (ctx, input: { channel: string; seconds: number }) => {
    await sleepUnlessAborted(input.seconds * 1000, ctx.signal);
    if (!ctx.cancelled) {
      return { cancelled: false };
    }
    // Cancelled: say what the handler was told, then let the SDK report the cancellation.
    const seen = {
      task_id: ctx.taskId,
      attempt: ctx.attempt,
      reason: ctx.cancelReason,
      message: ctx.cancelMessage,
    };
    ctx.publish(input.channel, seen);
    throw ctx.signal.reason;
  });

  let running = 0;
  let peak = 0;
  agent.task("conf.concurrency", async (ctx, input: { hold: number }) => {
    running += 1;
    peak = Math.max(peak, running);
    try {
      await sleepUnlessAborted(input.hold * 1000, ctx.signal);
    } finally {
      running -= 1;
    }
    return { peak };
  });

  agent.task("conf.publish", (ctx, input: { channel: string; data: unknown; headers?: Record<string, string> }) => {
    publishOrFail(ctx, input.channel, input.data, input.headers);
    return {};
  });

  agent.task("conf.publish_large", (ctx, input: { channel: string; bytes: number }) => {
    publishOrFail(ctx, input.channel, jsonTextOf(input.bytes));
    return {};
  });

  agent.task("conf.publish_nested", (ctx, input: { channel: string; depth: number }) => {
    let value: unknown = 1;
    for (let level = 0; level < input.depth; level += 1) {
      value = [value];
    }
    publishOrFail(ctx, input.channel, value);
    return {};
  });

  agent.task("conf.output_large", (_ctx, input: { bytes: number }) => jsonTextOf(input.bytes));

  agent.task("conf.state_cas", async (ctx, input: { key: string }) => {
    const first = await ctx.state.put(input.key, { n: 1 }, { expectedVersion: 0 });
    let conflict = false;
    try {
      await ctx.state.put(input.key, { n: 1 }, { expectedVersion: 0 });
    } catch (error) {
      if (!(error instanceof VersionConflictError)) {
        throw error;
      }
      conflict = true;
    }
    const read = await ctx.state.get(input.key);
    return { first_version: first.version, conflict, read_version: read?.version ?? 0 };
  });

  agent.task("conf.whoami", (ctx) => ({
    language: LANGUAGE,
    instance_id: ctx.instanceId,
    attempt: ctx.attempt,
    task_id: ctx.taskId,
  }));

  agent.onChannel("conf.broadcast", (ctx, message: unknown) => {
    ctx.publish("conf.received", { instance_id: ctx.instanceId, language: LANGUAGE, message });
  });

  return agent;
}

function exit(code: number, line?: string): void {
  if (line === undefined) {
    process.exit(code);
  }
  process.stdout.write(`${line}\n`, () => process.exit(code));
}

async function main(): Promise<void> {
  let args: Args;
  try {
    args = parse(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    exit(2);
    return;
  }
  const agent = build(args);
  agent.stopOnSignals();
  agent.waitConnected().then(
    () => process.stdout.write(`READY ${args.instanceId}\n`),
    () => undefined, // run() reports why
  );
  try {
    await agent.run(args.target);
  } catch (error) {
    process.stderr.write(`conformance agent failed: ${error instanceof Error ? error.stack : String(error)}\n`);
    exit(1);
    return;
  }
  exit(0, "STOPPED");
}

void main();
