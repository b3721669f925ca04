/**
 * One agent session: one `AgentLinkService.Connect` stream, from `register` to its end.
 *
 * The session hands incoming frames to its handler (the runtime), writes whatever the outbox holds
 * (coalesced: everything queued in the same turn of the event loop goes out together), and sends
 * heartbeats. What must survive a reconnect lives in the runtime, not here.
 */

import { type ClientDuplexStream, type StatusObject, status as Status } from "@grpc/grpc-js";

import type { Connection } from "./connection";
import { durationToMs } from "./convert";
import { InstanceIdTakenError, RegistrationRejectedError } from "./errors";
import type { Logger } from "./log";
import type { Outbox } from "./outbox";
import { AgentLinkServiceClient, type ConnectRequest, type ConnectResponse, type Registered } from "./proto";
import { errorFromStatus } from "./status";

/** The runtime, as the session sees it. */
export interface LinkHandler {
  readonly outbox: Outbox;
  readonly logger: Logger;
  readonly instanceId: string;
  registerFrame(): ConnectRequest;
  heartbeatFrame(): ConnectRequest;
  onRegistered(session: LinkSession, registered: Registered): void;
  onFrame(session: LinkSession, frame: ConnectResponse): void;
}

/** How a session ended. */
export interface SessionEnd {
  /** Whether `registered` arrived. */
  readonly registered: boolean;
  /** Why it ended, unless it ended cleanly (status OK). */
  readonly error?: Error;
  /**
   * An error no reconnect can fix (registration rejected, bad token, ...), or that one would make worse (the
   * instance id taken by another agent).
   */
  readonly fatal?: Error;
}

/** Status codes that no reconnect can fix: the agent stops instead of retrying forever. */
const FATAL_CODES: ReadonlySet<number> = new Set([
  Status.UNAUTHENTICATED,
  Status.PERMISSION_DENIED,
  Status.UNIMPLEMENTED,
  Status.INVALID_ARGUMENT,
]);

// The `error` frame of a session replaced because another agent registered its instance id (docs/agent-link.md §1).
const ALREADY_EXISTS = 6; // google.rpc.Code
const INSTANCE_ID_FIELD = "register.instance_id";

const REGISTRATION_TIMEOUT_MS = 30_000;
const DEFAULT_HEARTBEAT_MS = 5_000;
// After the final status, wait this long at most for frames still buffered in the stream.
const END_GRACE_MS = 200;

export class LinkSession {
  registered: Registered | undefined;
  private readonly handler: LinkHandler;
  private readonly connection: Connection;
  private call: ClientDuplexStream<ConnectRequest, ConnectResponse> | undefined;
  private closing = false;
  private halfClosed = false;
  private ended = false;
  private flushScheduled = false;
  private blocked = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private registrationTimer: NodeJS.Timeout | undefined;
  private rejection: RegistrationRejectedError | InstanceIdTakenError | undefined;
  private protocolError: Error | undefined;

  constructor(handler: LinkHandler, connection: Connection) {
    this.handler = handler;
    this.connection = connection;
  }

  get sessionId(): string {
    return this.registered?.sessionId ?? "";
  }

  /** True once the stream is half-closing (or half-closed): nothing more is written. */
  get isClosing(): boolean {
    return this.closing;
  }

  /** True once the stream has ended. */
  get isEnded(): boolean {
    return this.ended;
  }

  /** Runs the stream until it ends; never rejects (the end says why). */
  run(): Promise<SessionEnd> {
    return new Promise<SessionEnd>((resolve) => {
      let call: ClientDuplexStream<ConnectRequest, ConnectResponse>;
      try {
        call = this.connection.client(AgentLinkServiceClient).connect(this.connection.metadata());
      } catch (error) {
        this.ended = true;
        resolve({ registered: false, error: error instanceof Error ? error : new Error(String(error)) });
        return;
      }
      this.call = call;
      let finalStatus: StatusObject | undefined;
      let settled = false;
      const settle = (): void => {
        if (settled || finalStatus === undefined) {
          return;
        }
        settled = true;
        this.finish();
        resolve(this.endFrom(finalStatus));
      };
      call.on("data", (response: ConnectResponse) => {
        try {
          this.onData(response);
        } catch (error) {
          this.handler.logger.error("agent link: failed to handle a frame; closing the stream", error);
          this.protocolError = error instanceof Error ? error : new Error(String(error));
          call.cancel();
        }
      });
      call.on("error", () => {
        // The "status" event that always follows says why; listening here keeps Node from throwing.
      });
      call.on("end", settle);
      call.on("status", (status: StatusObject) => {
        finalStatus = status;
        if (call.readableEnded) {
          settle();
        } else {
          setTimeout(settle, END_GRACE_MS); // frames still buffered are delivered before "end"
        }
      });
      this.registrationTimer = setTimeout(() => {
        this.protocolError = new Error(`no \`registered\` frame within ${REGISTRATION_TIMEOUT_MS} ms`);
        call.cancel();
      }, REGISTRATION_TIMEOUT_MS);
      call.write(this.handler.registerFrame());
    });
  }

  private onData(response: ConnectResponse): void {
    if (this.registered !== undefined) {
      const taken = this.instanceTaken(response);
      if (taken !== undefined) {
        this.rejection = taken;
        this.call?.cancel(); // the plane closes the stream too; nothing more is written
        return;
      }
      this.handler.onFrame(this, response);
      return;
    }
    const frame = response.frame;
    if (frame?.$case === "registered") {
      clearTimeout(this.registrationTimer);
      this.registered = frame.registered;
      const intervalMs = durationToMs(frame.registered.heartbeatInterval) || DEFAULT_HEARTBEAT_MS;
      this.handler.onRegistered(this, frame.registered);
      this.heartbeatTimer = setInterval(() => {
        this.handler.outbox.pushControl(this.handler.heartbeatFrame());
      }, intervalMs);
      this.handler.outbox.setListener(() => this.scheduleFlush());
      this.scheduleFlush();
    } else if (frame?.$case === "error") {
      // The plane closes the stream right after this frame (INVALID_ARGUMENT for a bad registration; OK for a
      // session replaced while it registered, because another agent registered its instance id meanwhile).
      this.rejection =
        this.instanceTaken(response) ?? new RegistrationRejectedError(frame.error.message, frame.error.field);
    } else {
      this.protocolError = new Error(`expected \`registered\` as the first frame, got \`${frame?.$case ?? "nothing"}\``);
      this.call?.cancel();
    }
  }

  /**
   * The plane replaced this session because another agent registered its instance id (this agent's own
   * reconnects abandon the old stream first, so the frame never reaches it for them). Reconnecting would replace
   * the other agent in turn, and both would flap for good: the session ends with this fatal error, which stops
   * the agent. Whether the plane marked the frame fatal does not matter (older planes did not).
   */
  private instanceTaken(response: ConnectResponse): InstanceIdTakenError | undefined {
    const frame = response.frame;
    if (frame?.$case !== "error" || frame.error.code !== ALREADY_EXISTS || frame.error.field !== INSTANCE_ID_FIELD) {
      return undefined;
    }
    return new InstanceIdTakenError(this.handler.instanceId, frame.error.message);
  }

  /** Half-close the stream once everything queued has been written (the plane then ends it). */
  closeWhenFlushed(): void {
    this.closing = true;
    this.scheduleFlush();
  }

  /** Break the stream now. */
  abort(): void {
    if (!this.ended) {
      this.call?.cancel();
    }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.blocked || this.ended || this.halfClosed || this.registered === undefined) {
      return;
    }
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const call = this.call;
    if (call === undefined || this.ended || this.halfClosed || this.rejection !== undefined) {
      return; // (a rejection: the session is over, e.g. another agent took the instance id; nothing more goes out)
    }
    const outbox = this.handler.outbox;
    let writable = true;
    for (const frame of outbox.take()) {
      writable = call.write(frame);
    }
    if (!writable) {
      // Let the transport catch up; meanwhile more entries queue and go out in fewer, bigger frames.
      this.blocked = true;
      call.once("drain", () => {
        this.blocked = false;
        this.scheduleFlush();
      });
      return;
    }
    if (this.closing && !outbox.pending) {
      this.halfClosed = true;
      call.end();
    }
  }

  private finish(): void {
    this.ended = true;
    clearTimeout(this.registrationTimer);
    clearInterval(this.heartbeatTimer);
    if (this.registered !== undefined) {
      this.handler.outbox.setListener(undefined);
    }
  }

  private endFrom(status: StatusObject): SessionEnd {
    const registered = this.registered !== undefined;
    if (this.rejection !== undefined) {
      return { registered, fatal: this.rejection };
    }
    if (status.code === Status.OK) {
      return this.protocolError ? { registered, error: this.protocolError } : { registered };
    }
    const error = errorFromStatus(status, this.connection.target);
    if (!registered && this.protocolError === undefined && FATAL_CODES.has(status.code)) {
      return { registered, fatal: error };
    }
    return { registered, error: this.protocolError ?? error };
  }
}
