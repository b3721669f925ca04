/** The SDK's plain data types (no generated protobuf types leak into the public API). */

/** Any JSON value. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** A JSON object, e.g. a JSON Schema. */
export type JsonObject = { [key: string]: JsonValue };

/** The lifecycle state of a task. */
export type TaskState =
  | "UNSPECIFIED"
  | "QUEUED"
  | "ASSIGNED"
  | "RUNNING"
  | "SUCCEEDED"
  | "FAILED"
  | "CANCELLED"
  | "TIMED_OUT"
  | "DEAD_LETTER";

/** The states a task never leaves. */
export const TERMINAL_STATES: ReadonlySet<TaskState> = new Set<TaskState>([
  "SUCCEEDED",
  "FAILED",
  "CANCELLED",
  "TIMED_OUT",
  "DEAD_LETTER",
]);

/** True for SUCCEEDED, FAILED, CANCELLED, TIMED_OUT and DEAD_LETTER. */
export function isTerminal(state: TaskState): boolean {
  return TERMINAL_STATES.has(state);
}

/** What happened to a task. */
export type TaskEventType =
  | "UNSPECIFIED"
  | "CREATED"
  | "ASSIGNED"
  | "STARTED"
  | "PROGRESS"
  | "RETRYING"
  | "SUCCEEDED"
  | "FAILED"
  | "CANCELLED"
  | "TIMED_OUT"
  | "DEAD_LETTERED";

/** How an attempt ended. */
export type AttemptOutcome = "UNSPECIFIED" | "RUNNING" | "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "LOST" | "CANCELLED";

/** An error reported for a task (by its handler or by the control plane). */
export interface ErrorInfo {
  readonly code: string;
  readonly message: string;
  readonly retryable: boolean;
  readonly details: Record<string, unknown>;
}

/** One attempt of a task. */
export interface AttemptInfo {
  readonly attempt: number;
  readonly agentName: string;
  readonly agentInstanceId: string;
  readonly sessionId: string;
  readonly outcome: AttemptOutcome;
  readonly error: ErrorInfo | undefined;
  readonly assignTime: Date | undefined;
  readonly startTime: Date | undefined;
  readonly endTime: Date | undefined;
}

/** A task as the control plane stores it. Payloads are decoded: JSON as values, other bytes as Uint8Array. */
export interface TaskInfo {
  readonly id: string;
  readonly capability: string;
  readonly agentName: string;
  readonly labelSelector: Readonly<Record<string, string>>;
  readonly state: TaskState;
  /** Current (or last) attempt; 0 before the first assignment. */
  readonly attempt: number;
  readonly maxAttempts: number;
  readonly input: unknown;
  /** The output once SUCCEEDED (undefined before). */
  readonly output: unknown;
  /** The last error (FAILED, DEAD_LETTER, TIMED_OUT, or a failed attempt awaiting retry). */
  readonly error: ErrorInfo | undefined;
  readonly priority: number;
  readonly idempotencyKey: string;
  readonly correlationId: string;
  readonly metadata: Readonly<Record<string, string>>;
  /** Last reported progress, 0..1. */
  readonly progress: number;
  readonly progressMessage: string;
  readonly cancelReason: string;
  readonly resubmittedFrom: string;
  readonly attempts: readonly AttemptInfo[];
  readonly createTime: Date | undefined;
  readonly updateTime: Date | undefined;
  readonly endTime: Date | undefined;
  readonly scheduledTime: Date | undefined;
}

/** One entry of a task's history (WatchTask). */
export interface TaskEvent {
  readonly taskId: string;
  /** Position in the task's history, from 1. */
  readonly sequence: number;
  readonly type: TaskEventType;
  /** The task's state after the event. */
  readonly state: TaskState;
  readonly attempt: number;
  readonly time: Date | undefined;
  readonly agentInstanceId: string;
  readonly progress: number;
  readonly message: string;
  readonly error: ErrorInfo | undefined;
  /** The output (SUCCEEDED events). */
  readonly output: unknown;
  /** Who caused it, as the audit trail names callers ("client/<principal>", "system/timeouts", ...); "" for the plane's own steps. */
  readonly actor: string;
}

/** A state entry: a value with its version (compare-and-set) and optional expiry. */
export interface StateEntry<T = unknown> {
  readonly namespace: string;
  readonly key: string;
  readonly value: T;
  /** From 1, incremented by every write. */
  readonly version: number;
  readonly expireTime: Date | undefined;
  readonly createTime: Date | undefined;
  readonly updateTime: Date | undefined;
}

/** One page of a listing. */
export interface Page<T> {
  readonly items: readonly T[];
  /** Pass to the next call; empty on the last page. */
  readonly nextPageToken: string;
}

/** Whether an agent can take work: ONLINE (an instance connected and not draining), DRAINING, OFFLINE. */
export type AgentAvailability = "UNSPECIFIED" | "ONLINE" | "DRAINING" | "OFFLINE";

/** The connection state of an agent instance. */
export type InstanceStatus = "UNSPECIFIED" | "CONNECTED" | "DRAINING" | "DISCONNECTED";

/** A capability an agent registered. */
export interface CapabilityInfo {
  /** Dotted name, e.g. "text.summarize". */
  readonly name: string;
  readonly description: string;
  /** JSON Schema of the task input, if the agent declared one. */
  readonly inputSchema: JsonObject | undefined;
  /** JSON Schema of the task output, if the agent declared one. */
  readonly outputSchema: JsonObject | undefined;
}

/** A registered agent: all its instances together, as the control plane knows it. */
export interface AgentInfo {
  readonly name: string;
  /** The version last registered. */
  readonly version: string;
  readonly description: string;
  /** Derived from its instances: "ONLINE", "DRAINING" or "OFFLINE". */
  readonly status: AgentAvailability;
  /** How many of its instances are connected. */
  readonly connectedInstances: number;
  /** The capabilities last registered. */
  readonly capabilities: readonly CapabilityInfo[];
  /** The labels last registered. */
  readonly labels: Readonly<Record<string, string>>;
  /** The last registration. */
  readonly updateTime: Date | undefined;
}

/** One running copy of an agent (a stable instance id) and its current (or last) session. */
export interface InstanceInfo {
  readonly instanceId: string;
  readonly agentName: string;
  /** The agent version this instance runs. */
  readonly version: string;
  /** "CONNECTED", "DRAINING" or "DISCONNECTED". */
  readonly status: InstanceStatus;
  /** The current or last session id. */
  readonly sessionId: string;
  /** Names of the capabilities it serves. */
  readonly capabilities: readonly string[];
  /** Most tasks it runs at once. */
  readonly maxConcurrency: number;
  /** Tasks in flight on it now. */
  readonly inFlight: number;
  /** The load the agent last reported (0..1, agent-defined). */
  readonly load: number;
  readonly labels: Readonly<Record<string, string>>;
  /** The SDK it uses, as "language version", e.g. "typescript 0.1.0" (empty if unknown). */
  readonly sdk: string;
  /** Host name it runs on. */
  readonly node: string;
  /** Process id on that host. */
  readonly pid: number;
  /** When the current session connected. */
  readonly connectTime: Date | undefined;
  /** The last sign of life seen (heartbeat or frame), as last recorded. */
  readonly lastSeenTime: Date | undefined;
}

/** A channel in use: published to or subscribed to within the channel retention. */
export interface ChannelInfo {
  readonly name: string;
  /** Its first use. */
  readonly createTime: Date | undefined;
  /**
   * Its last publish, or the last time a subscriber was seen on it; the control plane refreshes it at most once an
   * hour, so it may be up to an hour old.
   */
  readonly lastUseTime: Date | undefined;
}

/** One entry of the audit trail: who changed what, when, under which correlation id. */
export interface AuditEntry {
  /** Its position in the trail: later entries have higher ids. */
  readonly id: number;
  /** When it was recorded. */
  readonly time: Date | undefined;
  /** Who: "client/token:<hash>", "client/anonymous", "agent/<name>/<instance_id>" or "replica/<id>". */
  readonly actor: string;
  /** What: "state.put", "state.delete", "channel.publish", "agent.drain", "task.resubmit", ... */
  readonly action: string;
  /** On what, e.g. "namespaces/n/states/k", "channels/orders", "agents/a/instances/i", "tasks/<id>". */
  readonly resource: string;
  /** The call's correlation id, if any. */
  readonly correlationId: string;
  /** What else the action recorded (e.g. a state entry's new version); `{}` when nothing. */
  readonly details: Record<string, unknown>;
}

/** A message on a channel. */
export interface ChannelMessage<T = unknown> {
  readonly channel: string;
  readonly messageId: string;
  /** The decoded body: JSON as a value, other content types as Uint8Array. */
  readonly data: T;
  readonly contentType: string;
  readonly headers: Readonly<Record<string, string>>;
  /** "agent/<name>/<instance_id>" or "client". */
  readonly publisher: string;
  readonly publishTime: Date | undefined;
}
