/**
 * The running agent: what survives reconnects (running attempts, unacknowledged results), and the
 * reconnect loop.
 *
 * Protocol duties (docs/agent-link.md): answer every assignment with exactly one result; keep
 * results until the plane acknowledges them and resend them after a reconnect; list held attempts
 * when registering; signal cancellations to handlers; finish work before leaving on `drain` or
 * SIGTERM. Leaving with work unfinished (the drain timeout passed, or a hard stop), report each
 * attempt as failed with the retryable `agent_stopped`, and wait (bounded) for those results'
 * acknowledgements: the plane re-queues the task at once rather than when the lease runs out.
 */

import { hostname } from "node:os";

import { Backoff } from "./backoff";
import { ChannelInbox } from "./inbox";
import { Connection, type ConnectionOptions } from "./connection";
import { cancelContext, ChannelContext, type ContextPort, type PublishOptions, TaskContext } from "./context";
import { NotSerializableError, TaskError } from "./errors";
import { checkJsonDepth, checkPayloadSize, checkPublish, OUTPUT_TOO_LARGE, tooLarge } from "./limits";
import { LinkSession, type LinkHandler, type SessionEnd } from "./link";
import type { Logger } from "./log";
import { Outbox, parseRefKey, type RefKey, refKey } from "./outbox";
import { decodePayload, encodePayload, payloadSize } from "./payload";
import type {
  Assignment,
  Capability,
  ChannelMessageProto,
  ConnectRequest,
  ConnectResponse,
  Drain,
  Registered,
  TaskResult,
  TaskUpdateKind,
} from "./proto";
import { StateStore } from "./state";
import { SDK_LANGUAGE, SDK_VERSION } from "./version";

/** Where an agent is in its life. */
export type AgentStatus = "new" | "connecting" | "connected" | "draining" | "stopped";

/** A task handler as registered (see `Agent.task`). */
export interface TaskRegistration {
  readonly capability: string;
  readonly description: string;
  readonly inputSchema: Record<string, unknown> | undefined;
  readonly outputSchema: Record<string, unknown> | undefined;
  readonly validate: ((input: unknown) => unknown) | undefined;
  readonly handler: (ctx: TaskContext, input: unknown) => unknown;
}

/** A channel handler as registered (see `Agent.onChannel`). */
export interface ChannelRegistration {
  readonly channel: string;
  readonly handler: (ctx: ChannelContext, data: unknown) => unknown;
}

/** Everything a runtime needs: identity, limits and handlers. */
export interface RuntimeSpec {
  readonly name: string;
  readonly version: string;
  readonly instanceId: string;
  readonly description: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly maxConcurrency: number;
  readonly weight: number;
  readonly tasks: ReadonlyMap<string, TaskRegistration>;
  /** Live: channels added or removed while running are (un)subscribed. */
  readonly channels: ReadonlyMap<string, ChannelRegistration>;
  readonly backoffInitialMs: number;
  readonly backoffMaxMs: number;
  readonly drainTimeoutMs: number;
  readonly stateTimeoutMs: number;
  readonly logger: Logger;
}

// A session that stayed up this long resets the reconnect backoff.
const STABLE_SESSION_MS = 5_000;
// Leaving: how long handlers may take to notice their cancellation, and a half-closed stream to end.
const STOP_GRACE_MS = 5_000;
// How long leaving waits for the plane to acknowledge the results of the attempts it gave up (`agent_stopped`).
const GIVE_UP_ACK_MS = 2_000;
const MAX_TIMER_MS = 2 ** 31 - 1;
const STACK_LIMIT = 4_000;

interface Attempt {
  readonly ctx: TaskContext;
  readonly registration: TaskRegistration;
  timer: NodeJS.Timeout | undefined;
  /** No longer ours (not_held, or the agent stopped): its result is dropped. */
  discard: boolean;
  done: Promise<void> | undefined;
}

/** A promise with its resolve function outside. */
class Signal {
  private resolveFn!: () => void;
  fired = false;
  readonly promise = new Promise<void>((resolve) => {
    this.resolveFn = resolve;
  });

  fire(): void {
    this.fired = true;
    this.resolveFn();
  }
}

function sleep(ms: number): { promise: Promise<void>; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, Math.max(0, Math.min(ms, MAX_TIMER_MS)));
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/** Resolves true when `promise` settles within `ms`, false otherwise. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const timeout = sleep(ms);
  try {
    return await Promise.race([promise.then(() => true), timeout.promise.then(() => false)]);
  } finally {
    timeout.cancel();
  }
}

/** The input failed decoding or the handler's `validate` (reported as `validation_failed`). */
class InputInvalid extends Error {}

/** An error's code: its `name`, or its class name when the name was left at "Error". */
export function errorCode(error: Error): string {
  if (error.name && error.name !== "Error") {
    return error.name;
  }
  const constructorName = (error.constructor as { name?: unknown } | undefined)?.name;
  return typeof constructorName === "string" && constructorName ? constructorName : "Error";
}

/** Plain JSON for a Struct field (drops what JSON cannot carry). */
function jsonObject(value: Record<string, unknown>): Record<string, unknown> {
  try {
    const plain = JSON.parse(JSON.stringify(value) ?? "{}") as unknown;
    return plain !== null && typeof plain === "object" && !Array.isArray(plain) ? (plain as Record<string, unknown>) : {};
  } catch {
    return { details: String(value) };
  }
}

function errorResult(
  taskId: string,
  attempt: number,
  code: string,
  message: string,
  retryable: boolean,
  details?: Record<string, unknown>,
): TaskResult {
  return {
    taskId,
    attempt,
    outcome: {
      $case: "error",
      error: { code, message, retryable, details: details === undefined ? undefined : jsonObject(details) },
    },
  };
}

/** The result for a handler that threw `error`. */
export function failureResult(taskId: string, attempt: number, error: unknown): TaskResult {
  if (error instanceof TaskError) {
    return errorResult(taskId, attempt, error.code, error.message, error.retryable, error.details);
  }
  if (error instanceof InputInvalid) {
    return errorResult(taskId, attempt, "validation_failed", error.message, false);
  }
  if (error instanceof NotSerializableError) {
    return errorResult(taskId, attempt, "output_not_serializable", error.message, false);
  }
  if (error instanceof Error) {
    const stack = (error.stack ?? "").slice(-STACK_LIMIT);
    return errorResult(taskId, attempt, errorCode(error), error.message || errorCode(error), true, { stack });
  }
  return errorResult(taskId, attempt, "Error", String(error), true);
}

function cancelledResult(taskId: string, attempt: number, reason: string): TaskResult {
  if (reason === "deadline_exceeded") {
    return errorResult(taskId, attempt, "deadline_exceeded", "the attempt's deadline passed", true);
  }
  return errorResult(taskId, attempt, "cancelled", `cancelled by the control plane (${reason})`, false);
}

function stoppedResult(taskId: string, attempt: number, instanceId: string): TaskResult {
  const message = `agent instance '${instanceId}' stopped before the task finished`;
  return errorResult(taskId, attempt, "agent_stopped", message, true);
}

function drainingFrame(): ConnectRequest {
  return { frame: { $case: "draining", draining: { reason: "agent shutting down" } } };
}

function describe(error: Error): string {
  return `${error.name}: ${error.message}`;
}

/** One `run()` of an agent: connects, reconnects, runs handlers, and leaves cleanly. */
export class AgentRuntime implements LinkHandler, ContextPort {
  readonly outbox = new Outbox();
  readonly connection: Connection;
  readonly state: StateStore;
  readonly logger: Logger;
  readonly agentName: string;
  readonly instanceId: string;
  status: AgentStatus = "new";
  sessionId = "";

  private readonly spec: RuntimeSpec;
  private readonly running = new Map<RefKey, Attempt>();
  private readonly abandoned = new Map<RefKey, Attempt>(); // given up (`agent_stopped` sent); the handler may still run
  private givingUp = false; // leaving: attempts are answered with `agent_stopped`, none is started
  private readonly backlog = new Map<RefKey, Assignment>(); // assigned beyond max_concurrency (rare)
  private readonly unacked = new Map<RefKey, TaskResult>();
  private readonly inboxes = new Map<string, ChannelInbox>(); // per channel: handler calls running, messages waiting
  /** [handler calls at once, messages waiting, bytes waiting] per channel (see inbox.ts; tests lower them). */
  channelLimits: [number?, number?, number?] = [];
  private heldAtRegister = new Set<RefKey>();
  /**
   * What the plane takes at most in a payload, as its last `registered` said (0: not known yet, not checked): a
   * publish or an output over it is refused before it is sent (see limits.ts).
   */
  private maxPayloadBytes = 0;
  private session: LinkSession | undefined;
  private planeDrainSession: LinkSession | undefined;
  private readonly wakeup = new Signal(); // leave the reconnect loop (stopped, or own drain done)
  private readonly finished = new Signal();
  private hardStop = false;
  private drainDeadline: number | undefined;
  private idleWaiters: Array<() => void> = [];
  private connectedWaiters: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];
  private cpuMark = { usage: process.cpuUsage(), time: process.hrtime.bigint() };

  constructor(spec: RuntimeSpec, target: string, options: ConnectionOptions) {
    this.spec = spec;
    this.agentName = spec.name;
    this.instanceId = spec.instanceId;
    this.logger = spec.logger;
    this.connection = new Connection(target, { ...options, keepalive: true, roundRobin: true, logger: spec.logger });
    this.state = new StateStore(this.connection, spec.name, spec.stateTimeoutMs);
  }

  get target(): string {
    return this.connection.target;
  }

  get inFlight(): number {
    return this.running.size;
  }

  get isFinished(): boolean {
    return this.finished.fired;
  }

  // ------------------------------------------------------------ the reconnect loop

  /** Serves until the agent drains or stops; rejects when the plane refuses it for good. */
  async run(): Promise<void> {
    const backoff = new Backoff(this.spec.backoffInitialMs, this.spec.backoffMaxMs);
    let fatal: Error | undefined;
    let reopened = false; // the connection was replaced after the last attempt, which failed before `registered`
    try {
      while (!this.wakeup.fired) {
        this.status = this.drainDeadline !== undefined ? "draining" : "connecting";
        const session = new LinkSession(this, this.connection);
        this.session = session;
        const started = Date.now();
        const end = await this.runSession(session);
        this.disconnected();
        if (this.wakeup.fired) {
          break;
        }
        if (end.fatal) {
          fatal = end.fatal;
          break;
        }
        if (end.registered && (end.error === undefined || Date.now() - started > STABLE_SESSION_MS)) {
          backoff.reset(); // a clean end (drained, replaced, plane restarting) or a long session: come back soon
        }
        reopened = end.registered ? false : this.reconnectAfterFailedRegistration(reopened);
        const delay = backoff.next();
        if (end.error === undefined) {
          this.logger.info(`agent ${this.agentName}: link to ${this.target} closed; reconnecting in ${Math.round(delay)} ms`);
        } else {
          // A refused TLS handshake shows little of its cause: say what to check.
          const hint = end.registered ? undefined : this.connection.tlsHint(end.error);
          this.logger.warn(
            `agent ${this.agentName}: link to ${this.target} lost (${describe(end.error)}); ` +
              `reconnecting in ${Math.round(delay)} ms${hint === undefined ? "" : ` (${hint})`}`,
          );
        }
        const pause = sleep(delay);
        await Promise.race([pause.promise, this.wakeup.promise]);
        pause.cancel();
      }
    } finally {
      await this.shutdown(fatal);
    }
    if (fatal !== undefined) {
      throw fatal;
    }
  }

  /**
   * After a session that failed before `registered` (say a replica without its database, which cannot store the
   * registration), the next attempt goes over a new connection: the next stream on the same HTTP/2 connection would
   * reach the same replica, whereas a new one may reach another (behind a load balancer). When it was already a new
   * one that failed, the next attempt keeps it: a new connection to a list of addresses may land on the failing one
   * again, and on the same connection round_robin sends the next stream to the next address. True when the
   * connection was replaced.
   */
  private reconnectAfterFailedRegistration(reopened: boolean): boolean {
    if (reopened) {
      return false;
    }
    this.logger.debug(`agent ${this.agentName}: the next attempt goes over a new connection`);
    this.connection.reconnect();
    return true;
  }

  private async runSession(session: LinkSession): Promise<SessionEnd> {
    const ended = session.run();
    const woken = await Promise.race([ended.then(() => false), this.wakeup.promise.then(() => true)]);
    if (woken && !session.isEnded && session.registered !== undefined) {
      if (this.hardStop) {
        // Stopping at once: only the results already on their way get a moment to be acknowledged.
        await within(Promise.race([this.whenIdle(), ended]), GIVE_UP_ACK_MS);
      } else if (this.drainDeadline !== undefined) {
        await within(ended, STOP_GRACE_MS); // drained: the stream is half-closing; let the plane end it
      }
    }
    if (woken && !session.isEnded) {
      session.abort();
    }
    return ended;
  }

  private disconnected(): void {
    this.session = undefined;
    this.planeDrainSession = undefined;
    this.sessionId = "";
    this.status = this.drainDeadline !== undefined ? "draining" : "connecting";
  }

  private async shutdown(fatal: Error | undefined): Promise<void> {
    this.status = "stopped";
    const pending: Promise<void>[] = [];
    for (const attempt of this.running.values()) {
      attempt.discard = true;
      clearTimeout(attempt.timer); // a pending deadline must not keep the process alive
      attempt.ctx[cancelContext]("agent_stopped");
      if (attempt.done) {
        pending.push(attempt.done);
      }
    }
    for (const attempt of this.abandoned.values()) {
      if (attempt.done) {
        pending.push(attempt.done);
      }
    }
    this.backlog.clear();
    if (pending.length > 0) {
      await within(Promise.allSettled(pending), STOP_GRACE_MS);
    }
    this.connection.close();
    this.outbox.clear();
    for (const waiter of this.connectedWaiters.splice(0)) {
      waiter.reject(fatal ?? new Error(`agent ${this.agentName} stopped before it connected`));
    }
    this.finished.fire();
    this.logger.info(`agent ${this.agentName} (${this.instanceId}) stopped`);
  }

  // ------------------------------------------------------------ leaving

  /** Stop taking work, finish in-flight tasks (at most `timeoutMs`), deliver their results, leave. */
  async drain(timeoutMs: number = this.spec.drainTimeoutMs): Promise<void> {
    if (this.finished.fired) {
      return;
    }
    if (this.drainDeadline === undefined) {
      this.drainDeadline = Date.now() + timeoutMs;
      this.status = "draining";
      this.logger.info(
        `agent ${this.agentName} draining: finishing ${this.running.size} task(s), up to ${Math.round(timeoutMs)} ms`,
      );
      if (this.session?.registered !== undefined) {
        this.outbox.pushControl(drainingFrame());
      }
      void this.finishDrain(this.drainDeadline);
    }
    await this.finished.promise;
  }

  private async finishDrain(deadline: number): Promise<void> {
    const idle = await within(this.whenIdle(), deadline - Date.now());
    if (!idle) {
      this.logger.warn(
        `agent ${this.agentName}: drain timeout passed with ${this.running.size} task(s) running, ` +
          `${this.unacked.size} result(s) unacknowledged`,
      );
      this.giveUp();
      if (this.session?.registered !== undefined && !this.session.isEnded) {
        await within(this.whenIdle(), GIVE_UP_ACK_MS); // the results go out now: leave once acknowledged (bounded)
      }
    }
    const session = this.session;
    if (session?.registered !== undefined && !session.isEnded) {
      session.closeWhenFlushed();
    }
    this.wakeup.fire();
  }

  /**
   * Leaving with work unfinished: stop its handlers and answer each attempt with the retryable
   * `agent_stopped`, so that the plane re-queues the task now (per its retry policy) rather than when
   * the lease runs out. Results of given-up handlers that still finish are dropped.
   */
  private giveUp(): void {
    this.givingUp = true;
    const givenUp = [...this.running.keys(), ...this.backlog.keys()];
    for (const [key, attempt] of this.running) {
      this.abandoned.set(key, attempt);
      clearTimeout(attempt.timer);
      attempt.ctx[cancelContext]("agent_stopped");
    }
    this.running.clear();
    this.backlog.clear();
    for (const key of givenUp) {
      const { taskId, attempt } = parseRefKey(key);
      const result = stoppedResult(taskId, attempt, this.instanceId);
      this.unacked.set(key, result);
      this.outbox.pushResult(result);
    }
    if (givenUp.length > 0) {
      this.logger.warn(
        `agent ${this.agentName}: gave up ${givenUp.length} unfinished task(s), ` +
          "reported as failed (agent_stopped) for the plane to re-queue",
      );
    }
    this.updateIdle();
  }

  /**
   * Leave now: running handlers are cancelled and their results dropped. When connected, each
   * attempt is first reported as failed (`agent_stopped`, retryable) so that the plane re-runs it at
   * once; leaving waits at most GIVE_UP_ACK_MS for the acknowledgements.
   */
  async terminate(): Promise<void> {
    this.hardStop = true;
    const session = this.session;
    const reporting = session?.registered !== undefined && !session.isEnded && !session.isClosing;
    if (reporting) {
      if (this.drainDeadline === undefined) {
        this.outbox.pushControl(drainingFrame()); // no new work while the results go out
      }
      this.giveUp();
    }
    this.wakeup.fire();
    if (!reporting) {
      session?.abort();
    }
    await this.finished.promise;
  }

  /** Resolves once registered (now, if connected); rejects if the agent stops first. */
  waitConnected(): Promise<void> {
    if (this.status === "connected" || (this.status === "draining" && this.sessionId)) {
      return Promise.resolve();
    }
    if (this.finished.fired) {
      return Promise.reject(new Error(`agent ${this.agentName} has stopped`));
    }
    return new Promise((resolve, reject) => this.connectedWaiters.push({ resolve, reject }));
  }

  whenIdle(): Promise<void> {
    if (this.isIdle()) {
      return Promise.resolve();
    }
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private isIdle(): boolean {
    return this.running.size === 0 && this.backlog.size === 0 && this.unacked.size === 0;
  }

  private updateIdle(): void {
    if (this.isIdle()) {
      for (const resolve of this.idleWaiters.splice(0)) {
        resolve();
      }
    }
  }

  // ------------------------------------------------------------ frames out (LinkHandler)

  registerFrame(): ConnectRequest {
    const held = new Set<RefKey>([...this.running.keys(), ...this.backlog.keys(), ...this.unacked.keys()]);
    this.heldAtRegister = held;
    const spec = this.spec;
    return {
      frame: {
        $case: "register",
        register: {
          agentName: spec.name,
          agentVersion: spec.version,
          instanceId: spec.instanceId,
          description: spec.description,
          capabilities: [...spec.tasks.values()].map(capability),
          labels: { ...spec.labels },
          maxConcurrency: spec.maxConcurrency,
          sdk: { language: SDK_LANGUAGE, version: SDK_VERSION },
          heldTasks: [...held].map(parseRefKey),
          weight: spec.weight,
          node: hostname(),
          pid: process.pid,
          subscriptions: [...spec.channels.keys()],
        },
      },
    };
  }

  heartbeatFrame(): ConnectRequest {
    const inFlight = this.running.size;
    const now = process.hrtime.bigint();
    const usage = process.cpuUsage(this.cpuMark.usage);
    const elapsedMicros = Number(now - this.cpuMark.time) / 1_000;
    this.cpuMark = { usage: process.cpuUsage(), time: now };
    const cpuPercent = elapsedMicros > 0 ? ((usage.user + usage.system) / elapsedMicros) * 100 : 0;
    return {
      frame: {
        $case: "heartbeat",
        heartbeat: {
          inFlight,
          load: Math.min(1, inFlight / this.spec.maxConcurrency),
          cpuPercent,
          memoryBytes: process.memoryUsage.rss(),
        },
      },
    };
  }

  // ------------------------------------------------------------ frames in (LinkHandler)

  onRegistered(session: LinkSession, registered: Registered): void {
    this.outbox.clearTaskMessages();
    this.maxPayloadBytes = registered.maxPayloadBytes;
    const kept = new Set(registered.keptTasks.map((ref) => refKey(ref.taskId, ref.attempt)));
    for (const key of this.heldAtRegister) {
      if (!kept.has(key)) {
        this.forget(key);
      }
    }
    let resent = 0;
    for (const key of kept) {
      const result = this.unacked.get(key);
      if (result !== undefined) {
        this.outbox.pushResult(result);
        resent += 1;
      }
    }
    if (this.drainDeadline !== undefined) {
      this.outbox.pushControl(drainingFrame());
    }
    this.session = session;
    this.sessionId = registered.sessionId;
    this.status = this.drainDeadline !== undefined ? "draining" : "connected";
    this.logger.info(
      `agent ${this.agentName} (${this.instanceId}) connected to ${this.target}: session ${registered.sessionId}, ` +
        `${kept.size} task(s) kept, ${resent} result(s) to resend`,
    );
    for (const waiter of this.connectedWaiters.splice(0)) {
      waiter.resolve();
    }
  }

  onFrame(session: LinkSession, response: ConnectResponse): void {
    const frame = response.frame;
    switch (frame?.$case) {
      case "assignments":
        this.assign(frame.assignments.assignments);
        break;
      case "resultAcks":
        for (const ref of frame.resultAcks.tasks) {
          this.unacked.delete(refKey(ref.taskId, ref.attempt));
        }
        this.updateIdle();
        break;
      case "cancellations":
        for (const cancellation of frame.cancellations.cancellations) {
          const key = refKey(cancellation.taskId, cancellation.attempt);
          this.cancel(key, cancellation.reason || "cancelled", cancellation.message);
        }
        break;
      case "channelMessage":
        this.deliver(frame.channelMessage);
        break;
      case "drain":
        this.planeDrained(session, frame.drain);
        break;
      case "error": {
        const { message, field, fatal } = frame.error;
        const log = fatal ? this.logger.error : this.logger.warn;
        log.call(this.logger, `agent ${this.agentName}: control plane reports: ${message} (field ${field || "-"})`);
        break;
      }
      default:
        this.logger.debug(`agent ${this.agentName}: ignoring a \`${frame?.$case ?? "empty"}\` frame`);
    }
  }

  // ------------------------------------------------------------ assignments and results

  private assign(assignments: readonly Assignment[]): void {
    for (const assignment of assignments) {
      const key = refKey(assignment.taskId, assignment.attempt);
      if (this.running.has(key) || this.unacked.has(key) || this.backlog.has(key)) {
        continue; // a duplicate delivery: that attempt has its one result already coming
      }
      const registration = this.spec.tasks.get(assignment.capability);
      if (registration === undefined) {
        const message = `agent ${this.agentName} has no handler for '${assignment.capability}'`;
        this.finish(key, errorResult(assignment.taskId, assignment.attempt, "unknown_capability", message, false));
      } else if (this.givingUp) {
        // Sent before the plane saw `draining`: not started, handed back at once.
        this.finish(key, stoppedResult(assignment.taskId, assignment.attempt, this.instanceId));
      } else if (this.running.size >= this.spec.maxConcurrency) {
        this.backlog.set(key, assignment);
      } else {
        this.start(key, assignment, registration);
      }
    }
    this.updateIdle();
  }

  private start(key: RefKey, assignment: Assignment, registration: TaskRegistration): void {
    const ctx = new TaskContext(this, assignment);
    const attempt: Attempt = { ctx, registration, timer: undefined, discard: false, done: undefined };
    this.running.set(key, attempt);
    this.outbox.pushStarted(assignment.taskId, assignment.attempt);
    if (assignment.deadline !== undefined) {
      const delay = assignment.deadline.getTime() - Date.now();
      if (delay <= MAX_TIMER_MS) {
        attempt.timer = setTimeout(() => this.cancel(key, "deadline_exceeded"), Math.max(0, delay));
      }
    }
    attempt.done = this.execute(key, attempt, assignment);
  }

  private async execute(key: RefKey, attempt: Attempt, assignment: Assignment): Promise<void> {
    const { ctx, registration } = attempt;
    const { taskId } = assignment;
    const number = assignment.attempt;
    let result: TaskResult;
    try {
      let input: unknown;
      try {
        input = decodePayload(assignment.input);
        if (registration.validate !== undefined) {
          input = registration.validate(input);
        }
      } catch (error) {
        throw new InputInvalid(error instanceof Error ? error.message : String(error));
      }
      result = this.outputResult(ctx, taskId, number, await registration.handler(ctx, input));
    } catch (error) {
      result = failureResult(taskId, number, error);
      if (!ctx.cancelled) {
        const outcome = result.outcome;
        const code = outcome?.$case === "error" ? outcome.error.code : "?";
        ctx.log.warn(`task failed: ${code}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    if (ctx.cancelReason !== undefined) {
      result = cancelledResult(taskId, number, ctx.cancelReason);
    }
    this.finish(key, result);
  }

  /**
   * The result for what a handler returned. An output over the plane's max_payload_bytes fails the attempt here, not
   * retryable (another attempt would return as much): sent, the plane would refuse it, or one over its gRPC message
   * limit would break the stream on every resend. Throws NotSerializableError.
   */
  private outputResult(ctx: TaskContext, taskId: string, attempt: number, value: unknown): TaskResult {
    const output = encodePayload(value);
    const problem = tooLarge("output", payloadSize(output), this.maxPayloadBytes);
    if (problem !== undefined) {
      ctx.log.warn(`output rejected: ${problem}`);
      return errorResult(taskId, attempt, OUTPUT_TOO_LARGE, problem, false);
    }
    return { taskId, attempt, outcome: { $case: "output", output } };
  }

  private finish(key: RefKey, result: TaskResult): void {
    if (this.abandoned.delete(key)) {
      return; // given up: its `agent_stopped` result went out instead
    }
    const attempt = this.running.get(key);
    if (attempt !== undefined) {
      this.running.delete(key);
      clearTimeout(attempt.timer);
      if (attempt.discard) {
        this.refill();
        this.updateIdle();
        return;
      }
    }
    this.unacked.set(key, result);
    this.outbox.pushResult(result);
    this.refill();
    this.updateIdle();
  }

  private refill(): void {
    for (const [key, assignment] of this.backlog) {
      if (this.running.size >= this.spec.maxConcurrency) {
        return;
      }
      this.backlog.delete(key);
      const registration = this.spec.tasks.get(assignment.capability);
      if (registration !== undefined) {
        this.start(key, assignment, registration);
      }
    }
  }

  // ------------------------------------------------------------ cancellation

  private cancel(key: RefKey, reason: string, message = ""): void {
    if (reason === "not_held") {
      this.forget(key);
      return;
    }
    const attempt = this.running.get(key);
    if (attempt !== undefined) {
      if (!attempt.ctx.cancelled) {
        attempt.ctx.log.info(message ? `cancelling: ${reason}: ${message}` : `cancelling: ${reason}`);
        attempt.ctx[cancelContext](reason, message);
      }
      return;
    }
    const queued = this.backlog.get(key);
    if (queued !== undefined) {
      this.backlog.delete(key);
      this.finish(key, cancelledResult(queued.taskId, queued.attempt, reason));
    }
  }

  /** The plane no longer considers this attempt ours: stop it and drop its result. */
  private forget(key: RefKey): void {
    const attempt = this.running.get(key);
    if (attempt !== undefined) {
      attempt.discard = true;
      attempt.ctx[cancelContext]("not_held");
    }
    this.backlog.delete(key);
    this.unacked.delete(key);
    this.outbox.discardResult(key);
    this.updateIdle();
  }

  // ------------------------------------------------------------ drain from the plane

  private planeDrained(session: LinkSession, drain: Drain): void {
    if (this.planeDrainSession === session) {
      return;
    }
    this.planeDrainSession = session;
    this.logger.info(
      `agent ${this.agentName}: control plane asks to drain (${drain.reason || "no reason given"}); ` +
        `finishing ${this.running.size} task(s), then reconnecting`,
    );
    void this.whenIdle().then(() => {
      if (this.session === session && !session.isEnded) {
        session.closeWhenFlushed();
      }
    });
  }

  // ------------------------------------------------------------ channels

  /** Subscribe the live session to a channel (new handlers while running). */
  subscribe(channel: string): void {
    if (this.session?.registered !== undefined) {
      this.outbox.pushControl({ frame: { $case: "subscribe", subscribe: { channel } } });
    }
  }

  unsubscribe(channel: string): void {
    if (this.session?.registered !== undefined) {
      this.outbox.pushControl({ frame: { $case: "unsubscribe", unsubscribe: { channel } } });
    }
  }

  private deliver(message: ChannelMessageProto): void {
    const registration = this.spec.channels.get(message.channel);
    if (registration === undefined) {
      this.logger.debug(`agent ${this.agentName}: message on ${message.channel} without a handler`);
      return;
    }
    let inbox = this.inboxes.get(message.channel);
    if (inbox === undefined) {
      inbox = new ChannelInbox(...this.channelLimits);
      this.inboxes.set(message.channel, inbox);
    }
    if (inbox.hasRoomToRun()) {
      inbox.running += 1;
      void this.runInbox(registration, inbox, message);
    } else if (inbox.wait(message) > 0 && inbox.dropped === 1) {
      this.logger.warn(
        `agent ${this.agentName}: the handler of channel ${message.channel} is slower than its messages come: ` +
          "the oldest waiting ones are dropped",
      );
    }
  }

  /** Handle `message`, then whatever waits in the inbox, until it is empty (one of its handler slots). */
  private async runInbox(
    registration: ChannelRegistration,
    inbox: ChannelInbox,
    first: ChannelMessageProto,
  ): Promise<void> {
    try {
      for (let message: ChannelMessageProto | undefined = first; message !== undefined; message = inbox.next()) {
        const ctx = new ChannelContext(this, message);
        try {
          await registration.handler(ctx, decodePayload(message.payload));
        } catch (error) {
          ctx.log.warn("channel handler failed:", error);
        }
      }
    } finally {
      inbox.running -= 1;
    }
  }

  // ------------------------------------------------------------ ContextPort

  update(taskId: string, attempt: number, kind: TaskUpdateKind, progress: number, message: string): void {
    if (this.running.has(refKey(taskId, attempt))) {
      this.outbox.pushUpdate({ taskId, attempt, kind, progress, message });
    }
  }

  /** Queues a publish; throws at once what the plane would refuse (see limits.ts), or NotSerializableError. */
  publish(channel: string, data: unknown, options: PublishOptions): void {
    checkPublish(channel, options.headers ?? {});
    const payload = encodePayload(data, options.contentType);
    checkJsonDepth(payload);
    checkPayloadSize(payload, this.maxPayloadBytes);
    this.outbox.pushControl({
      frame: { $case: "publish", publish: { channel, payload, headers: { ...options.headers } } },
    });
  }
}

function capability(registration: TaskRegistration): Capability {
  return {
    name: registration.capability,
    description: registration.description,
    inputSchema: registration.inputSchema === undefined ? undefined : jsonObject(registration.inputSchema),
    outputSchema: registration.outputSchema === undefined ? undefined : jsonObject(registration.outputSchema),
  };
}
