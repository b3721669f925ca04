/**
 * `MeshClient`: submit, follow and list tasks, list agents, publish on, subscribe to and list channels, read and
 * write state, read the audit trail.
 */

import { type ConnectionOptions, Connection, defaultTarget, defaultToken } from "./connection";
import {
  agentInfo,
  auditEntry,
  channelInfo,
  channelMessage,
  durationFromMs,
  instanceInfo,
  taskEvent,
  taskInfo,
  taskStateToProto,
} from "./convert";
import {
  type FailedPreconditionError,
  type InvalidArgumentError,
  type NotFoundError,
  type RpcError,
  TaskCancelledError,
  TaskDeadLetteredError,
  TaskFailedError,
  TaskTimedOutError,
  TimeoutError,
  UnavailableError,
} from "./errors";
import { decodePayload, encodePayload } from "./payload";
import {
  AgentServiceClient,
  AuditServiceClient,
  ChannelServiceClient,
  type Duration,
  SchedulingStrategy,
  type SubmitTaskRequest,
  TaskServiceClient,
} from "./proto";
import { StateStore } from "./state";
import { ChannelSubscription, type SubscribeOptions, type Subscription } from "./subscription";
import {
  type AgentInfo,
  type AuditEntry,
  type ChannelInfo,
  type ChannelMessage,
  type InstanceInfo,
  type Page,
  isTerminal,
  type TaskEvent,
  type TaskInfo,
  type TaskState,
} from "./types";

/** How a task may be placed among the agents that serve its capability. */
export type Strategy = "least_loaded" | "round_robin" | "weighted" | "consistent_hash";

const STRATEGIES: Record<Strategy, SchedulingStrategy> = {
  least_loaded: SchedulingStrategy.SCHEDULING_STRATEGY_LEAST_LOADED,
  round_robin: SchedulingStrategy.SCHEDULING_STRATEGY_ROUND_ROBIN,
  weighted: SchedulingStrategy.SCHEDULING_STRATEGY_WEIGHTED,
  consistent_hash: SchedulingStrategy.SCHEDULING_STRATEGY_CONSISTENT_HASH,
};

/** Everything a submission can say besides capability and input. Unset limits take the plane's defaults. */
export interface SubmitOptions {
  /** Higher runs first, -1000..1000. */
  priority?: number;
  /**
   * Submitting the same key again returns the existing task; the key given with another target, input or
   * priority is refused with {@link FailedPreconditionError}.
   */
  idempotencyKey?: string;
  correlationId?: string;
  metadata?: Record<string, string>;
  /** Only agents with this name. */
  agentName?: string;
  /** Only agent instances with all of these labels. */
  labelSelector?: Record<string, string>;
  /** Key for the consistent-hash strategy. */
  routingKey?: string;
  strategy?: Strategy;
  /** Total attempts including the first. */
  maxAttempts?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  backoffMultiplier?: number;
  /** Error codes that end the task FAILED at once. */
  nonRetryableErrorCodes?: string[];
  scheduleToStartMs?: number;
  startToCloseMs?: number;
  /** Longest silence (no progress or heartbeat) of a running attempt. */
  heartbeatTimeoutMs?: number;
  scheduleToCloseMs?: number;
  /** Content type of the input (default: application/json; application/octet-stream for bytes). */
  contentType?: string;
}

/** A submitted task, and whether its idempotency key matched an existing one. */
export interface SubmitResult extends TaskInfo {
  readonly deduplicated: boolean;
}

/** One task of a {@link MeshClient.submitMany} batch: what {@link MeshClient.submit} takes, as one object. */
export interface TaskSubmission {
  capability: string;
  /** Any JSON value, or a Uint8Array (default: null). */
  input?: unknown;
  options?: SubmitOptions;
}

/** Which tasks {@link MeshClient.listTasks} and {@link MeshClient.listTasksPage} list; unset fields match all. */
export interface TaskFilter {
  /** Only tasks in this state. */
  state?: TaskState;
  /** Only tasks for this capability. */
  capability?: string;
  /** Only tasks with this correlation id. */
  correlationId?: string;
}

/**
 * Which entries {@link MeshClient.listAuditEntries} and {@link MeshClient.listAuditEntriesPage} list: every field
 * set must match (strings exactly); unset fields match all.
 */
export interface AuditFilter {
  /** Only entries on this resource, e.g. "namespaces/n/states/k". */
  resource?: string;
  /** Only entries by this actor, e.g. "client/anonymous". */
  actor?: string;
  /** Only entries of this action, e.g. "state.put". */
  action?: string;
  /** Only entries with this correlation id. */
  correlationId?: string;
  /** Only entries recorded at or after this time. */
  since?: Date;
  /** Only entries recorded before this time. */
  until?: Date;
}

/** Which page a `list…Page` call returns. */
export interface PageOptions {
  /** At most this many items (the control plane's default when unset: 50; at most 1000). */
  pageSize?: number;
  /** The `nextPageToken` of the previous page (with the same filters); unset for the first page. */
  pageToken?: string;
}

/** Options of {@link MeshClient.wait} and {@link MeshClient.result}. */
export interface WaitOptions {
  /** Give up (reject with {@link TimeoutError}) after this long; the task goes on. */
  timeoutMs?: number;
  /** Give up when this signal aborts. */
  signal?: AbortSignal;
}

/** Options of {@link MeshClient.watch}. */
export interface WatchOptions {
  /** Resume after this sequence number (0: the whole history). */
  afterSequence?: number;
  /** Stop watching when this signal aborts: the iteration then throws the signal's reason. */
  signal?: AbortSignal;
}

/** Options of the client. */
export interface MeshClientOptions extends ConnectionOptions {
  /** Timeout of each unary call (default 30 000 ms). */
  timeoutMs?: number;
  /**
   * How many connections calls take in turn (1 to 64; default 1). The control plane accepts one connection's
   * calls one at a time, so a client making many calls at once goes faster over several.
   */
  connections?: number;
}

const WATCH_RETRY_MS = 500;

/** The largest page the control plane serves; the calls that follow pages ask for it. */
const MAX_PAGE_SIZE = 1000;

/** Every item of every page, fetching each page (from `""`, then each `nextPageToken`) as the iteration needs it. */
async function* followPages<T>(page: (pageToken: string) => Promise<Page<T>>): AsyncGenerator<T, void, undefined> {
  let pageToken = "";
  do {
    const current = await page(pageToken);
    yield* current.items;
    pageToken = current.nextPageToken;
  } while (pageToken !== "");
}

/** Every item of every page, in one array (see {@link followPages}). */
async function allPages<T>(page: (pageToken: string) => Promise<Page<T>>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of followPages(page)) {
    items.push(item);
  }
  return items;
}

function ms(value: number | undefined): Duration | undefined {
  return value === undefined ? undefined : durationFromMs(value);
}

/** A time filter as sent (undefined: no bound); anything but a valid Date throws a RangeError (untyped callers). */
function timeFilter(value: Date | undefined, name: string): Date | undefined {
  if (value !== undefined && !(value instanceof Date && Number.isFinite(value.getTime()))) {
    throw new RangeError(`${name} must be a valid Date, got ${String(value)}`);
  }
  return value;
}

/** Resolves the task if it SUCCEEDED; otherwise rejects with the matching {@link TaskFailedError}. */
export function raiseForOutcome(task: TaskInfo): TaskInfo {
  switch (task.state) {
    case "SUCCEEDED":
      return task;
    case "CANCELLED":
      throw new TaskCancelledError(task);
    case "TIMED_OUT":
      throw new TaskTimedOutError(task);
    case "DEAD_LETTER":
      throw new TaskDeadLetteredError(task);
    default:
      throw new TaskFailedError(task);
  }
}

/** The SubmitTask request for a capability, input and options. */
export function submitRequest(capability: string, input: unknown, options: SubmitOptions = {}): SubmitTaskRequest {
  return {
    target: {
      capability,
      agentName: options.agentName ?? "",
      labelSelector: { ...options.labelSelector },
      routingKey: options.routingKey ?? "",
      strategy:
        options.strategy === undefined ? SchedulingStrategy.SCHEDULING_STRATEGY_UNSPECIFIED : STRATEGIES[options.strategy],
    },
    input: encodePayload(input ?? null, options.contentType),
    priority: options.priority ?? 0,
    idempotencyKey: options.idempotencyKey ?? "",
    retryPolicy: {
      maxAttempts: options.maxAttempts ?? 0,
      initialBackoff: ms(options.initialBackoffMs),
      maxBackoff: ms(options.maxBackoffMs),
      backoffMultiplier: options.backoffMultiplier ?? 0,
      nonRetryableErrorCodes: [...(options.nonRetryableErrorCodes ?? [])],
    },
    timeouts: {
      scheduleToStart: ms(options.scheduleToStartMs),
      startToClose: ms(options.startToCloseMs),
      heartbeat: ms(options.heartbeatTimeoutMs),
      scheduleToClose: ms(options.scheduleToCloseMs),
    },
    correlationId: options.correlationId ?? "",
    metadata: { ...options.metadata },
  };
}

/** Throws a TypeError unless the control plane's answer to `call` carried `value` (`what`: "a task"). */
function assertAnswered<T>(value: T | undefined, call: string, what: string): asserts value is T {
  if (value === undefined) {
    throw new TypeError(`the control plane answered ${call} without ${what}`);
  }
}

/**
 * A client of the mesh: submit tasks (one by one or in batches) and wait for them, cancel and list them,
 * list agents and their instances, publish on, subscribe to and list channels, read and write state, and read the
 * audit trail. One gRPC connection, or `connections` of them taken in turn; `close()` it when done.
 *
 * ```ts
 * const client = new MeshClient("127.0.0.1:50051");
 * const task = await client.submit("greet", { name: "Ada" });
 * const done = await client.wait(task.id); // rejects with TaskFailedError unless it succeeded
 * console.log(done.output);
 * client.close();
 * ```
 */
export class MeshClient {
  readonly target: string;
  private readonly connection: Connection;
  private readonly timeoutMs: number;
  /**
   * What {@link close} runs after closing the channel: one entry per open subscription (it closes it), per live
   * {@link watch} (it cancels the stream, whose iteration then ends) and per {@link wait} pausing between two
   * watches (it wakes it). grpc-js does not end a live stream when its channel closes, so without these they
   * would hang.
   */
  private readonly closeHooks = new Set<() => void>();

  constructor(target?: string, options: MeshClientOptions = {}) {
    this.target = target || defaultTarget();
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.connection = new Connection(this.target, {
      token: options.token ?? defaultToken(),
      tls: options.tls,
      credentials: options.credentials,
      channelOptions: options.channelOptions,
      connections: options.connections,
      roundRobin: true, // replicas share the calls, as a Go or Python client's do
    });
  }

  private get tasks(): TaskServiceClient {
    return this.connection.client(TaskServiceClient);
  }

  private get agents(): AgentServiceClient {
    return this.connection.client(AgentServiceClient);
  }

  // ------------------------------------------------------------ tasks

  /** Submits a task for `capability` with `input` (any JSON value, or a Uint8Array). */
  async submit(capability: string, input?: unknown, options: SubmitOptions = {}): Promise<SubmitResult> {
    const stub = this.tasks;
    const response = await this.connection.unary(
      stub.submitTask.bind(stub),
      submitRequest(capability, input, options),
      this.timeoutMs,
    );
    assertAnswered(response.task, "SubmitTask", "a task");
    return { ...taskInfo(response.task), deduplicated: response.deduplicated };
  }

  /**
   * Submits up to 1000 tasks in one call, atomically: every task is created, or none is (one invalid
   * request rejects the whole batch with {@link InvalidArgumentError}, its violations naming
   * `requests[i]`). Resolves to the tasks in request order, like {@link submit}'s (each with
   * `deduplicated` when its idempotency key matched an existing task). An empty batch, or one of more
   * than 1000 tasks, is refused by the control plane.
   *
   * ```ts
   * const tasks = await client.submitMany([
   *   { capability: "greet", input: { name: "Ada" } },
   *   { capability: "greet", input: { name: "Alan" }, options: { priority: 10 } },
   * ]);
   * ```
   */
  async submitMany(submissions: readonly TaskSubmission[]): Promise<SubmitResult[]> {
    const stub = this.tasks;
    const response = await this.connection.unary(
      stub.batchSubmitTasks.bind(stub),
      { requests: submissions.map((s) => submitRequest(s.capability, s.input, s.options)) },
      this.timeoutMs,
    );
    if (response.tasks.length !== submissions.length) {
      const counts = `${response.tasks.length} tasks for ${submissions.length} requests`;
      throw new TypeError(`the control plane answered BatchSubmitTasks with ${counts}`);
    }
    return response.tasks.map((task, index) => ({
      ...taskInfo(task),
      deduplicated: response.deduplicated[index] ?? false,
    }));
  }

  /** The task with its attempts. */
  async get(taskId: string): Promise<TaskInfo> {
    const stub = this.tasks;
    const response = await this.connection.unary(stub.getTask.bind(stub), { taskId }, this.timeoutMs);
    assertAnswered(response.task, "GetTask", "a task");
    return taskInfo(response.task);
  }

  /**
   * Submits a new task with the spec of an ended one (a dead-lettered task, say); resolves to the new
   * task (its `resubmittedFrom` is `taskId`). A task not yet ended is refused (FAILED_PRECONDITION).
   */
  async resubmit(taskId: string): Promise<TaskInfo> {
    const stub = this.tasks;
    const response = await this.connection.unary(stub.resubmitTask.bind(stub), { taskId }, this.timeoutMs);
    assertAnswered(response.task, "ResubmitTask", "a task");
    return taskInfo(response.task);
  }

  /**
   * Cancels a task; resolves to it after cancellation. `reason` (at most 1000 characters) is recorded on the
   * task, and the handler running it sees it as `ctx.cancelMessage`.
   */
  async cancel(taskId: string, reason = ""): Promise<TaskInfo> {
    const stub = this.tasks;
    const response = await this.connection.unary(stub.cancelTask.bind(stub), { taskId, reason }, this.timeoutMs);
    assertAnswered(response.task, "CancelTask", "a task");
    return taskInfo(response.task);
  }

  /**
   * One page of the tasks matching `filter`, newest first (without their attempts). Pass the page's
   * `nextPageToken` back, with the same filter, for the next page; it is empty on the last one.
   * An unknown `state` throws a RangeError before any call.
   */
  async listTasksPage(filter: TaskFilter = {}, page: PageOptions = {}): Promise<Page<TaskInfo>> {
    const state = taskStateToProto(filter.state);
    const stub = this.tasks;
    const response = await this.connection.unary(
      stub.listTasks.bind(stub),
      {
        pageSize: page.pageSize ?? 0,
        pageToken: page.pageToken ?? "",
        state,
        capability: filter.capability ?? "",
        correlationId: filter.correlationId ?? "",
      },
      this.timeoutMs,
    );
    return { items: response.tasks.map(taskInfo), nextPageToken: response.nextPageToken };
  }

  /**
   * Every task matching `filter`, newest first (without their attempts), fetched a page at a time as the
   * iteration goes on (`pageSize` per call; the control plane's default when unset). Leaving the loop
   * early fetches no further page.
   *
   * ```ts
   * for await (const task of client.listTasks({ state: "DEAD_LETTER", capability: "greet" })) {
   *   console.log(task.id, task.error?.code);
   * }
   * ```
   */
  async *listTasks(
    filter: TaskFilter = {},
    options: { pageSize?: number } = {},
  ): AsyncGenerator<TaskInfo, void, undefined> {
    yield* followPages((pageToken) => this.listTasksPage(filter, { pageSize: options.pageSize, pageToken }));
  }

  /**
   * The task's events: the stored ones after `afterSequence`, then live ones, ending after the terminal one.
   * Leaving the loop cancels the stream. `options.signal` aborting makes the iteration throw the signal's
   * reason. The client's {@link close} ends the iteration (like a subscription's loop: without throwing, and
   * so without the terminal event); a watch started once the client is closed rejects with
   * {@link UnavailableError} at once. A failure of the stream throws the matching {@link RpcError}.
   */
  async *watch(taskId: string, options: WatchOptions = {}): AsyncGenerator<TaskEvent, void, undefined> {
    const signal = options.signal;
    signal?.throwIfAborted();
    this.connection.throwIfClosed();
    const call = this.tasks.watchTask(
      { taskId, afterSequence: options.afterSequence ?? 0 },
      this.connection.metadata(),
    );
    // Why the watch stopped before its stream ended, the first of the two (boxed: an `undefined` reason counts).
    let stopped: { aborted: unknown } | "closed" | undefined;
    const onAbort = (): void => {
      stopped ??= { aborted: signal?.reason };
      call.cancel();
    };
    const onClose = (): void => {
      stopped ??= "closed";
      call.cancel();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    this.closeHooks.add(onClose);
    try {
      try {
        for await (const response of call as AsyncIterable<{ event?: Parameters<typeof taskEvent>[0] }>) {
          if (stopped !== undefined) {
            break;
          }
          if (response.event !== undefined) {
            yield taskEvent(response.event);
          }
        }
      } catch (error) {
        if (stopped === undefined) {
          throw this.connection.error(error);
        }
      }
      if (stopped !== undefined && stopped !== "closed") {
        throw stopped.aborted;
      }
    } finally {
      this.closeHooks.delete(onClose);
      signal?.removeEventListener("abort", onAbort);
      call.cancel();
    }
  }

  /**
   * Waits until the task ends; resolves to its final record if it SUCCEEDED, else rejects with
   * {@link TaskFailedError} ({@link TaskCancelledError}, {@link TaskTimedOutError},
   * {@link TaskDeadLetteredError}). Rides out control plane restarts. Rejects with {@link TimeoutError} after
   * `options.timeoutMs`, with the signal's reason when `options.signal` aborts, and with
   * {@link UnavailableError} once the client is {@link close}d (at once if it already is).
   */
  async wait(taskId: string, options: WaitOptions = {}): Promise<TaskInfo> {
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.signal?.aborted) {
      onAbort();
    }
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(
            () => controller.abort(new TimeoutError(`task ${taskId} did not end within ${options.timeoutMs} ms`)),
            options.timeoutMs,
          );
    try {
      let after = 0;
      for (;;) {
        try {
          for await (const event of this.watch(taskId, { afterSequence: after, signal: controller.signal })) {
            after = event.sequence;
            if (isTerminal(event.state)) {
              return raiseForOutcome(await this.get(taskId));
            }
          }
          // The stream ended without a terminal event (or close() ended it: then get() rejects at once).
          const task = await this.get(taskId);
          if (isTerminal(task.state)) {
            return raiseForOutcome(task);
          }
        } catch (error) {
          if (!(error instanceof UnavailableError) || controller.signal.aborted || this.connection.isClosed) {
            throw error;
          }
        }
        await this.pause(WATCH_RETRY_MS, controller.signal);
        controller.signal.throwIfAborted(); // a client closed meanwhile: the next watch() rejects at once
      }
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Resolves after `ms`, or sooner when `signal` aborts or the client closes. */
  private pause(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", wake);
        this.closeHooks.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      signal.addEventListener("abort", wake, { once: true });
      this.closeHooks.add(wake);
    });
  }

  /** Waits for the task's output (decoded JSON, or bytes); rejects like {@link wait}. */
  async result<T = unknown>(taskId: string, options: WaitOptions = {}): Promise<T> {
    return (await this.wait(taskId, options)).output as T;
  }

  // ------------------------------------------------------------ channels

  /** Publishes a message (any JSON value, or a Uint8Array) on a channel. */
  async publish(
    channel: string,
    data: unknown,
    options: { headers?: Record<string, string>; contentType?: string } = {},
  ): Promise<ChannelMessage> {
    const stub = this.connection.client(ChannelServiceClient);
    const response = await this.connection.unary(
      stub.publish.bind(stub),
      { channel, payload: encodePayload(data, options.contentType), headers: { ...options.headers } },
      this.timeoutMs,
    );
    const message = response.message;
    assertAnswered(message, "Publish", "a message");
    return channelMessage(message, decodePayload(message.payload));
  }

  /**
   * Subscribes to a channel; resolves once the subscription is live (the control plane confirmed it), so
   * nothing published from then on is missed. The {@link Subscription} is an async iterable of the channel's
   * messages (payloads decoded: JSON as a value, other content types as a Uint8Array; `T` is not checked).
   * Leaving a `for await` loop over it, its `close()`, `options.signal` aborting, or the client's
   * {@link close} closes it.
   *
   * Rejects with the matching {@link RpcError} if the stream fails before the subscription is live (an invalid
   * channel name: {@link InvalidArgumentError}; no control plane: {@link UnavailableError}), or with the
   * signal's reason if it aborts first. There is no timeout of its own: pass `AbortSignal.timeout(ms)`.
   *
   * ```ts
   * const sub = await client.subscribe("news", { signal });
   * await client.publish("news", { headline: "hello" }); // received: the subscription was live
   * for await (const message of sub) {
   *   console.log(message.publisher, message.data); // "client/anonymous" { headline: "hello" }
   *   break; // closes the subscription
   * }
   * ```
   */
  async subscribe<T = unknown>(channel: string, options: SubscribeOptions = {}): Promise<Subscription<T>> {
    options.signal?.throwIfAborted();
    this.connection.throwIfClosed();
    const stub = this.connection.client(ChannelServiceClient);
    const call = stub.subscribe({ channel }, this.connection.metadata());
    const closeOnClientClose = (): void => subscription.close();
    const subscription = new ChannelSubscription<T>(this.connection, channel, call, {
      signal: options.signal,
      onClose: () => this.closeHooks.delete(closeOnClientClose),
    });
    this.closeHooks.add(closeOnClientClose);
    await subscription.started();
    return subscription;
  }

  /**
   * One page of the channels in use (published to or subscribed to within the channel retention), by name. Pass
   * the page's `nextPageToken` back for the next page; it is empty on the last one.
   */
  async listChannelsPage(page: PageOptions = {}): Promise<Page<ChannelInfo>> {
    const stub = this.connection.client(ChannelServiceClient);
    const response = await this.connection.unary(
      stub.listChannels.bind(stub),
      { pageSize: page.pageSize ?? 0, pageToken: page.pageToken ?? "" },
      this.timeoutMs,
    );
    return { items: response.channels.map(channelInfo), nextPageToken: response.nextPageToken };
  }

  /** Every channel in use, by name, following pages. */
  async listChannels(): Promise<ChannelInfo[]> {
    return allPages((pageToken) => this.listChannelsPage({ pageSize: MAX_PAGE_SIZE, pageToken }));
  }

  // ------------------------------------------------------------ state

  /** The state entries of `namespace` (an agent's handlers use the namespace named after the agent). */
  state(namespace: string): StateStore {
    return new StateStore(this.connection, namespace, this.timeoutMs);
  }

  // ------------------------------------------------------------ audit

  /**
   * One page of the audit trail, newest first: the entries matching every field of `filter`, recorded at or after
   * `since` and before `until`. Pass the page's `nextPageToken` back, with the same filter, for the next (older)
   * page; it is empty on the last one. A `since` or `until` that is not a valid Date throws a RangeError before
   * any call.
   */
  async listAuditEntriesPage(filter: AuditFilter = {}, page: PageOptions = {}): Promise<Page<AuditEntry>> {
    const startTime = timeFilter(filter.since, "since");
    const endTime = timeFilter(filter.until, "until");
    const stub = this.connection.client(AuditServiceClient);
    const response = await this.connection.unary(
      stub.listAuditEntries.bind(stub),
      {
        resource: filter.resource ?? "",
        actor: filter.actor ?? "",
        action: filter.action ?? "",
        correlationId: filter.correlationId ?? "",
        startTime,
        endTime,
        pageSize: page.pageSize ?? 0,
        pageToken: page.pageToken ?? "",
      },
      this.timeoutMs,
    );
    return { items: response.entries.map(auditEntry), nextPageToken: response.nextPageToken };
  }

  /**
   * Up to `limit` (default 50) audit entries matching `filter`, newest first, following pages as needed (each
   * asking for no more than are still wanted, at most 1000). A `limit` of 0 resolves to `[]` without a call; one
   * that is not a whole number >= 0 throws a RangeError.
   *
   * ```ts
   * const since = new Date(Date.now() - 3_600_000);
   * for (const entry of await client.listAuditEntries({ action: "state.delete", since }, { limit: 200 })) {
   *   console.log(entry.time, entry.actor, entry.resource);
   * }
   * ```
   */
  async listAuditEntries(filter: AuditFilter = {}, options: { limit?: number } = {}): Promise<AuditEntry[]> {
    const limit = options.limit ?? 50;
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new RangeError(`limit must be a whole number >= 0, got ${limit}`);
    }
    const entries: AuditEntry[] = [];
    let pageToken = "";
    while (entries.length < limit) {
      const page = await this.listAuditEntriesPage(filter, {
        pageSize: Math.min(MAX_PAGE_SIZE, limit - entries.length),
        pageToken,
      });
      entries.push(...page.items);
      pageToken = page.nextPageToken;
      if (pageToken === "") {
        break;
      }
    }
    return entries.slice(0, limit);
  }

  // ------------------------------------------------------------ agents

  /**
   * One page of the registered agents, by name; only those that registered `capability` when given.
   * Pass the page's `nextPageToken` back for the next page; it is empty on the last one.
   */
  async listAgentsPage(options: { capability?: string } & PageOptions = {}): Promise<Page<AgentInfo>> {
    const stub = this.agents;
    const response = await this.connection.unary(
      stub.listAgents.bind(stub),
      { capability: options.capability ?? "", pageSize: options.pageSize ?? 0, pageToken: options.pageToken ?? "" },
      this.timeoutMs,
    );
    return { items: response.agents.map(agentInfo), nextPageToken: response.nextPageToken };
  }

  /**
   * Every registered agent, by name (online or not), following pages; only those that registered
   * `capability` when given.
   */
  async listAgents(options: { capability?: string } = {}): Promise<AgentInfo[]> {
    return allPages((pageToken) =>
      this.listAgentsPage({ capability: options.capability, pageSize: MAX_PAGE_SIZE, pageToken }),
    );
  }

  /** The agent named `name`; rejects with {@link NotFoundError} if none registered. */
  async getAgent(name: string): Promise<AgentInfo> {
    const stub = this.agents;
    const response = await this.connection.unary(stub.getAgent.bind(stub), { agentName: name }, this.timeoutMs);
    assertAnswered(response.agent, "GetAgent", "an agent");
    return agentInfo(response.agent);
  }

  /**
   * One page of the instances of agent `agentName` (`"-"`, the default: of every agent). Only the connected
   * ones (CONNECTED or DRAINING) unless `includeDisconnected`. Pass the page's `nextPageToken` back, with the
   * same agent and `includeDisconnected`, for the next page; it is empty on the last one.
   */
  async listInstancesPage(
    agentName = "-",
    options: { includeDisconnected?: boolean } & PageOptions = {},
  ): Promise<Page<InstanceInfo>> {
    const stub = this.agents;
    const response = await this.connection.unary(
      stub.listAgentInstances.bind(stub),
      {
        agentName,
        includeDisconnected: options.includeDisconnected ?? false,
        pageSize: options.pageSize ?? 0,
        pageToken: options.pageToken ?? "",
      },
      this.timeoutMs,
    );
    return { items: response.instances.map(instanceInfo), nextPageToken: response.nextPageToken };
  }

  /**
   * The instances of agent `agentName` (`"-"`, the default: of every agent), following pages. Only the
   * connected ones (CONNECTED or DRAINING) unless `includeDisconnected`.
   */
  async listInstances(agentName = "-", options: { includeDisconnected?: boolean } = {}): Promise<InstanceInfo[]> {
    return allPages((pageToken) =>
      this.listInstancesPage(agentName, {
        includeDisconnected: options.includeDisconnected,
        pageSize: MAX_PAGE_SIZE,
        pageToken,
      }),
    );
  }

  /**
   * Asks a connected agent instance to finish its in-flight work, take no more, and reconnect (a rolling
   * restart); resolves to the instance, now DRAINING. `timeoutMs` bounds how long it may take to finish (the
   * control plane's default when unset); `reason` is sent to the agent. An instance not connected is refused
   * with {@link FailedPreconditionError}, an unknown one with {@link NotFoundError}.
   */
  async drainInstance(
    agentName: string,
    instanceId: string,
    options: { timeoutMs?: number; reason?: string } = {},
  ): Promise<InstanceInfo> {
    const stub = this.agents;
    const response = await this.connection.unary(
      stub.drainAgentInstance.bind(stub),
      { agentName, instanceId, timeout: ms(options.timeoutMs), reason: options.reason ?? "" },
      this.timeoutMs,
    );
    assertAnswered(response.instance, "DrainAgentInstance", "an instance");
    return instanceInfo(response.instance);
  }

  /**
   * Closes the client's channel (idempotent), its open subscriptions (their loops end; a `subscribe` not yet
   * live rejects with {@link UnavailableError}) and its live watches (their loops end, without throwing; a
   * {@link wait} rejects with {@link UnavailableError}). Any call, watch or subscribe made afterwards rejects
   * with {@link UnavailableError} ("the client is closed").
   */
  close(): void {
    this.connection.close(); // first: what the hooks wake finds the client closed
    const hooks = [...this.closeHooks];
    this.closeHooks.clear();
    for (const hook of hooks) {
      hook();
    }
  }
}
