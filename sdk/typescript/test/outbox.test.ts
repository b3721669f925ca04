import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { MAX_ENTRIES_PER_FRAME, Outbox, parseRefKey, refKey, resultFrames } from "../src/outbox";
import { encodePayload } from "../src/payload";
import { type ConnectRequest, type TaskResult, TaskUpdateKind } from "../src/proto";

function ok(taskId: string, attempt = 1, output: unknown = {}): TaskResult {
  return { taskId, attempt, outcome: { $case: "output", output: encodePayload(output) } };
}

function kinds(frames: ConnectRequest[]): string[] {
  return frames.map((f) => f.frame?.$case ?? "?");
}

describe("Outbox", () => {
  it("coalesces queued results into one multi-entry frame", () => {
    const outbox = new Outbox();
    for (let i = 0; i < 5; i++) {
      outbox.pushResult(ok(`t${i}`));
    }
    const frames = outbox.take();
    assert.deepEqual(kinds(frames), ["taskResults"]);
    const first = frames[0]?.frame;
    assert.ok(first?.$case === "taskResults");
    assert.deepEqual(
      first.taskResults.results.map((r) => r.taskId),
      ["t0", "t1", "t2", "t3", "t4"],
    );
    assert.equal(outbox.pending, false);
    assert.deepEqual(outbox.take(), []);
  });

  it("writes control frames first, then updates, then results", () => {
    const outbox = new Outbox();
    outbox.pushResult(ok("done"));
    outbox.pushStarted("run", 2);
    outbox.pushControl({ frame: { $case: "heartbeat", heartbeat: { inFlight: 1, load: 0, cpuPercent: 0, memoryBytes: 0 } } });
    outbox.pushUpdate({ taskId: "run", attempt: 2, kind: TaskUpdateKind.TASK_UPDATE_KIND_PROGRESS, progress: 0.5, message: "half" });
    const frames = outbox.take();
    assert.deepEqual(kinds(frames), ["heartbeat", "taskUpdates", "taskResults"]);
    const updates = frames[1]?.frame;
    assert.ok(updates?.$case === "taskUpdates");
    assert.deepEqual(
      updates.taskUpdates.updates.map((u) => [u.taskId, u.attempt, u.kind]),
      [
        ["run", 2, TaskUpdateKind.TASK_UPDATE_KIND_STARTED],
        ["run", 2, TaskUpdateKind.TASK_UPDATE_KIND_PROGRESS],
      ],
    );
  });

  it("skips STARTED for an attempt whose result goes out in the same flush", () => {
    const outbox = new Outbox();
    outbox.pushStarted("fast", 1);
    outbox.pushResult(ok("fast"));
    assert.deepEqual(kinds(outbox.take()), ["taskResults"]);
  });

  it("keeps one result per attempt", () => {
    const outbox = new Outbox();
    outbox.pushResult(ok("t", 1, { v: 1 }));
    outbox.pushResult(ok("t", 1, { v: 2 }));
    outbox.pushResult(ok("t", 2));
    const frame = outbox.take()[0]?.frame;
    assert.ok(frame?.$case === "taskResults");
    assert.equal(frame.taskResults.results.length, 2);
  });

  it("forgets task messages but keeps control frames on clearTaskMessages()", () => {
    const outbox = new Outbox();
    outbox.pushControl({ frame: { $case: "subscribe", subscribe: { channel: "c" } } });
    outbox.pushStarted("t", 1);
    outbox.pushResult(ok("u"));
    outbox.clearTaskMessages();
    assert.deepEqual(kinds(outbox.take()), ["subscribe"]);
  });

  it("discards a queued result", () => {
    const outbox = new Outbox();
    outbox.pushResult(ok("t", 3));
    outbox.discardResult(refKey("t", 3));
    assert.equal(outbox.pending, false);
  });

  it("notifies its listener on every push, and at once when set with something pending", () => {
    const outbox = new Outbox();
    let calls = 0;
    outbox.pushResult(ok("t"));
    outbox.setListener(() => (calls += 1));
    assert.equal(calls, 1);
    outbox.pushStarted("u", 1);
    outbox.pushControl({ frame: { $case: "draining", draining: { reason: "x" } } });
    assert.equal(calls, 3);
    outbox.setListener(undefined);
    outbox.pushResult(ok("v"));
    assert.equal(calls, 3);
  });

  it("splits frames by entry count and by size", () => {
    const many = Array.from({ length: MAX_ENTRIES_PER_FRAME * 2 + 1 }, (_, i) => ok(`t${i}`));
    assert.deepEqual(
      resultFrames(many).map((f) => (f.frame?.$case === "taskResults" ? f.frame.taskResults.results.length : 0)),
      [MAX_ENTRIES_PER_FRAME, MAX_ENTRIES_PER_FRAME, 1],
    );
    const big = "x".repeat(3 * 1024 * 1024);
    assert.equal(resultFrames([ok("a", 1, big), ok("b", 1, big), ok("c")]).length, 2);

    const outbox = new Outbox();
    for (let i = 0; i < MAX_ENTRIES_PER_FRAME + 10; i++) {
      outbox.pushStarted(`s${i}`, 1);
    }
    assert.deepEqual(kinds(outbox.take()), ["taskUpdates", "taskUpdates"]);
  });

  it("round-trips refs", () => {
    assert.deepEqual(parseRefKey(refKey("01ABC:def", 12)), { taskId: "01ABC:def", attempt: 12 });
  });
});
