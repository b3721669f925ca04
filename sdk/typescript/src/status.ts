/**
 * gRPC status -> the SDK's error tree, with the google.rpc details the control plane packs into
 * the `grpc-status-details-bin` trailer (ErrorInfo, BadRequest, PreconditionFailure, ResourceInfo).
 *
 * Those google.rpc messages are not part of generated/ts, so the few fields needed are read
 * straight from the wire format here.
 */

import { type Metadata, status as Status } from "@grpc/grpc-js";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

import {
  AlreadyExistsError,
  DeadlineExceededError,
  FailedPreconditionError,
  type FieldViolation,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  type PreconditionViolation,
  ResourceExhaustedError,
  RpcError,
  type RpcErrorInit,
  UnauthenticatedError,
  UnavailableError,
  VersionConflictError,
} from "./errors";

const DETAILS_KEY = "grpc-status-details-bin";
const TYPE_PREFIX = "type.googleapis.com/";

/** What a failed grpc-js call reports (a `ServiceError` or a `StatusObject`). */
export interface StatusLike {
  code: number;
  details?: string;
  message?: string;
  metadata?: Metadata;
}

type Field = { no: number; bytes?: Uint8Array; varint?: number };

/** The top-level fields of a protobuf message (length-delimited as bytes, varints as numbers). */
function fields(buf: Uint8Array): Field[] {
  const reader = new BinaryReader(buf);
  const out: Field[] = [];
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag();
    if (wireType === WireType.LengthDelimited) {
      out.push({ no, bytes: reader.bytes() });
    } else if (wireType === WireType.Varint) {
      out.push({ no, varint: reader.int32() });
    } else {
      reader.skip(wireType, no);
    }
  }
  return out;
}

const decoder = new TextDecoder();

function text(field: Field | undefined): string {
  return field?.bytes ? decoder.decode(field.bytes) : "";
}

function strings(buf: Uint8Array): Map<number, string> {
  const map = new Map<number, string>();
  for (const field of fields(buf)) {
    if (field.bytes && !map.has(field.no)) {
      map.set(field.no, text(field));
    }
  }
  return map;
}

/** The details of a `google.rpc.Status`, as far as the SDK uses them. */
export interface StatusDetails {
  reason: string;
  violations: FieldViolation[];
  preconditions: PreconditionViolation[];
  resourceType: string;
  resourceName: string;
}

/** Reads a serialized `google.rpc.Status` (its `details` Any messages); unknown details are ignored. */
export function parseStatusDetails(buf: Uint8Array): StatusDetails {
  const result: StatusDetails = { reason: "", violations: [], preconditions: [], resourceType: "", resourceName: "" };
  for (const detail of fields(buf)) {
    if (detail.no !== 3 || !detail.bytes) {
      continue; // 1: code, 2: message
    }
    let typeUrl = "";
    let value: Uint8Array = new Uint8Array();
    for (const part of fields(detail.bytes)) {
      if (part.no === 1) typeUrl = text(part);
      else if (part.no === 2 && part.bytes) value = part.bytes;
    }
    const type = typeUrl.startsWith(TYPE_PREFIX) ? typeUrl.slice(TYPE_PREFIX.length) : typeUrl;
    if (type === "google.rpc.ErrorInfo") {
      result.reason = strings(value).get(1) ?? "";
    } else if (type === "google.rpc.BadRequest") {
      for (const violation of fields(value)) {
        if (violation.no === 1 && violation.bytes) {
          const v = strings(violation.bytes);
          result.violations.push({ field: v.get(1) ?? "", description: v.get(2) ?? "" });
        }
      }
    } else if (type === "google.rpc.PreconditionFailure") {
      for (const violation of fields(value)) {
        if (violation.no === 1 && violation.bytes) {
          const v = strings(violation.bytes);
          result.preconditions.push({ type: v.get(1) ?? "", subject: v.get(2) ?? "", description: v.get(3) ?? "" });
        }
      }
    } else if (type === "google.rpc.ResourceInfo") {
      const v = strings(value);
      result.resourceType = v.get(1) ?? "";
      result.resourceName = v.get(2) ?? "";
    }
  }
  return result;
}

function statusName(code: number): string {
  const name = (Status as unknown as Record<number, string | undefined>)[code];
  return name ?? "UNKNOWN";
}

function detailsOf(metadata: Metadata | undefined): StatusDetails | undefined {
  const values = metadata?.get(DETAILS_KEY) ?? [];
  for (const value of values) {
    if (typeof value !== "string") {
      try {
        return parseStatusDetails(value);
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** The SDK error for a failed call to the control plane at `target`. */
export function errorFromStatus(failure: StatusLike, target: string): RpcError {
  const code = failure.code;
  const name = statusName(code);
  const message = failure.details || failure.message || name;
  const details = detailsOf(failure.metadata);
  const init: RpcErrorInit = {
    code: name,
    grpcCode: code,
    reason: details?.reason ?? "",
    violations: details?.violations ?? [],
    preconditions: details?.preconditions ?? [],
    resourceType: details?.resourceType ?? "",
    resourceName: details?.resourceName ?? "",
    cause: failure instanceof Error ? failure : undefined,
  };
  switch (code) {
    case Status.NOT_FOUND:
      return new NotFoundError(message, init);
    case Status.ALREADY_EXISTS:
      return new AlreadyExistsError(message, init);
    case Status.INVALID_ARGUMENT: {
      const described = init.violations?.length
        ? init.violations.map((v) => `${v.field}: ${v.description}`).join("; ")
        : message;
      return new InvalidArgumentError(`invalid argument: ${described}`, init);
    }
    case Status.FAILED_PRECONDITION:
      if (init.preconditions?.some((v) => v.type === "VERSION_MISMATCH")) {
        return new VersionConflictError(message, init);
      }
      return new FailedPreconditionError(message, init);
    case Status.RESOURCE_EXHAUSTED:
      return new ResourceExhaustedError(message, init);
    case Status.UNAUTHENTICATED:
      return new UnauthenticatedError(message, init);
    case Status.PERMISSION_DENIED:
      return new PermissionDeniedError(message, init);
    case Status.UNAVAILABLE:
      return new UnavailableError(`control plane unavailable at ${target}: ${message}`, init);
    case Status.DEADLINE_EXCEEDED:
      return new DeadlineExceededError(message, init);
    default:
      return new RpcError(message, init);
  }
}

/** True for a grpc-js call failure (an Error carrying a numeric `code`). */
export function isServiceError(error: unknown): error is Error & StatusLike {
  return error instanceof Error && typeof (error as { code?: unknown }).code === "number";
}
