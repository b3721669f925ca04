/**
 * The one module that imports the ts-proto code in generated/ts (compiled together with the SDK).
 * Generated types stay inside the SDK: the public API converts to and from plain types.
 */

export {
  AgentLinkServiceClient,
  type Assignment,
  type Cancellation,
  type ConnectRequest,
  type ConnectResponse,
  type Drain,
  type Registered,
  type Register,
  type TaskRef,
  type TaskResult,
  type TaskUpdate,
  TaskUpdateKind,
} from "../../../generated/ts/meshplane/v1/agent_link";
export {
  type Agent as AgentProto,
  type AgentInstance as AgentInstanceProto,
  agentInstanceStatusToJSON,
  agentStatusToJSON,
} from "../../../generated/ts/meshplane/v1/agent";
export { AgentServiceClient } from "../../../generated/ts/meshplane/v1/agent_service";
export { type AuditEntry as AuditEntryProto, AuditServiceClient } from "../../../generated/ts/meshplane/v1/audit";
export {
  type Channel as ChannelProto,
  type ChannelMessage as ChannelMessageProto,
  ChannelServiceClient,
  type SubscribeResponse,
} from "../../../generated/ts/meshplane/v1/channel";
export {
  type Capability,
  type Payload,
  type TaskError as TaskErrorProto,
} from "../../../generated/ts/meshplane/v1/common";
export { type StateEntry as StateEntryProto, StateServiceClient } from "../../../generated/ts/meshplane/v1/state";
export {
  AttemptOutcome as AttemptOutcomeProto,
  attemptOutcomeToJSON,
  SchedulingStrategy,
  type Task as TaskProto,
  type TaskAttempt as TaskAttemptProto,
  type TaskEvent as TaskEventProto,
  TaskEventType as TaskEventTypeProto,
  taskEventTypeToJSON,
  TaskState as TaskStateProto,
  taskStateFromJSON,
  taskStateToJSON,
} from "../../../generated/ts/meshplane/v1/task";
export { type SubmitTaskRequest, TaskServiceClient } from "../../../generated/ts/meshplane/v1/task_service";
export type { Duration } from "../../../generated/ts/google/protobuf/duration";
