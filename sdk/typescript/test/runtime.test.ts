// The agent runtime's protocol duties, driven frame by frame without a network: what it answers to
// assignments, cancellations, acks, reconnects and drains (the conformance suite covers the wire).
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";

import { CancelledError, InvalidArgumentError, ResourceExhaustedError } from "../src/errors";
import type { LinkSession } from "../src/link";
import { consoleLogger, type Logger } from "../src/log";
import { decodePayload, encodePayload } from "../src/payload";
import {
  type Assignment,
  type ConnectRequest,
  type ConnectResponse,
  type Registered,
  type TaskResult,
  TaskUpdateKind,
} from "../src/proto";
import {
  AgentRuntime,
  type ChannelRegistration,
  type RuntimeSpec,
  type TaskRegistration,
} from "../src/runtime";
import type { TaskContext } from "../src/context";

type Handler = (ctx: TaskContext, input: unknown) => unknown;

const runtimes: AgentRuntime[] = [];

afterEach(() => {
  for (const runtime of runtimes.splice(0)) {
    runtime.connection.close();
  }
});

function registration(capability: string, handler: Handler, validate?: (x: unknown) => unknown): TaskRegistration {
  return { capability, description: "", inputSchema: undefined, outputSchema: undefined, validate, handler };
}

function makeRuntime(
  handlers: Record<string, Handler>,
  options: {
    maxConcurrency?: number;
    channels?: Record<string, ChannelRegistration["handler"]>;
    validate?: Record<string, (x: unknown) => unknown>;
    logger?: Logger;
  } = {},
): AgentRuntime {
  const tasks = new Map(
    Object.entries(handlers).map(([name, handler]) => [name, registration(name, handler, options.validate?.[name])]),
  );
  const channels = new Map(
    Object.entries(options.channels ?? {}).map(([channel, handler]) => [channel, { channel, handler }]),
  );
  const spec: RuntimeSpec = {
    name: "unit",
    version: "1.0.0",
    instanceId: "unit-1",
    description: "",
    labels: { lang: "typescript" },
    maxConcurrency: options.maxConcurrency ?? 4,
    weight: 1,
    tasks,
    channels,
    backoffInitialMs: 100,
    backoffMaxMs: 5_000,
    drainTimeoutMs: 1_000,
    stateTimeoutMs: 1_000,
    logger: options.logger ?? consoleLogger("silent"),
  };
  const runtime = new AgentRuntime(spec, "127.0.0.1:1", {});
  runtimes.push(runtime);
  return runtime;
}

class FakeSession {
  isEnded = false;
  closes = 0;
  registered: Registered | undefined;
  closeWhenFlushed(): void {
    this.closes += 1;
  }
}

function connect(runtime: AgentRuntime, kept: Array<[string, number]> = [], maxPayloadBytes = 1 << 20): FakeSession {
  const session = new FakeSession();
  runtime.registerFrame();
  const registered: Registered = {
    sessionId: `s-${Math.random()}`,
    heartbeatInterval: { seconds: 0, nanos: 200_000_000 },
    leaseTimeout: { seconds: 1, nanos: 500_000_000 },
    replicaId: "r",
    keptTasks: kept.map(([taskId, attempt]) => ({ taskId, attempt })),
    maxPayloadBytes,
  };
  session.registered = registered;
  runtime.onRegistered(session as unknown as LinkSession, registered);
  return session;
}

function assignment(taskId: string, capability: string, input: unknown, extra: Partial<Assignment> = {}): Assignment {
  return {
    taskId,
    attempt: 1,
    capability,
    input: encodePayload(input),
    priority: 0,
    correlationId: "",
    metadata: {},
    deadline: undefined,
    heartbeatTimeout: undefined,
    maxAttempts: 3,
    traceparent: "",
    tracestate: "",
    ...extra,
  };
}

function send(runtime: AgentRuntime, session: FakeSession, frame: ConnectResponse["frame"]): void {
  runtime.onFrame(session as unknown as LinkSession, { frame });
}

function assign(runtime: AgentRuntime, session: FakeSession, ...list: Assignment[]): void {
  send(runtime, session, { $case: "assignments", assignments: { assignments: list } });
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function until(condition: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error("condition not met in time");
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function results(frames: ConnectRequest[]): TaskResult[] {
  return frames.flatMap((f) => (f.frame?.$case === "taskResults" ? f.frame.taskResults.results : []));
}

function outcome(result: TaskResult | undefined): unknown {
  const o = result?.outcome;
  if (o?.$case === "output") {
    return { output: decodePayload(o.output) };
  }
  return o?.$case === "error" ? { code: o.error.code, retryable: o.error.retryable } : undefined;
}

function heldTasks(runtime: AgentRuntime): Array<[string, number]> {
  const frame = runtime.registerFrame().frame;
  assert.ok(frame?.$case === "register");
  return frame.register.heldTasks.map((ref) => [ref.taskId, ref.attempt]);
}

describe("AgentRuntime", () => {
  it("registers what the agent is", () => {
    const runtime = makeRuntime({ "unit.echo": (_ctx, input) => input }, { channels: { "unit.news": () => {} } });
    const frame = runtime.registerFrame().frame;
    assert.ok(frame?.$case === "register");
    const register = frame.register;
    assert.equal(register.agentName, "unit");
    assert.equal(register.instanceId, "unit-1");
    assert.deepEqual(register.capabilities.map((c) => c.name), ["unit.echo"]);
    assert.deepEqual(register.sdk, { language: "typescript", version: "0.1.0" });
    assert.deepEqual(register.subscriptions, ["unit.news"]);
    assert.equal(register.maxConcurrency, 4);
    assert.equal(register.pid, process.pid);
    assert.deepEqual(register.heldTasks, []);
  });

  it("answers an assignment with exactly one result and keeps it until acknowledged", async () => {
    const runtime = makeRuntime({ "unit.echo": (_ctx, input) => input });
    const session = connect(runtime);
    const a = assignment("t1", "unit.echo", { hello: "✓" });
    assign(runtime, session, a);
    assign(runtime, session, a); // a duplicate delivery is not run twice
    await tick();
    const sent = results(runtime.outbox.take());
    assert.equal(sent.length, 1);
    assert.deepEqual([sent[0]?.taskId, sent[0]?.attempt], ["t1", 1]);
    assert.deepEqual(outcome(sent[0]), { output: { hello: "✓" } });

    assert.deepEqual(heldTasks(runtime), [["t1", 1]]); // unacknowledged: listed after a reconnect
    send(runtime, session, { $case: "resultAcks", resultAcks: { tasks: [{ taskId: "t1", attempt: 1 }] } });
    assert.deepEqual(heldTasks(runtime), []);
    await runtime.whenIdle();
  });

  it("sends STARTED while a handler runs, and progress only while it runs", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let context: TaskContext | undefined;
    const runtime = makeRuntime({
      "unit.slow": async (ctx) => {
        context = ctx;
        ctx.progress(0.5, "half");
        await gate;
        return { ok: true };
      },
    });
    const session = connect(runtime);
    assign(runtime, session, assignment("t1", "unit.slow", {}, { attempt: 2 }));
    await tick();
    const frames = runtime.outbox.take();
    const updates = frames.flatMap((f) => (f.frame?.$case === "taskUpdates" ? f.frame.taskUpdates.updates : []));
    assert.deepEqual(
      updates.map((u) => [u.taskId, u.attempt, u.kind, u.message]),
      [
        ["t1", 2, TaskUpdateKind.TASK_UPDATE_KIND_STARTED, ""],
        ["t1", 2, TaskUpdateKind.TASK_UPDATE_KIND_PROGRESS, "half"],
      ],
    );
    assert.equal(runtime.inFlight, 1);
    release();
    await until(() => runtime.inFlight === 0);
    context?.progress(1, "too late"); // dropped: the attempt has finished
    const after = runtime.outbox.take();
    assert.deepEqual(after.map((f) => f.frame?.$case), ["taskResults"]);
    assert.throws(() => context?.progress(1.5), RangeError);
  });

  it("never runs more than max_concurrency handlers at once", async () => {
    let running = 0;
    let peak = 0;
    const gates: Array<() => void> = [];
    const runtime = makeRuntime(
      {
        "unit.hold": async () => {
          running += 1;
          peak = Math.max(peak, running);
          await new Promise<void>((resolve) => gates.push(resolve));
          running -= 1;
          return {};
        },
      },
      { maxConcurrency: 2 },
    );
    const session = connect(runtime);
    assign(runtime, session, ...["a", "b", "c", "d"].map((id) => assignment(id, "unit.hold", {})));
    await tick();
    assert.equal(runtime.inFlight, 2);
    while (gates.length > 0 || runtime.inFlight > 0) {
      gates.shift()?.();
      await tick();
    }
    assert.equal(peak, 2);
    assert.equal(results(runtime.outbox.take()).length, 4);
  });

  it("signals a cancellation and reports it as `cancelled`, whatever the handler returns", async () => {
    let reason: unknown;
    const runtime = makeRuntime({
      "unit.wait": async (ctx) => {
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
        reason = ctx.signal.reason;
        return { finished: "anyway" };
      },
      "unit.sleep": async (ctx) => {
        await ctx.sleep(60_000);
        return {};
      },
    });
    const session = connect(runtime);
    assign(runtime, session, assignment("t1", "unit.wait", {}), assignment("t2", "unit.sleep", {}));
    await tick();
    send(runtime, session, {
      $case: "cancellations",
      cancellations: {
        cancellations: [
          { taskId: "t1", attempt: 1, reason: "cancelled", message: "" },
          { taskId: "t2", attempt: 1, reason: "timed_out", message: "" },
        ],
      },
    });
    await until(() => runtime.inFlight === 0);
    assert.ok(reason instanceof CancelledError);
    const sent = results(runtime.outbox.take());
    assert.deepEqual(sent.map(outcome), [
      { code: "cancelled", retryable: false },
      { code: "cancelled", retryable: false },
    ]);
  });

  it("hands the client's cancel message to the handler, on the context and the signal's reason", async () => {
    const seen = new Map<string, [string | undefined, string | undefined, string, string]>();
    const runtime = makeRuntime({
      "unit.wait": async (ctx) => {
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
        const error = ctx.signal.reason as CancelledError;
        seen.set(ctx.taskId, [ctx.cancelReason, ctx.cancelMessage, error.cancelMessage, error.message]);
        return {};
      },
    });
    const session = connect(runtime);
    assign(runtime, session, assignment("t1", "unit.wait", {}), assignment("t2", "unit.wait", {}));
    await tick();
    send(runtime, session, {
      $case: "cancellations",
      cancellations: {
        cancellations: [
          { taskId: "t1", attempt: 1, reason: "cancelled", message: "operator says stop" },
          { taskId: "t2", attempt: 1, reason: "timed_out", message: "" },
        ],
      },
    });
    await until(() => runtime.inFlight === 0);
    assert.deepEqual(seen.get("t1"), [
      "cancelled",
      "operator says stop",
      "operator says stop",
      "task attempt cancelled: cancelled: operator says stop",
    ]);
    assert.deepEqual(seen.get("t2"), ["timed_out", "", "", "task attempt cancelled: timed_out"]);
  });

  it("cancels an attempt whose deadline passes, retryably", async () => {
    const runtime = makeRuntime({
      "unit.stuck": async (ctx) => {
        await ctx.sleep(60_000);
      },
    });
    const session = connect(runtime);
    assign(runtime, session, assignment("t1", "unit.stuck", {}, { deadline: new Date(Date.now() + 30) }));
    await until(() => runtime.inFlight === 0);
    assert.deepEqual(results(runtime.outbox.take()).map(outcome), [{ code: "deadline_exceeded", retryable: true }]);
  });

  it("fails unknown capabilities and invalid input without retry", async () => {
    const runtime = makeRuntime(
      { "unit.typed": (_ctx, input) => input },
      {
        validate: {
          "unit.typed": (input) => {
            if (typeof input !== "object" || input === null || !("name" in input)) {
              throw new Error("name is required");
            }
            return input;
          },
        },
      },
    );
    const session = connect(runtime);
    assign(
      runtime,
      session,
      assignment("t1", "unit.nope", {}),
      assignment("t2", "unit.typed", { other: 1 }),
      assignment("t3", "unit.typed", { name: "x" }),
      { ...assignment("t4", "unit.typed", null), input: { kind: { $case: "data", data: Buffer.from("{") }, contentType: "application/json" } },
    );
    await until(() => runtime.inFlight === 0);
    const byTask = new Map(results(runtime.outbox.take()).map((r) => [r.taskId, outcome(r)]));
    assert.deepEqual(byTask.get("t1"), { code: "unknown_capability", retryable: false });
    assert.deepEqual(byTask.get("t2"), { code: "validation_failed", retryable: false });
    assert.deepEqual(byTask.get("t3"), { output: { name: "x" } });
    assert.deepEqual(byTask.get("t4"), { code: "validation_failed", retryable: false });
  });

  it("resends unacknowledged results the plane kept after a reconnect, and forgets the rest", async () => {
    const runtime = makeRuntime({ "unit.echo": (_ctx, input) => input });
    const first = connect(runtime);
    assign(runtime, first, assignment("keep", "unit.echo", 1), assignment("drop", "unit.echo", 2));
    await tick();
    runtime.outbox.take(); // written, but the stream broke before the acks came
    assert.deepEqual(heldTasks(runtime).sort(), [
      ["drop", 1],
      ["keep", 1],
    ]);
    connect(runtime, [["keep", 1]]);
    const resent = results(runtime.outbox.take());
    assert.deepEqual(resent.map((r) => [r.taskId, outcome(r)]), [["keep", { output: 1 }]]);
    assert.deepEqual(heldTasks(runtime), [["keep", 1]]);
  });

  it("stops an attempt that is no longer held and drops its result", async () => {
    let signalled = false;
    const runtime = makeRuntime({
      "unit.wait": async (ctx) => {
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
        signalled = true;
        return {};
      },
    });
    const session = connect(runtime);
    assign(runtime, session, assignment("t1", "unit.wait", {}));
    await tick();
    runtime.outbox.take();
    send(runtime, session, {
      $case: "cancellations",
      cancellations: { cancellations: [{ taskId: "t1", attempt: 1, reason: "not_held", message: "" }] },
    });
    await until(() => runtime.inFlight === 0);
    assert.ok(signalled);
    assert.deepEqual(results(runtime.outbox.take()), []);
    assert.deepEqual(heldTasks(runtime), []);
  });

  it("on `drain`, closes the session once every result is acknowledged", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const runtime = makeRuntime({ "unit.slow": async () => gate.then(() => ({})) });
    const session = connect(runtime);
    assign(runtime, session, assignment("t1", "unit.slow", {}));
    await tick();
    send(runtime, session, { $case: "drain", drain: { timeout: { seconds: 10, nanos: 0 }, reason: "rolling" } });
    await tick();
    assert.equal(session.closes, 0);
    release();
    await until(() => runtime.inFlight === 0);
    await tick();
    assert.equal(session.closes, 0); // the result is not acknowledged yet
    send(runtime, session, { $case: "resultAcks", resultAcks: { tasks: [{ taskId: "t1", attempt: 1 }] } });
    await tick();
    assert.equal(session.closes, 1);
  });

  it("reports a task still running when the drain times out as `agent_stopped` before closing the stream", async () => {
    let reason: unknown;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const runtime = makeRuntime({
      "unit.stuck": async (ctx) => {
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
        reason = ctx.cancelReason;
        await gate;
        return { finished: "too late" };
      },
    });
    const session = connect(runtime);
    assign(runtime, session, assignment("t1", "unit.stuck", {}, { attempt: 2 }));
    await tick();
    runtime.outbox.take();
    void runtime.drain(30);
    let sent: TaskResult[] = [];
    await until(() => (sent = results(runtime.outbox.take())).length > 0);
    assert.equal(session.closes, 0); // the result goes out first
    assert.deepEqual(sent.map((r) => [r.taskId, r.attempt, outcome(r)]), [
      ["t1", 2, { code: "agent_stopped", retryable: true }],
    ]);
    const error = sent[0]?.outcome?.$case === "error" ? sent[0].outcome.error : undefined;
    assert.equal(error?.message, "agent instance 'unit-1' stopped before the task finished");
    assert.equal(reason, "agent_stopped");

    assign(runtime, session, assignment("t2", "unit.stuck", {})); // sent before the plane saw `draining`
    assert.deepEqual(results(runtime.outbox.take()).map((r) => [r.taskId, outcome(r)]), [
      ["t2", { code: "agent_stopped", retryable: true }],
    ]);
    release(); // the given-up handler's own result is dropped
    await tick();
    assert.deepEqual(results(runtime.outbox.take()), []);

    send(runtime, session, {
      $case: "resultAcks",
      resultAcks: { tasks: [{ taskId: "t1", attempt: 2 }, { taskId: "t2", attempt: 1 }] },
    });
    await until(() => session.closes === 1); // acknowledged: leave now, not after GIVE_UP_ACK_MS
  });

  it("on a hard stop, reports the running tasks as `agent_stopped` and asks for no more work", async () => {
    const runtime = makeRuntime({ "unit.hang": () => new Promise(() => {}) });
    const session = connect(runtime);
    assign(runtime, session, assignment("t1", "unit.hang", {}));
    await tick();
    runtime.outbox.take();
    void runtime.terminate();
    const frames = runtime.outbox.take();
    assert.ok(frames.some((f) => f.frame?.$case === "draining"));
    assert.deepEqual(results(frames).map((r) => [r.taskId, outcome(r)]), [
      ["t1", { code: "agent_stopped", retryable: true }],
    ]);
  });

  it("publishes through the link and delivers channel messages to their handler", async () => {
    const received: unknown[] = [];
    const runtime = makeRuntime(
      {
        "unit.pub": (ctx, input) => {
          ctx.publish("unit.out", input, { headers: { h: "1" } });
          return {};
        },
      },
      { channels: { "unit.in": (_ctx, data) => void received.push(data) } },
    );
    const session = connect(runtime);
    assign(runtime, session, assignment("t1", "unit.pub", { x: [1] }));
    await tick();
    const publishes = runtime.outbox
      .take()
      .flatMap((f) => (f.frame?.$case === "publish" ? [f.frame.publish] : []));
    assert.equal(publishes.length, 1);
    assert.equal(publishes[0]?.channel, "unit.out");
    assert.deepEqual(publishes[0]?.headers, { h: "1" });
    assert.deepEqual(decodePayload(publishes[0]?.payload), { x: [1] });

    send(runtime, session, {
      $case: "channelMessage",
      channelMessage: {
        channel: "unit.in",
        messageId: "m1",
        payload: encodePayload({ hi: true }),
        headers: {},
        publisher: "client",
        publishTime: new Date(),
      },
    });
    await until(() => received.length === 1);
    assert.deepEqual(received, [{ hi: true }]);
  });

  it("runs a bounded number of a channel's handler calls at once, and drops the oldest waiting past a bound", async () => {
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    let running = 0;
    let mostAtOnce = 0;
    const handled: number[] = [];
    const warnings: string[] = [];
    const silent = consoleLogger("silent");
    const runtime = makeRuntime(
      {},
      {
        channels: {
          "unit.busy": async (_ctx, data) => {
            running += 1;
            mostAtOnce = Math.max(mostAtOnce, running);
            await released;
            handled.push((data as { n: number }).n);
            running -= 1;
          },
        },
        logger: { ...silent, warn: (message: string) => void warnings.push(message) },
      },
    );
    runtime.channelLimits = [2, 3];
    const session = connect(runtime);
    for (let n = 0; n < 20; n += 1) {
      send(runtime, session, {
        $case: "channelMessage",
        channelMessage: {
          channel: "unit.busy",
          messageId: `m${n}`,
          payload: encodePayload({ n }),
          headers: {},
          publisher: "client",
          publishTime: new Date(),
        },
      });
    }
    await tick();
    assert.equal(running, 2);
    release();
    await until(() => handled.length === 5);
    await tick();
    assert.deepEqual([...handled].sort((a, b) => a - b), [0, 1, 17, 18, 19]);
    assert.equal(mostAtOnce, 2);
    assert.equal(warnings.filter((w) => w.includes("channel unit.busy is slower")).length, 1);
  });

  it("reports load in heartbeats", async () => {
    const runtime = makeRuntime({ "unit.hang": () => new Promise(() => {}) }, { maxConcurrency: 4 });
    const session = connect(runtime);
    assign(runtime, session, assignment("t1", "unit.hang", {}));
    await tick();
    const frame = runtime.heartbeatFrame().frame;
    assert.ok(frame?.$case === "heartbeat");
    assert.equal(frame.heartbeat.inFlight, 1);
    assert.equal(frame.heartbeat.load, 0.25);
    assert.ok(frame.heartbeat.memoryBytes > 0);
  });
});

// What the plane would refuse of an agent is refused in the handler's own call (limits.ts): a publish throws at
// once, and an output over max_payload_bytes fails the attempt at once, not retryable, instead of an `error` frame
// the handler never sees or a stream the output breaks on every resend.
describe("AgentRuntime, within the plane's limits", () => {
  const LIMIT = 1024;
  /** A JSON string whose encoding is `size` bytes (its quotes included). */
  const textOf = (size: number): string => "x".repeat(size - 2);

  function publishes(runtime: AgentRuntime): Array<{ channel: string; size: number; headers: number }> {
    return runtime.outbox.take().flatMap((f) =>
      f.frame?.$case === "publish"
        ? [
            {
              channel: f.frame.publish.channel,
              size: f.frame.publish.payload?.kind?.$case === "data" ? f.frame.publish.payload.kind.data.length : -1,
              headers: Object.keys(f.frame.publish.headers).length,
            },
          ]
        : [],
    );
  }

  it("refuses at once a publish to a channel, or with headers, the plane does not take", async () => {
    const refused: unknown[] = [];
    const runtime = makeRuntime({
      "unit.pub": (ctx, input) => {
        const { channel, headers } = input as { channel: string; headers?: Record<string, string> };
        try {
          ctx.publish(channel, 1, { headers });
        } catch (error) {
          refused.push(error);
        }
        return {};
      },
    });
    const session = connect(runtime, [], LIMIT);
    const tooMany = Object.fromEntries(Array.from({ length: 65 }, (_, n) => [`k${n}`, "v"]));
    const cases = [
      { channel: "..bad" },
      { channel: "" },
      { channel: "trail." },
      { channel: "x".repeat(201) },
      { channel: "ünï" },
      { channel: "line\n" },
      { channel: "fine", headers: tooMany },
      { channel: "fine", headers: { "": "v" } },
      { channel: "fine", headers: { ["é".repeat(257)]: "v" } },
      { channel: "fine", headers: { k: "😀".repeat(4097) } },
    ];
    cases.forEach((input, n) => assign(runtime, session, assignment(`t${n}`, "unit.pub", input)));
    await until(() => refused.length === cases.length);
    for (const error of refused) {
      assert.ok(error instanceof InvalidArgumentError, String(error));
      assert.equal(error.code, "INVALID_ARGUMENT");
    }
    const first = refused[0] as InvalidArgumentError;
    assert.deepEqual(first.violations.map((v) => v.field), ["channel"]);
    assert.match(first.message, /^invalid argument: channel: channel must be 1-200 characters of \[A-Za-z0-9_.-\]/);
    assert.deepEqual((refused[6] as InvalidArgumentError).violations, [
      { field: "headers", description: "at most 64 entries (got 65)" },
    ]);
    assert.deepEqual(publishes(runtime), []);
  });

  it("refuses at once a payload over max_payload_bytes, and sends one of exactly the limit with the most headers", async () => {
    const refused: unknown[] = [];
    const most = Object.fromEntries([
      ...Array.from({ length: 63 }, (_, n) => [`k${n}`, "v"]),
      // The most characters, counted as the plane counts them: code points, not UTF-16 units.
      ["😀".repeat(256), "😀".repeat(4096)],
    ]);
    const runtime = makeRuntime(
      {
        "unit.pub": (ctx, size) => {
          try {
            ctx.publish("unit.out", textOf(size as number), { headers: most });
          } catch (error) {
            refused.push(error);
          }
          return {};
        },
      },
      {
        channels: {
          "unit.ask": (ctx, size) => {
            try {
              ctx.publish("unit.out", textOf(size as number));
            } catch (error) {
              refused.push(error);
            }
          },
        },
      },
    );
    const session = connect(runtime, [], LIMIT);
    assign(runtime, session, assignment("over", "unit.pub", LIMIT + 1), assignment("exact", "unit.pub", LIMIT));
    send(runtime, session, {
      $case: "channelMessage",
      channelMessage: {
        channel: "unit.ask",
        messageId: "m1",
        payload: encodePayload(LIMIT + 1),
        headers: {},
        publisher: "client",
        publishTime: new Date(),
      },
    });
    await until(() => refused.length === 2);
    for (const error of refused) {
      assert.ok(error instanceof ResourceExhaustedError, String(error));
      assert.equal(error.code, "RESOURCE_EXHAUSTED");
      assert.equal(error.message, "payload is 1025 bytes; the limit is 1024 bytes (max_payload_bytes)");
    }
    assert.deepEqual(publishes(runtime), [{ channel: "unit.out", size: LIMIT, headers: 64 }]);
  });

  it("fails an output over max_payload_bytes at once with the non-retryable `output_too_large`", async () => {
    const runtime = makeRuntime({
      "unit.sized": (_ctx, size) => textOf(size as number),
      "unit.bytes": () => new Uint8Array(4 * LIMIT),
    });
    const session = connect(runtime, [], LIMIT);
    assign(
      runtime,
      session,
      assignment("exact", "unit.sized", LIMIT),
      assignment("over", "unit.sized", LIMIT + 1),
      assignment("bytes", "unit.bytes", null),
    );
    await until(() => runtime.inFlight === 0);
    const sent = new Map(results(runtime.outbox.take()).map((r) => [r.taskId, r]));
    assert.deepEqual(outcome(sent.get("exact")), { output: textOf(LIMIT) });
    assert.deepEqual(outcome(sent.get("over")), { code: "output_too_large", retryable: false });
    const over = sent.get("over")?.outcome;
    assert.ok(over?.$case === "error");
    assert.equal(over.error.message, "output is 1025 bytes; the limit is 1024 bytes (max_payload_bytes)");
    assert.deepEqual(outcome(sent.get("bytes")), { code: "output_too_large", retryable: false });
  });
});
