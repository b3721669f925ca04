/**
 * Meshplane's TypeScript SDK: serve capabilities with {@link Agent}, use the mesh with {@link MeshClient}.
 *
 * ```ts
 * import { Agent } from "@meshplane/sdk";
 *
 * const agent = new Agent({ name: "greeter" });
 * agent.task("greet", async (ctx, input: { name: string }) => ({ greeting: `hello ${input.name}` }));
 * agent.stopOnSignals();
 * agent.run("127.0.0.1:50051").catch((error) => console.error(error));
 * ```
 */

export {
  Agent,
  type AgentOptions,
  type ChannelHandler,
  type RunOptions,
  type TaskHandler,
  type TaskOptions,
} from "./agent";
export {
  type AuditFilter,
  MeshClient,
  type MeshClientOptions,
  type PageOptions,
  type Strategy,
  type SubmitOptions,
  type SubmitResult,
  type TaskFilter,
  type TaskSubmission,
  type WaitOptions,
  type WatchOptions,
} from "./client";
export { type ConnectionOptions, DEFAULT_TARGET, type TlsOptions } from "./connection";
export { ChannelContext, type PublishOptions, TaskContext } from "./context";
export {
  AlreadyExistsError,
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  type FieldViolation,
  InstanceIdTakenError,
  InvalidArgumentError,
  MeshplaneError,
  NonRetryableError,
  NotFoundError,
  NotSerializableError,
  PermissionDeniedError,
  type PreconditionViolation,
  RegistrationRejectedError,
  ResourceExhaustedError,
  RpcError,
  TaskCancelledError,
  TaskDeadLetteredError,
  TaskError,
  type TaskErrorOptions,
  TaskFailedError,
  TaskTimedOutError,
  TimeoutError,
  UnauthenticatedError,
  UnavailableError,
  ValidationError,
  VersionConflictError,
} from "./errors";
export { consoleLogger, type Logger, type LogLevel } from "./log";
export type { AgentStatus } from "./runtime";
export { type DeleteOptions, type ListOptions, type PutOptions, StateStore } from "./state";
export type { SubscribeOptions, Subscription } from "./subscription";
export {
  type AgentAvailability,
  type AgentInfo,
  type AttemptInfo,
  type AttemptOutcome,
  type AuditEntry,
  type CapabilityInfo,
  type ChannelInfo,
  type ChannelMessage,
  type ErrorInfo,
  type InstanceInfo,
  type InstanceStatus,
  isTerminal,
  type JsonObject,
  type JsonValue,
  type Page,
  type StateEntry,
  type TaskEvent,
  type TaskEventType,
  type TaskInfo,
  type TaskState,
} from "./types";
export { SDK_VERSION } from "./version";
