import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { raiseForOutcome, submitRequest } from "../src/client";
import { durationFromMs, durationToMs, taskEvent, taskInfo, taskState } from "../src/convert";
import { TaskCancelledError, TaskDeadLetteredError, TaskFailedError, TaskTimedOutError } from "../src/errors";
import { decodePayload, encodePayload } from "../src/payload";
import {
  AttemptOutcomeProto,
  SchedulingStrategy,
  TaskEventTypeProto,
  type TaskProto,
  TaskStateProto,
} from "../src/proto";
import { isTerminal, type TaskInfo } from "../src/types";

const task: TaskProto = {
  id: "01T",
  target: { capability: "cap", agentName: "", labelSelector: { zone: "a" }, routingKey: "", strategy: 0 },
  input: encodePayload({ in: 1 }),
  priority: 3,
  idempotencyKey: "",
  retryPolicy: { maxAttempts: 3, nonRetryableErrorCodes: [], backoffMultiplier: 2 },
  timeouts: undefined,
  correlationId: "c",
  metadata: { m: "1" },
  state: TaskStateProto.TASK_STATE_FAILED,
  attempt: 1,
  attempts: [
    {
      attempt: 1,
      agentName: "a",
      agentInstanceId: "a-1",
      sessionId: "s",
      outcome: AttemptOutcomeProto.ATTEMPT_OUTCOME_FAILED,
      error: { code: "Fatal", message: "fatal", retryable: false, details: { k: 1 } },
    },
  ],
  output: undefined,
  error: { code: "Fatal", message: "fatal", retryable: false, details: undefined },
  progress: 0.5,
  progressMessage: "half",
  resubmittedFrom: "",
  cancelReason: "",
  createTime: new Date(1_000),
};

describe("conversions", () => {
  it("turns durations into milliseconds and back", () => {
    assert.deepEqual(durationFromMs(1_500), { seconds: 1, nanos: 500_000_000 });
    assert.deepEqual(durationFromMs(0.25), { seconds: 0, nanos: 250_000 });
    assert.equal(durationToMs({ seconds: 2, nanos: 5_000_000 }), 2_005);
    assert.equal(durationToMs(undefined), undefined);
    assert.throws(() => durationFromMs(-1), RangeError);
  });

  it("names states without their prefix", () => {
    assert.equal(taskState(TaskStateProto.TASK_STATE_DEAD_LETTER), "DEAD_LETTER");
    assert.equal(taskState(99), "UNSPECIFIED");
    assert.ok(isTerminal("CANCELLED") && !isTerminal("RUNNING"));
  });

  it("turns a task into plain data", () => {
    const info = taskInfo(task);
    assert.equal(info.state, "FAILED");
    assert.equal(info.capability, "cap");
    assert.deepEqual(info.labelSelector, { zone: "a" });
    assert.equal(info.maxAttempts, 3);
    assert.deepEqual(info.input, { in: 1 });
    assert.equal(info.output, undefined);
    assert.deepEqual(info.error, { code: "Fatal", message: "fatal", retryable: false, details: {} });
    assert.equal(info.attempts[0]?.outcome, "FAILED");
    assert.deepEqual(info.attempts[0]?.error?.details, { k: 1 });
    assert.deepEqual(info.createTime, new Date(1_000));
  });

  it("turns an event into plain data", () => {
    const event = taskEvent({
      taskId: "01T",
      sequence: 4,
      type: TaskEventTypeProto.TASK_EVENT_TYPE_SUCCEEDED,
      state: TaskStateProto.TASK_STATE_SUCCEEDED,
      attempt: 1,
      agentInstanceId: "a-1",
      progress: 1,
      message: "",
      output: { kind: { $case: "json", json: { done: true } }, contentType: "" },
      actor: "client/anonymous",
    });
    assert.deepEqual([event.type, event.state, event.sequence, event.output, event.actor], [
      "SUCCEEDED",
      "SUCCEEDED",
      4,
      { done: true },
      "client/anonymous",
    ]);
  });
});

describe("client helpers", () => {
  it("builds a SubmitTask request", () => {
    const request = submitRequest(
      "cap",
      { x: 1 },
      { maxAttempts: 3, startToCloseMs: 2_000, strategy: "round_robin", metadata: { a: "b" }, idempotencyKey: "k" },
    );
    assert.equal(request.target?.capability, "cap");
    assert.equal(request.target?.strategy, SchedulingStrategy.SCHEDULING_STRATEGY_ROUND_ROBIN);
    assert.deepEqual(decodePayload(request.input), { x: 1 });
    assert.equal(request.retryPolicy?.maxAttempts, 3);
    assert.deepEqual(request.timeouts?.startToClose, { seconds: 2, nanos: 0 });
    assert.equal(request.timeouts?.heartbeat, undefined);
    assert.deepEqual([request.metadata, request.idempotencyKey], [{ a: "b" }, "k"]);
    assert.deepEqual(decodePayload(submitRequest("cap", undefined).input), null);
  });

  it("raises a typed error for every unsuccessful end", () => {
    const info = (state: TaskInfo["state"]): TaskInfo => ({ ...taskInfo(task), state });
    assert.equal(raiseForOutcome(info("SUCCEEDED")).state, "SUCCEEDED");
    assert.throws(() => raiseForOutcome(info("CANCELLED")), TaskCancelledError);
    assert.throws(() => raiseForOutcome(info("TIMED_OUT")), TaskTimedOutError);
    assert.throws(() => raiseForOutcome(info("DEAD_LETTER")), TaskDeadLetteredError);
    assert.throws(() => raiseForOutcome(info("FAILED")), (error: unknown) => {
      assert.ok(error instanceof TaskFailedError);
      assert.match(error.message, /01T ended FAILED: Fatal: fatal/);
      assert.equal(error.task.id, "01T");
      return true;
    });
  });
});
