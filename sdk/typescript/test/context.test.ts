import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { cancelContext, type ContextPort, type PublishOptions, TaskContext } from "../src/context";
import { CancelledError } from "../src/errors";
import { consoleLogger } from "../src/log";
import { type Assignment, TaskUpdateKind } from "../src/proto";
import type { StateStore } from "../src/state";

class RecordingPort implements ContextPort {
  readonly agentName = "unit";
  readonly instanceId = "unit-1";
  readonly state = {} as StateStore;
  readonly logger = consoleLogger("silent");
  updates: Array<[string, number, TaskUpdateKind, number, string]> = [];
  publishes: Array<[string, unknown, PublishOptions]> = [];

  update(taskId: string, attempt: number, kind: TaskUpdateKind, progress: number, message: string): void {
    this.updates.push([taskId, attempt, kind, progress, message]);
  }

  publish(channel: string, data: unknown, options: PublishOptions): void {
    this.publishes.push([channel, data, options]);
  }
}

const assignment: Assignment = {
  taskId: "t1",
  attempt: 2,
  capability: "unit.cap",
  input: undefined,
  priority: 5,
  correlationId: "corr",
  metadata: { k: "v" },
  deadline: new Date(0),
  heartbeatTimeout: undefined,
  maxAttempts: 3,
  traceparent: "00-abc-def-01",
  tracestate: "",
};

describe("TaskContext", () => {
  it("describes the attempt", () => {
    const ctx = new TaskContext(new RecordingPort(), assignment);
    assert.deepEqual(
      [ctx.taskId, ctx.attempt, ctx.maxAttempts, ctx.capability, ctx.priority, ctx.correlationId, ctx.traceparent],
      ["t1", 2, 3, "unit.cap", 5, "corr", "00-abc-def-01"],
    );
    assert.deepEqual(ctx.metadata, { k: "v" });
    assert.deepEqual(ctx.deadline, new Date(0));
    assert.deepEqual([ctx.agentName, ctx.instanceId], ["unit", "unit-1"]);
  });

  it("queues progress, heartbeats and publishes", () => {
    const port = new RecordingPort();
    const ctx = new TaskContext(port, assignment);
    ctx.progress(0.25, "a quarter");
    ctx.heartbeat();
    ctx.publish("out", { x: 1 });
    assert.deepEqual(port.updates, [
      ["t1", 2, TaskUpdateKind.TASK_UPDATE_KIND_PROGRESS, 0.25, "a quarter"],
      ["t1", 2, TaskUpdateKind.TASK_UPDATE_KIND_HEARTBEAT, 0, ""],
    ]);
    assert.deepEqual(port.publishes, [["out", { x: 1 }, {}]]);
    for (const bad of [-0.1, 1.01, Number.NaN]) {
      assert.throws(() => ctx.progress(bad), RangeError);
    }
  });

  it("aborts its signal once, with a CancelledError as the reason", async () => {
    const ctx = new TaskContext(new RecordingPort(), assignment);
    assert.equal(ctx.cancelled, false);
    assert.doesNotThrow(() => ctx.throwIfCancelled());
    assert.equal(ctx.cancelMessage, undefined);
    const sleeping = ctx.sleep(60_000);
    ctx[cancelContext]("cancelled", "operator says stop");
    ctx[cancelContext]("timed_out"); // the first reason wins
    assert.equal(ctx.cancelled, true);
    assert.equal(ctx.cancelReason, "cancelled");
    assert.equal(ctx.cancelMessage, "operator says stop");
    assert.ok(ctx.signal.aborted);
    assert.ok(ctx.signal.reason instanceof CancelledError);
    assert.equal((ctx.signal.reason as CancelledError).reason, "cancelled");
    assert.equal((ctx.signal.reason as CancelledError).cancelMessage, "operator says stop");
    await assert.rejects(sleeping, { name: "CancelledError", cancelMessage: "operator says stop" });
    await assert.rejects(ctx.sleep(1), { name: "CancelledError", cancelMessage: "operator says stop" });
    assert.throws(() => ctx.throwIfCancelled(), { name: "CancelledError", cancelMessage: "operator says stop" });
  });

  it("has an empty cancel message when the cancellation carries none", () => {
    const ctx = new TaskContext(new RecordingPort(), assignment);
    ctx[cancelContext]("timed_out");
    assert.equal(ctx.cancelMessage, "");
    assert.equal((ctx.signal.reason as CancelledError).cancelMessage, "");
  });

  it("sleeps", async () => {
    const ctx = new TaskContext(new RecordingPort(), assignment);
    const started = Date.now();
    await ctx.sleep(20);
    assert.ok(Date.now() - started >= 15);
  });
});
