/** `Agent`: declare task and channel handlers, then serve them on the mesh. */

import { randomBytes } from "node:crypto";
import { hostname } from "node:os";

import { type ConnectionOptions, defaultTarget, defaultToken, type TlsOptions } from "./connection";
import type { ChannelContext, TaskContext } from "./context";
import { channelNameProblem } from "./limits";
import { consoleLogger, type Logger, type LogLevel } from "./log";
import { AgentRuntime, type AgentStatus, type ChannelRegistration, type TaskRegistration } from "./runtime";

/** A task handler: gets the attempt's context and the decoded input; returns (or resolves to) the output. */
export type TaskHandler<I = unknown, O = unknown> = (ctx: TaskContext, input: I) => O | Promise<O>;

/** A channel handler: gets the message's context and its decoded body. */
export type ChannelHandler<T = unknown> = (ctx: ChannelContext, data: T) => void | Promise<void>;

/** Options of {@link Agent.task}. */
export interface TaskOptions<I = unknown> {
  /** Human-readable description of the capability. */
  description?: string;
  /** JSON Schema of the input, registered with the capability. */
  inputSchema?: Record<string, unknown>;
  /** JSON Schema of the output, registered with the capability. */
  outputSchema?: Record<string, unknown>;
  /**
   * Checks (and may convert) the decoded input before the handler runs, e.g. a zod schema's
   * `parse`. If it throws, the attempt fails with the non-retryable code `validation_failed`.
   */
  validate?: (input: unknown) => I;
}

/** How an agent identifies itself, how much it takes on, and how it connects. */
export interface AgentOptions extends ConnectionOptions {
  /** Agent name: 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit. */
  name: string;
  /** Agent version (default "0.0.0"). */
  version?: string;
  /**
   * Stable id of this running copy (same rules as the name). Default: generated once, when the
   * Agent is made, as `<name>-<host>-<pid>-<random>`; reused on every reconnect.
   */
  instanceId?: string;
  /** Human-readable description. */
  description?: string;
  /** Labels matched by task label selectors. */
  labels?: Record<string, string>;
  /** Most tasks run at once, 1..10000 (default 16). */
  maxConcurrency?: number;
  /** Share for the weighted scheduling strategy (default 1). */
  weight?: number;
  /** How long `stop()` waits for in-flight tasks and their acknowledgements (default 30 000 ms). */
  drainTimeoutMs?: number;
  /** Reconnect backoff: doubling from `initialDelayMs` (default 100) to `maxDelayMs` (default 5 000), ±50 % jitter. */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number };
  /** Timeout of each state call (default 30 000 ms). */
  stateTimeoutMs?: number;
  /** A logger, or the level for the default stderr logger (default: `MESHPLANE_LOG_LEVEL`, else "warn"). */
  logger?: Logger | LogLevel;
}

/** Options of {@link Agent.run}. */
export interface RunOptions {
  /** Bearer token (overrides the one given to the constructor, default `MESHPLANE_TOKEN`). */
  token?: string;
  /**
   * TLS to the control plane (overrides the one given to the constructor; default: the `MESHPLANE_TLS*`
   * environment variables, else plaintext). See {@link ConnectionOptions.tls}.
   */
  tls?: TlsOptions | boolean;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const CAPABILITY_RE = /^[A-Za-z0-9._-]{1,200}$/;
const MAX_CONCURRENCY = 10_000;

/** `<name>-<host>-<pid>-<random>`, cut to the 128 characters an instance id may have. */
export function defaultInstanceId(name: string): string {
  const host = hostname().replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[.-]+|[.-]+$/g, "") || "host";
  return `${name}-${host}-${process.pid}-${randomBytes(4).toString("hex")}`.slice(0, 128);
}

/** Throws a RangeError unless `channel` is a valid channel name (a handler for it is a programming error). */
export function checkChannelName(channel: string): void {
  const problem = channelNameProblem(channel);
  if (problem !== undefined) {
    throw new RangeError(`invalid channel name: ${problem}`);
  }
}

/**
 * A named, versioned program that serves capabilities on the mesh.
 *
 * ```ts
 * const agent = new Agent({ name: "greeter", maxConcurrency: 8 });
 * agent.task("greet", async (ctx, input: { name: string }) => ({ greeting: `hello ${input.name}` }));
 * agent.stopOnSignals();
 * agent.run("127.0.0.1:50051").catch((error) => console.error(error));
 * ```
 */
export class Agent {
  readonly name: string;
  readonly version: string;
  readonly instanceId: string;
  readonly description: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly maxConcurrency: number;
  readonly weight: number;
  readonly logger: Logger;
  private readonly options: AgentOptions;
  private readonly tasks = new Map<string, TaskRegistration>();
  private readonly channelHandlers = new Map<string, ChannelRegistration>();
  private runtime: AgentRuntime | undefined;
  private lastStatus: AgentStatus = "new";
  private pendingConnect: Array<{ resolve: () => void; reject: (error: unknown) => void }> = [];

  constructor(options: AgentOptions) {
    if (!NAME_RE.test(options.name)) {
      throw new RangeError(
        `invalid agent name '${options.name}': 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit`,
      );
    }
    const instanceId = options.instanceId ?? defaultInstanceId(options.name);
    if (!NAME_RE.test(instanceId)) {
      throw new RangeError(`invalid instance id '${instanceId}': same rules as the agent name`);
    }
    const maxConcurrency = options.maxConcurrency ?? 16;
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 1 || maxConcurrency > MAX_CONCURRENCY) {
      throw new RangeError(`maxConcurrency must be an integer within 1..${MAX_CONCURRENCY}, got ${maxConcurrency}`);
    }
    const weight = options.weight ?? 1;
    if (!Number.isInteger(weight) || weight < 0) {
      throw new RangeError(`weight must be an integer >= 0, got ${weight}`);
    }
    this.options = { ...options };
    this.name = options.name;
    this.version = options.version ?? "0.0.0";
    this.instanceId = instanceId;
    this.description = options.description ?? "";
    this.labels = { ...(options.labels ?? {}) };
    this.maxConcurrency = maxConcurrency;
    this.weight = weight;
    this.logger = typeof options.logger === "object" ? options.logger : consoleLogger(options.logger);
  }

  // ------------------------------------------------------------ declaring handlers

  /**
   * Serve `capability` with `handler`. Call before {@link run}. The handler's return value (any
   * JSON value, or a Uint8Array) is the task output; what it throws fails the attempt:
   * a {@link TaskError} / {@link NonRetryableError} with its code, anything else retryably with
   * the error's name as the code.
   */
  task<I = unknown, O = unknown>(capability: string, handler: TaskHandler<I, O>, options: TaskOptions<I> = {}): this {
    if (!CAPABILITY_RE.test(capability)) {
      throw new RangeError(`invalid capability name '${capability}': 1-200 characters of [A-Za-z0-9._-]`);
    }
    if (this.tasks.has(capability)) {
      throw new Error(`capability '${capability}' already has a handler`);
    }
    if (this.runtime !== undefined) {
      throw new Error("capabilities are registered when the agent connects: declare tasks before run()");
    }
    this.tasks.set(capability, {
      capability,
      description: options.description ?? "",
      inputSchema: options.inputSchema,
      outputSchema: options.outputSchema,
      validate: options.validate,
      handler: handler as TaskRegistration["handler"],
    });
    return this;
  }

  /** Handle the messages of `channel` (subscribed at registration, or at once when already running). */
  onChannel<T = unknown>(channel: string, handler: ChannelHandler<T>): this {
    checkChannelName(channel);
    if (this.channelHandlers.has(channel)) {
      throw new Error(`channel '${channel}' already has a handler`);
    }
    this.channelHandlers.set(channel, { channel, handler: handler as ChannelRegistration["handler"] });
    this.runtime?.subscribe(channel);
    return this;
  }

  /** Stop handling (and receiving) the messages of `channel`. */
  offChannel(channel: string): this {
    if (this.channelHandlers.delete(channel)) {
      this.runtime?.unsubscribe(channel);
    }
    return this;
  }

  /** The capability names this agent serves. */
  get capabilities(): string[] {
    return [...this.tasks.keys()];
  }

  /** The channels this agent subscribes to. */
  get channels(): string[] {
    return [...this.channelHandlers.keys()];
  }

  // ------------------------------------------------------------ state

  /** "new", "connecting", "connected", "draining" or "stopped". */
  get status(): AgentStatus {
    return this.runtime?.status ?? this.lastStatus;
  }

  /** The current session's id, while connected. */
  get sessionId(): string | undefined {
    return this.runtime?.sessionId || undefined;
  }

  /** Handlers running now. */
  get inFlight(): number {
    return this.runtime?.inFlight ?? 0;
  }

  // ------------------------------------------------------------ serving

  /**
   * Connect to the control plane at `target` (default `MESHPLANE_TARGET`, else 127.0.0.1:50051)
   * and serve until {@link stop} or {@link terminate}. Reconnects with jittered exponential backoff
   * whenever the link breaks, keeping running tasks. Rejects with {@link RegistrationRejectedError}
   * (or {@link UnauthenticatedError}, ...) when no retry can succeed, and with {@link InstanceIdTakenError}
   * when another agent registered this one's instance id (reconnecting would take the session back from it,
   * and both would flap for good).
   */
  async run(target?: string, options: RunOptions = {}): Promise<void> {
    if (this.runtime !== undefined) {
      throw new Error(`agent '${this.name}' is already running`);
    }
    if (this.tasks.size === 0 && this.channelHandlers.size === 0) {
      const error = new Error(`agent '${this.name}' has no task or channel handlers`);
      for (const waiter of this.pendingConnect.splice(0)) {
        waiter.reject(error);
      }
      throw error;
    }
    let runtime: AgentRuntime;
    try {
      runtime = this.makeRuntime(target, options);
    } catch (error) {
      // Unusable connection settings (e.g. a TLS file that cannot be read): nothing will connect.
      for (const waiter of this.pendingConnect.splice(0)) {
        waiter.reject(error);
      }
      throw error;
    }
    this.runtime = runtime;
    for (const waiter of this.pendingConnect.splice(0)) {
      runtime.waitConnected().then(waiter.resolve, waiter.reject);
    }
    try {
      await runtime.run();
    } finally {
      this.lastStatus = "stopped";
      this.runtime = undefined;
    }
  }

  private makeRuntime(target: string | undefined, options: RunOptions): AgentRuntime {
    return new AgentRuntime(
      {
        name: this.name,
        version: this.version,
        instanceId: this.instanceId,
        description: this.description,
        labels: this.labels,
        maxConcurrency: this.maxConcurrency,
        weight: this.weight,
        tasks: new Map(this.tasks),
        channels: this.channelHandlers,
        backoffInitialMs: Math.max(1, this.options.reconnect?.initialDelayMs ?? 100),
        backoffMaxMs: Math.max(
          this.options.reconnect?.initialDelayMs ?? 100,
          this.options.reconnect?.maxDelayMs ?? 5_000,
          1,
        ),
        drainTimeoutMs: this.options.drainTimeoutMs ?? 30_000,
        stateTimeoutMs: this.options.stateTimeoutMs ?? 30_000,
        logger: this.logger,
      },
      target || defaultTarget(),
      {
        token: options.token ?? this.options.token ?? defaultToken(),
        tls: options.tls ?? this.options.tls,
        credentials: this.options.credentials,
        channelOptions: this.options.channelOptions,
      },
    );
  }

  /**
   * Resolves once the agent is registered with the control plane (`run()` may be called before or
   * after). Rejects if the agent stops first, or after `timeoutMs`.
   */
  async waitConnected(timeoutMs?: number): Promise<void> {
    const connected =
      this.runtime !== undefined
        ? this.runtime.waitConnected()
        : new Promise<void>((resolve, reject) => this.pendingConnect.push({ resolve, reject }));
    if (timeoutMs === undefined) {
      return connected;
    }
    connected.catch(() => undefined); // the race below reports it; never an unhandled rejection
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`agent '${this.name}' did not connect within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([connected, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Graceful shutdown: tell the plane to send no more work (`draining`), finish in-flight tasks,
   * deliver their results and wait for their acknowledgements (at most `timeoutMs`, default the
   * `drainTimeoutMs` option), then leave. `run()` resolves when it is done.
   */
  async stop(options: { timeoutMs?: number } = {}): Promise<void> {
    await this.runtime?.drain(options.timeoutMs ?? this.options.drainTimeoutMs ?? 30_000);
  }

  /**
   * Leave at once: running handlers are cancelled and their results dropped. Each running attempt is
   * reported as failed (`agent_stopped`, retryable) first, so that the plane re-runs its task at once.
   */
  async terminate(): Promise<void> {
    await this.runtime?.terminate();
  }

  /**
   * Stop gracefully on the first of `signals` (default SIGTERM and SIGINT), at once on the second.
   * Returns a function that removes the signal handlers.
   */
  stopOnSignals(signals: readonly NodeJS.Signals[] = ["SIGTERM", "SIGINT"]): () => void {
    let received = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      received += 1;
      if (received === 1) {
        this.logger.info(`agent ${this.name}: ${signal} received, draining (send it again to stop at once)`);
        this.stop().catch((error: unknown) => this.logger.error(`agent ${this.name}: drain failed`, error));
      } else {
        this.logger.warn(`agent ${this.name}: ${signal} received again, stopping now`);
        this.terminate().catch((error: unknown) => this.logger.error(`agent ${this.name}: stop failed`, error));
      }
    };
    for (const signal of signals) {
      process.on(signal, onSignal);
    }
    return () => {
      for (const signal of signals) {
        process.off(signal, onSignal);
      }
    };
  }

  toString(): string {
    return `Agent(${this.name}@${this.version}, capabilities=[${this.capabilities.join(", ")}])`;
  }
}
