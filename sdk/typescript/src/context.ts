/** What a handler sees: the task (or channel message) it works on, and what it may do meanwhile. */

import { CancelledError } from "./errors";
import type { Logger } from "./log";
import { type Assignment, type ChannelMessageProto, TaskUpdateKind } from "./proto";
import type { StateStore } from "./state";

/** Options of `publish`. */
export interface PublishOptions {
  /** Free-form headers delivered with the message. */
  headers?: Record<string, string>;
  /** Content type (default: application/json; application/octet-stream for bytes). */
  contentType?: string;
}

/** What contexts need from the running agent (implemented by the runtime). */
export interface ContextPort {
  readonly agentName: string;
  readonly instanceId: string;
  readonly state: StateStore;
  readonly logger: Logger;
  /** Queue a task update (dropped once the attempt has finished). */
  update(taskId: string, attempt: number, kind: TaskUpdateKind, progress: number, message: string): void;
  /** Queue a channel publish on the agent link; throws at once what the plane would refuse. */
  publish(channel: string, data: unknown, options: PublishOptions): void;
}

/** Internal: cancels a context (not part of the public API). */
export const cancelContext = Symbol("meshplane.cancelContext");

function prefixed(logger: Logger, prefix: string): Logger {
  return {
    debug: (message, ...args) => logger.debug(`${prefix} ${message}`, ...args),
    info: (message, ...args) => logger.info(`${prefix} ${message}`, ...args),
    warn: (message, ...args) => logger.warn(`${prefix} ${message}`, ...args),
    error: (message, ...args) => logger.error(`${prefix} ${message}`, ...args),
  };
}

/**
 * The running attempt of one task, handed to every task handler as its first argument.
 *
 * `progress`, `heartbeat` and `publish` queue their message at once (the SDK batches what queues
 * up together into one frame) and return nothing to wait for.
 */
export class TaskContext {
  private readonly port: ContextPort;
  private readonly assignment: Assignment;
  private readonly controller = new AbortController();
  private reason: string | undefined;
  private message = "";
  private logger: Logger | undefined;

  /** @internal Made by the agent for each assignment. */
  constructor(port: ContextPort, assignment: Assignment) {
    this.port = port;
    this.assignment = assignment;
  }

  /** The task id. */
  get taskId(): string {
    return this.assignment.taskId;
  }

  /** This attempt's number, from 1. */
  get attempt(): number {
    return this.assignment.attempt;
  }

  /** The task's max_attempts. */
  get maxAttempts(): number {
    return this.assignment.maxAttempts;
  }

  /** The capability being run. */
  get capability(): string {
    return this.assignment.capability;
  }

  get priority(): number {
    return this.assignment.priority;
  }

  /** The submitter's correlation id. */
  get correlationId(): string {
    return this.assignment.correlationId;
  }

  /** The task's metadata. */
  get metadata(): Readonly<Record<string, string>> {
    return this.assignment.metadata;
  }

  /** When this attempt must be done, if the plane set a deadline. */
  get deadline(): Date | undefined {
    return this.assignment.deadline;
  }

  /** The submitter's W3C trace context. */
  get traceparent(): string {
    return this.assignment.traceparent;
  }

  get tracestate(): string {
    return this.assignment.tracestate;
  }

  /** The agent's name (also the namespace of `state`). */
  get agentName(): string {
    return this.port.agentName;
  }

  /** The agent instance running the attempt. */
  get instanceId(): string {
    return this.port.instanceId;
  }

  // ------------------------------------------------------------ reporting

  /** Report progress (0..1) and an optional message; also resets the task's heartbeat timeout. */
  progress(fraction: number, message = ""): void {
    if (!(fraction >= 0 && fraction <= 1)) {
      throw new RangeError(`progress must be within 0..1, got ${fraction}`);
    }
    this.port.update(this.taskId, this.attempt, TaskUpdateKind.TASK_UPDATE_KIND_PROGRESS, fraction, message);
  }

  /** Tell the plane the handler is alive (needed when the task has a heartbeat timeout). */
  heartbeat(): void {
    this.port.update(this.taskId, this.attempt, TaskUpdateKind.TASK_UPDATE_KIND_HEARTBEAT, 0, "");
  }

  /**
   * Publish a message (any JSON value, or bytes) to a channel. What the control plane would refuse throws here,
   * before anything is sent (the plane's own answer could not reach this call): an {@link InvalidArgumentError} for
   * a channel name or headers it does not take, a {@link ResourceExhaustedError} for a payload over its
   * max_payload_bytes, a {@link NotSerializableError} for a value that is not JSON.
   */
  publish(channel: string, data: unknown, options: PublishOptions = {}): void {
    this.port.publish(channel, data, options);
  }

  /** Key/value state in the namespace named after the agent. */
  get state(): StateStore {
    return this.port.state;
  }

  /** The agent's logger, prefixed with the task id, attempt and capability. */
  get log(): Logger {
    this.logger ??= prefixed(this.port.logger, `[${this.capability} ${this.taskId}#${this.attempt}]`);
    return this.logger;
  }

  // ------------------------------------------------------------ cancellation

  /**
   * Aborted when the plane cancels this attempt (or its deadline passes); its `reason` is a
   * {@link CancelledError}. Pass it to anything that takes an AbortSignal (fetch, timers, ...).
   */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** True once the attempt is cancelled. */
  get cancelled(): boolean {
    return this.reason !== undefined;
  }

  /** Why the attempt was cancelled ("cancelled", "timed_out", "deadline_exceeded", ...), if it was. */
  get cancelReason(): string | undefined {
    return this.reason;
  }

  /**
   * The reason the client gave when it cancelled the task (`client.cancel(taskId, reason)`), in its own
   * words, once the attempt is cancelled: "" when the client gave none, or when the cancellation is not a
   * client's (a timeout, the deadline, the agent stopping); `undefined` while the attempt is not cancelled.
   * Also the `cancelMessage` of the signal's {@link CancelledError}.
   */
  get cancelMessage(): string | undefined {
    return this.reason === undefined ? undefined : this.message;
  }

  /** Throws the {@link CancelledError} if the attempt was cancelled (a handy check in loops). */
  throwIfCancelled(): void {
    if (this.reason !== undefined) {
      throw new CancelledError(this.reason, this.message);
    }
  }

  /** Waits `ms` milliseconds; rejects with {@link CancelledError} as soon as the attempt is cancelled. */
  sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.reason !== undefined) {
        reject(new CancelledError(this.reason, this.message));
        return;
      }
      const signal = this.controller.signal;
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(new CancelledError(this.reason ?? "cancelled", this.message));
      };
      const timer = setTimeout(() => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** @internal */
  [cancelContext](reason: string, message = ""): void {
    if (this.reason !== undefined) {
      return;
    }
    this.reason = reason;
    this.message = message;
    this.controller.abort(new CancelledError(reason, message));
  }

  toString(): string {
    return `TaskContext(${this.capability} ${this.taskId}#${this.attempt})`;
  }
}

/** A channel message being handled: where it came from, and what the handler may do. */
export class ChannelContext {
  private readonly port: ContextPort;
  private readonly message: ChannelMessageProto;
  private logger: Logger | undefined;

  /** @internal Made by the agent for each message. */
  constructor(port: ContextPort, message: ChannelMessageProto) {
    this.port = port;
    this.message = message;
  }

  get channel(): string {
    return this.message.channel;
  }

  get messageId(): string {
    return this.message.messageId;
  }

  get headers(): Readonly<Record<string, string>> {
    return this.message.headers;
  }

  /** Who published it: "agent/<name>/<instance_id>" or "client". */
  get publisher(): string {
    return this.message.publisher;
  }

  get publishTime(): Date | undefined {
    return this.message.publishTime;
  }

  get contentType(): string {
    return this.message.payload?.contentType ?? "";
  }

  get agentName(): string {
    return this.port.agentName;
  }

  get instanceId(): string {
    return this.port.instanceId;
  }

  /** Publish a message to a channel (e.g. a reply); throws as {@link TaskContext.publish} does. */
  publish(channel: string, data: unknown, options: PublishOptions = {}): void {
    this.port.publish(channel, data, options);
  }

  /** Key/value state in the namespace named after the agent. */
  get state(): StateStore {
    return this.port.state;
  }

  /** The agent's logger, prefixed with the channel and message id. */
  get log(): Logger {
    this.logger ??= prefixed(this.port.logger, `[${this.channel} ${this.messageId}]`);
    return this.logger;
  }
}
