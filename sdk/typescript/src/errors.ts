/**
 * The SDK's one error tree: errors handlers throw on purpose, control plane (gRPC) errors, and
 * task outcomes seen by clients. Every class derives from {@link MeshplaneError}.
 */

import type { TaskInfo } from "./types";

/** Root of every error the SDK throws on purpose. */
export class MeshplaneError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

// ---------------------------------------------------------------- thrown by task handlers

/** Options of a {@link TaskError}. */
export interface TaskErrorOptions {
  /** Whether another attempt may succeed (default: true for TaskError, false for NonRetryableError). */
  retryable?: boolean;
  /** Free-form structured details, sent with the error (JSON object). */
  details?: Record<string, unknown>;
  /** The underlying error, if any. */
  cause?: unknown;
}

/**
 * Throw from a task handler to fail the attempt with a chosen code and message. Retryable unless
 * `retryable: false` is given (or the class derives from {@link NonRetryableError}).
 *
 * ```ts
 * throw new TaskError("OutOfStock", "no more widgets");
 * ```
 */
export class TaskError extends MeshplaneError {
  /** The machine-readable code, e.g. "OutOfStock" (matched by retry policies). */
  readonly code: string;
  /** Whether another attempt may succeed. */
  readonly retryable: boolean;
  /** Structured details sent with the error. */
  readonly details: Record<string, unknown>;

  constructor(code: string, message = "", options: TaskErrorOptions = {}) {
    super(message || code, { cause: options.cause });
    this.code = code || new.target.name;
    this.retryable = options.retryable ?? new.target.defaultRetryable;
    this.details = { ...(options.details ?? {}) };
  }

  /** What `retryable` is when the constructor is not told. */
  static readonly defaultRetryable: boolean = true;
}

/** A task error that no further attempt can fix: the task ends FAILED at once. */
export class NonRetryableError extends TaskError {
  static override readonly defaultRetryable: boolean = false;

  constructor(code: string, message = "", options: Omit<TaskErrorOptions, "retryable"> = {}) {
    super(code, message, { ...options, retryable: false });
  }
}

/**
 * The task input did not pass the handler's `validate` function. The SDK reports it with the
 * non-retryable code `validation_failed`; a `validate` function may throw this or any error.
 */
export class ValidationError extends MeshplaneError {
  /** Structured details (e.g. the offending fields). */
  readonly details: Record<string, unknown>;

  constructor(message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.details = { ...details };
  }
}

/**
 * The reason of a task's `ctx.signal` once the plane cancels the attempt (or its deadline passes).
 * Handlers may simply let it propagate: the SDK reports the cancellation either way.
 */
export class CancelledError extends MeshplaneError {
  /** Why: "cancelled", "timed_out", "deadline_exceeded", "not_held", "agent_stopped". */
  readonly reason: string;
  /**
   * The reason the client gave when it cancelled the task, in its own words (as `ctx.cancelMessage`);
   * "" when it gave none or the cancellation is not a client's (a timeout, the deadline, the agent stopping).
   */
  readonly cancelMessage: string;

  constructor(reason: string, cancelMessage = "") {
    super(cancelMessage ? `task attempt cancelled: ${reason}: ${cancelMessage}` : `task attempt cancelled: ${reason}`);
    this.reason = reason;
    this.cancelMessage = cancelMessage;
  }
}

/** A value that cannot travel as JSON (a BigInt, a cycle, ...). */
export class NotSerializableError extends MeshplaneError {}

// ---------------------------------------------------------------- agent lifecycle

/** The control plane refused the agent's registration (a bad name, capability, limit, ...). */
export class RegistrationRejectedError extends MeshplaneError {
  /** The offending field, e.g. "register.max_concurrency". */
  readonly field: string;

  constructor(message: string, field = "") {
    super(`registration rejected: ${message}${field ? ` (field ${field})` : ""}`);
    this.field = field;
  }
}

/**
 * Another agent registered this agent's instance id, and the control plane gave it this agent's session (two
 * processes configured with one `instanceId`). `run()` rejects with it instead of reconnecting: a reconnect would
 * take the session back from the other agent, which would do the same, and both would flap for good. Give each
 * process its own instance id.
 */
export class InstanceIdTakenError extends MeshplaneError {
  /** The instance id both agents registered. */
  readonly instanceId: string;
  /** The control plane's explanation. */
  readonly planeMessage: string;

  constructor(instanceId: string, planeMessage: string) {
    super(`instance_id "${instanceId}" is taken by another agent: ${planeMessage}`);
    this.instanceId = instanceId;
    this.planeMessage = planeMessage;
  }
}

// ---------------------------------------------------------------- control plane (gRPC) errors

/** One invalid request field. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

/** One failed precondition, e.g. type "VERSION_MISMATCH". */
export interface PreconditionViolation {
  readonly type: string;
  readonly subject: string;
  readonly description: string;
}

/** What an {@link RpcError} is built from. */
export interface RpcErrorInit {
  /** gRPC status code name, e.g. "NOT_FOUND". */
  code: string;
  /** Numeric gRPC status code. */
  grpcCode: number;
  /** The control plane's reason (google.rpc.ErrorInfo), e.g. "NOT_FOUND". */
  reason?: string;
  violations?: readonly FieldViolation[];
  preconditions?: readonly PreconditionViolation[];
  resourceType?: string;
  resourceName?: string;
  cause?: unknown;
}

/** A control plane call failed. `code` is the gRPC status code name, e.g. "NOT_FOUND". */
export class RpcError extends MeshplaneError {
  readonly code: string;
  readonly grpcCode: number;
  readonly reason: string;

  constructor(message: string, init: RpcErrorInit) {
    super(message, { cause: init.cause });
    this.code = init.code;
    this.grpcCode = init.grpcCode;
    this.reason = init.reason ?? "";
  }
}

/** The task, state entry, agent ... does not exist. */
export class NotFoundError extends RpcError {
  readonly resourceType: string;
  readonly resourceName: string;

  constructor(message: string, init: RpcErrorInit) {
    super(message, init);
    this.resourceType = init.resourceType ?? "";
    this.resourceName = init.resourceName ?? "";
  }
}

/** The resource exists already. */
export class AlreadyExistsError extends RpcError {}

/** The request was invalid; `violations` names every offending field. */
export class InvalidArgumentError extends RpcError {
  readonly violations: readonly FieldViolation[];

  constructor(message: string, init: RpcErrorInit) {
    super(message, init);
    this.violations = init.violations ?? [];
  }
}

/** The request is valid but the resource is not in a state that allows it. */
export class FailedPreconditionError extends RpcError {
  readonly violations: readonly PreconditionViolation[];

  constructor(message: string, init: RpcErrorInit) {
    super(message, init);
    this.violations = init.preconditions ?? [];
  }
}

/** A compare-and-set write (or delete) found another version than the expected one; nothing changed. */
export class VersionConflictError extends FailedPreconditionError {}

/** A limit was hit (payload size, queue length, ...). */
export class ResourceExhaustedError extends RpcError {}

/** The call carried no valid bearer token. */
export class UnauthenticatedError extends RpcError {}

/** The token may not do this. */
export class PermissionDeniedError extends RpcError {}

/** The control plane could not be reached (or is shutting down). */
export class UnavailableError extends RpcError {}

/** The call did not finish in time. */
export class DeadlineExceededError extends RpcError {}

// ---------------------------------------------------------------- task outcomes (client side)

/** Waiting for a task: it ended without succeeding. `task` is its final record. */
export class TaskFailedError extends MeshplaneError {
  readonly task: TaskInfo;

  constructor(task: TaskInfo) {
    const error = task.error;
    super(`task ${task.id} ended ${task.state}${error ? `: ${error.code}: ${error.message}` : ""}`);
    this.task = task;
  }
}

/** Waiting took longer than the caller allowed (the task itself goes on). */
export class TimeoutError extends MeshplaneError {}

/** The task was cancelled. */
export class TaskCancelledError extends TaskFailedError {}

/** The task exceeded a deadline (schedule-to-start, start-to-close or overall). */
export class TaskTimedOutError extends TaskFailedError {}

/** The task used up its attempts. */
export class TaskDeadLetteredError extends TaskFailedError {}
