import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { Metadata, status } from "@grpc/grpc-js";

import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  RpcError,
  UnauthenticatedError,
  UnavailableError,
  VersionConflictError,
} from "../src/errors";
import { errorFromStatus, parseStatusDetails } from "../src/status";

/** A google.protobuf.Any of `typeName` wrapping the message written by `body`. */
function any(writer: BinaryWriter, typeName: string, body: (w: BinaryWriter) => void): void {
  const inner = new BinaryWriter();
  body(inner);
  writer.uint32(26).fork(); // Status.details = 3
  writer.uint32(10).string(`type.googleapis.com/${typeName}`);
  writer.uint32(18).bytes(inner.finish());
  writer.join();
}

function statusBytes(code: number, message: string, details: (w: BinaryWriter) => void): Uint8Array {
  const writer = new BinaryWriter();
  writer.uint32(8).int32(code);
  writer.uint32(18).string(message);
  details(writer);
  return writer.finish();
}

function trailers(bytes: Uint8Array): Metadata {
  const metadata = new Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(bytes));
  return metadata;
}

const versionMismatch = statusBytes(status.FAILED_PRECONDITION, "k: expected version 0, stored is version 1", (w) => {
  any(w, "google.rpc.ErrorInfo", (e) => e.uint32(10).string("FAILED_PRECONDITION").uint32(18).string("meshplane.dev"));
  any(w, "google.rpc.PreconditionFailure", (p) => {
    p.uint32(10).fork();
    p.uint32(10).string("VERSION_MISMATCH").uint32(18).string("ns/k").uint32(26).string("expected version 0");
    p.join();
  });
});

describe("parseStatusDetails", () => {
  it("reads ErrorInfo and PreconditionFailure", () => {
    const details = parseStatusDetails(versionMismatch);
    assert.equal(details.reason, "FAILED_PRECONDITION");
    assert.deepEqual(details.preconditions, [
      { type: "VERSION_MISMATCH", subject: "ns/k", description: "expected version 0" },
    ]);
  });

  it("reads BadRequest and ResourceInfo, and ignores unknown details", () => {
    const bytes = statusBytes(status.INVALID_ARGUMENT, "bad", (w) => {
      any(w, "google.rpc.BadRequest", (b) => {
        b.uint32(10).fork().uint32(10).string("target.capability").uint32(18).string("is empty").join();
        b.uint32(10).fork().uint32(10).string("priority").uint32(18).string("too high").join();
      });
      any(w, "google.rpc.ResourceInfo", (r) => r.uint32(10).string("task").uint32(18).string("01X"));
      any(w, "example.Unknown", (u) => u.uint32(8).int32(5));
    });
    const details = parseStatusDetails(bytes);
    assert.deepEqual(details.violations, [
      { field: "target.capability", description: "is empty" },
      { field: "priority", description: "too high" },
    ]);
    assert.deepEqual([details.resourceType, details.resourceName], ["task", "01X"]);
  });
});

describe("errorFromStatus", () => {
  it("maps a version mismatch to VersionConflictError", () => {
    const error = errorFromStatus(
      { code: status.FAILED_PRECONDITION, details: "k: expected version 0", metadata: trailers(versionMismatch) },
      "127.0.0.1:1",
    );
    assert.ok(error instanceof VersionConflictError);
    assert.ok(error instanceof FailedPreconditionError && error instanceof RpcError);
    assert.equal(error.code, "FAILED_PRECONDITION");
    assert.equal(error.reason, "FAILED_PRECONDITION");
    assert.equal(error.violations[0]?.type, "VERSION_MISMATCH");
  });

  it("keeps other failed preconditions generic", () => {
    const error = errorFromStatus({ code: status.FAILED_PRECONDITION, details: "task ended" }, "t");
    assert.ok(error instanceof FailedPreconditionError && !(error instanceof VersionConflictError));
  });

  it("maps the other codes", () => {
    const notFound = errorFromStatus({ code: status.NOT_FOUND, details: "task 1 not found" }, "t");
    assert.ok(notFound instanceof NotFoundError);
    assert.equal(notFound.message, "task 1 not found");
    const invalid = errorFromStatus({ code: status.INVALID_ARGUMENT, details: "bad input" }, "t");
    assert.ok(invalid instanceof InvalidArgumentError);
    assert.match(invalid.message, /invalid argument: bad input/);
    assert.ok(errorFromStatus({ code: status.UNAUTHENTICATED, details: "no token" }, "t") instanceof UnauthenticatedError);
    const unavailable = errorFromStatus({ code: status.UNAVAILABLE, details: "connection refused" }, "h:1");
    assert.ok(unavailable instanceof UnavailableError);
    assert.match(unavailable.message, /h:1/);
    const internal = errorFromStatus({ code: status.INTERNAL, details: "boom" }, "t");
    assert.equal(internal.constructor, RpcError);
    assert.deepEqual([internal.code, internal.grpcCode], ["INTERNAL", status.INTERNAL]);
  });

  it("survives garbage in the details trailer", () => {
    const error = errorFromStatus(
      { code: status.NOT_FOUND, details: "x", metadata: trailers(new Uint8Array([0xff, 0xff, 0xff])) },
      "t",
    );
    assert.ok(error instanceof NotFoundError);
  });
});
