import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { MeshplaneError, NonRetryableError, NotSerializableError, TaskError } from "../src/errors";
import { errorCode, failureResult } from "../src/runtime";

function errorOf(result: ReturnType<typeof failureResult>) {
  assert.equal(result.outcome?.$case, "error");
  return result.outcome?.$case === "error" ? result.outcome.error : undefined;
}

describe("task errors", () => {
  it("are retryable by default, with the given code", () => {
    const error = new TaskError("OutOfStock", "no widgets", { details: { sku: "w-1" } });
    assert.ok(error instanceof MeshplaneError && error instanceof Error);
    assert.equal(error.name, "TaskError");
    assert.deepEqual([error.code, error.message, error.retryable, error.details], [
      "OutOfStock",
      "no widgets",
      true,
      { sku: "w-1" },
    ]);
    assert.equal(new TaskError("Busy", "later", { retryable: false }).retryable, false);
  });

  it("NonRetryableError is never retryable", () => {
    const error = new NonRetryableError("Fatal", "fatal");
    assert.ok(error instanceof TaskError);
    assert.deepEqual([error.code, error.message, error.retryable], ["Fatal", "fatal", false]);
  });

  it("subclasses default their code to the class name", () => {
    class Overloaded extends TaskError {
      constructor() {
        super("", "too busy");
      }
    }
    class Gone extends NonRetryableError {
      constructor() {
        super("");
      }
    }
    assert.deepEqual([new Overloaded().code, new Overloaded().retryable], ["Overloaded", true]);
    assert.deepEqual([new Gone().code, new Gone().retryable, new Gone().name], ["Gone", false, "Gone"]);
  });
});

describe("failureResult (what a thrown error becomes)", () => {
  it("reports a TaskError with its code, message, retryable flag and details", () => {
    const error = errorOf(failureResult("t", 2, new TaskError("Flaky", "try again", { details: { n: 1 } })));
    assert.deepEqual(error, { code: "Flaky", message: "try again", retryable: true, details: { n: 1 } });
    const fatal = errorOf(failureResult("t", 2, new NonRetryableError("Fatal", "fatal")));
    assert.deepEqual([fatal?.code, fatal?.message, fatal?.retryable], ["Fatal", "fatal", false]);
  });

  it("reports an ordinary error as retryable, coded by its name, with the stack", () => {
    const error = errorOf(failureResult("t", 1, new TypeError("x is not a function")));
    assert.deepEqual([error?.code, error?.message, error?.retryable], ["TypeError", "x is not a function", true]);
    assert.match(String(error?.details?.["stack"]), /TypeError: x is not a function/);
  });

  it("codes a custom error class by its class name", () => {
    class QuotaExceeded extends Error {}
    assert.equal(errorOf(failureResult("t", 1, new QuotaExceeded("over")))?.code, "QuotaExceeded");
    class Named extends Error {
      override name = "CustomName";
    }
    assert.equal(errorCode(new Named("x")), "CustomName");
    assert.equal(errorCode(new Error("x")), "Error");
  });

  it("reports thrown non-errors and unserializable outputs", () => {
    const thrown = errorOf(failureResult("t", 1, "just a string"));
    assert.deepEqual([thrown?.code, thrown?.message, thrown?.retryable], ["Error", "just a string", true]);
    const output = errorOf(failureResult("t", 1, new NotSerializableError("cannot encode")));
    assert.deepEqual([output?.code, output?.retryable], ["output_not_serializable", false]);
  });

  it("echoes the task id and attempt exactly", () => {
    const result = failureResult("01JTASK", 7, new Error("x"));
    assert.deepEqual([result.taskId, result.attempt], ["01JTASK", 7]);
  });
});
