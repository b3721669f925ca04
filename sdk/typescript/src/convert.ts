/** Generated protobuf messages -> the SDK's plain types (and back), in one place. */

import { decodePayload } from "./payload";
import {
  type AgentInstanceProto,
  agentInstanceStatusToJSON,
  type AgentProto,
  agentStatusToJSON,
  attemptOutcomeToJSON,
  type AuditEntryProto,
  type Capability,
  type ChannelMessageProto,
  type ChannelProto,
  type Duration,
  type StateEntryProto,
  type TaskAttemptProto,
  type TaskErrorProto,
  type TaskEventProto,
  taskEventTypeToJSON,
  type TaskProto,
  TaskStateProto,
  taskStateFromJSON,
  taskStateToJSON,
} from "./proto";
import type {
  AgentAvailability,
  AgentInfo,
  AttemptInfo,
  AttemptOutcome,
  AuditEntry,
  CapabilityInfo,
  ChannelInfo,
  ChannelMessage,
  ErrorInfo,
  InstanceInfo,
  InstanceStatus,
  JsonObject,
  StateEntry,
  TaskEvent,
  TaskEventType,
  TaskInfo,
  TaskState,
} from "./types";

/** Milliseconds as a protobuf Duration (rounded to whole nanoseconds). */
export function durationFromMs(ms: number): Duration {
  if (!Number.isFinite(ms) || ms < 0) {
    throw new RangeError(`a duration must be a finite number of milliseconds >= 0, got ${ms}`);
  }
  const totalNanos = Math.round(ms * 1e6);
  const seconds = Math.floor(totalNanos / 1e9);
  return { seconds, nanos: totalNanos - seconds * 1e9 };
}

/** A protobuf Duration in milliseconds (undefined stays undefined). */
export function durationToMs(duration: Duration | undefined): number | undefined {
  if (duration === undefined) {
    return undefined;
  }
  return duration.seconds * 1000 + duration.nanos / 1e6;
}

function stripPrefix(name: string, prefix: string): string {
  return name.startsWith(prefix) ? name.slice(prefix.length) : "UNSPECIFIED";
}

export function taskState(value: number): TaskState {
  return stripPrefix(taskStateToJSON(value), "TASK_STATE_") as TaskState;
}

/**
 * A task state as its protobuf enum value, for filters: undefined and "UNSPECIFIED" mean no filter.
 * Anything else but a {@link TaskState} throws a RangeError (for callers without type checks).
 */
export function taskStateToProto(state: TaskState | undefined): TaskStateProto {
  if (state === undefined || state === "UNSPECIFIED") {
    return TaskStateProto.TASK_STATE_UNSPECIFIED;
  }
  const value = typeof state === "string" ? taskStateFromJSON(`TASK_STATE_${state}`) : TaskStateProto.UNRECOGNIZED;
  if (value === TaskStateProto.UNRECOGNIZED) {
    throw new RangeError(`unknown task state ${JSON.stringify(state)}`);
  }
  return value;
}

export function taskEventType(value: number): TaskEventType {
  return stripPrefix(taskEventTypeToJSON(value), "TASK_EVENT_TYPE_") as TaskEventType;
}

export function attemptOutcome(value: number): AttemptOutcome {
  return stripPrefix(attemptOutcomeToJSON(value), "ATTEMPT_OUTCOME_") as AttemptOutcome;
}

/** Decodes a payload without throwing: bad JSON comes back as its raw bytes. */
function lenientPayload(payload: Parameters<typeof decodePayload>[0]): unknown {
  try {
    return decodePayload(payload);
  } catch {
    return payload?.kind?.$case === "data" ? payload.kind.data : null;
  }
}

export function errorInfo(error: TaskErrorProto | undefined): ErrorInfo | undefined {
  if (error === undefined) {
    return undefined;
  }
  return {
    code: error.code,
    message: error.message,
    retryable: error.retryable,
    details: (error.details ?? {}) as Record<string, unknown>,
  };
}

function attemptInfo(attempt: TaskAttemptProto): AttemptInfo {
  return {
    attempt: attempt.attempt,
    agentName: attempt.agentName,
    agentInstanceId: attempt.agentInstanceId,
    sessionId: attempt.sessionId,
    outcome: attemptOutcome(attempt.outcome),
    error: errorInfo(attempt.error),
    assignTime: attempt.assignTime,
    startTime: attempt.startTime,
    endTime: attempt.endTime,
  };
}

export function taskInfo(task: TaskProto): TaskInfo {
  return {
    id: task.id,
    capability: task.target?.capability ?? "",
    agentName: task.target?.agentName ?? "",
    labelSelector: { ...(task.target?.labelSelector ?? {}) },
    state: taskState(task.state),
    attempt: task.attempt,
    maxAttempts: task.retryPolicy?.maxAttempts ?? 0,
    input: lenientPayload(task.input),
    output: task.output === undefined ? undefined : lenientPayload(task.output),
    error: errorInfo(task.error),
    priority: task.priority,
    idempotencyKey: task.idempotencyKey,
    correlationId: task.correlationId,
    metadata: { ...task.metadata },
    progress: task.progress,
    progressMessage: task.progressMessage,
    cancelReason: task.cancelReason,
    resubmittedFrom: task.resubmittedFrom,
    attempts: task.attempts.map(attemptInfo),
    createTime: task.createTime,
    updateTime: task.updateTime,
    endTime: task.endTime,
    scheduledTime: task.scheduledTime,
  };
}

export function taskEvent(event: TaskEventProto): TaskEvent {
  return {
    taskId: event.taskId,
    sequence: event.sequence,
    type: taskEventType(event.type),
    state: taskState(event.state),
    attempt: event.attempt,
    time: event.time,
    agentInstanceId: event.agentInstanceId,
    progress: event.progress,
    message: event.message,
    error: errorInfo(event.error),
    output: event.output === undefined ? undefined : lenientPayload(event.output),
    actor: event.actor,
  };
}

export function stateEntry<T>(entry: StateEntryProto | undefined): StateEntry<T> {
  if (entry === undefined) {
    throw new TypeError("the control plane answered without a state entry");
  }
  return {
    namespace: entry.namespace,
    key: entry.key,
    value: lenientPayload(entry.value) as T,
    version: entry.version,
    expireTime: entry.expireTime,
    createTime: entry.createTime,
    updateTime: entry.updateTime,
  };
}

/** A channel message; its body decoded (`decode` throws for bad JSON so handlers can report it). */
export function channelMessage(message: ChannelMessageProto, data: unknown): ChannelMessage {
  return {
    channel: message.channel,
    messageId: message.messageId,
    data,
    contentType: message.payload?.contentType ?? "",
    headers: { ...message.headers },
    publisher: message.publisher,
    publishTime: message.publishTime,
  };
}

export function channelInfo(channel: ChannelProto): ChannelInfo {
  return { name: channel.name, createTime: channel.createTime, lastUseTime: channel.lastUseTime };
}

export function auditEntry(entry: AuditEntryProto): AuditEntry {
  return {
    id: entry.id,
    time: entry.time,
    actor: entry.actor,
    action: entry.action,
    resource: entry.resource,
    correlationId: entry.correlationId,
    details: (entry.details ?? {}) as Record<string, unknown>,
  };
}

function capabilityInfo(capability: Capability): CapabilityInfo {
  return {
    name: capability.name,
    description: capability.description,
    inputSchema: capability.inputSchema as JsonObject | undefined,
    outputSchema: capability.outputSchema as JsonObject | undefined,
  };
}

export function agentInfo(agent: AgentProto): AgentInfo {
  return {
    name: agent.name,
    version: agent.version,
    description: agent.description,
    status: stripPrefix(agentStatusToJSON(agent.status), "AGENT_STATUS_") as AgentAvailability,
    connectedInstances: agent.connectedInstances,
    capabilities: agent.capabilities.map(capabilityInfo),
    labels: { ...agent.labels },
    updateTime: agent.updateTime,
  };
}

export function instanceInfo(instance: AgentInstanceProto): InstanceInfo {
  return {
    instanceId: instance.instanceId,
    agentName: instance.agentName,
    version: instance.version,
    status: stripPrefix(agentInstanceStatusToJSON(instance.status), "AGENT_INSTANCE_STATUS_") as InstanceStatus,
    sessionId: instance.sessionId,
    capabilities: [...instance.capabilities],
    maxConcurrency: instance.maxConcurrency,
    inFlight: instance.inFlight,
    load: instance.load,
    labels: { ...instance.labels },
    sdk: `${instance.sdk?.language ?? ""} ${instance.sdk?.version ?? ""}`.trim(),
    node: instance.node,
    pid: instance.pid,
    connectTime: instance.connectTime,
    lastSeenTime: instance.lastSeenTime,
  };
}
