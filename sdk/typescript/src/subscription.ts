/** `Subscription`: a live `ChannelService.Subscribe` stream, as an async iterable of channel messages. */

import { type ClientReadableStream, status as Status } from "@grpc/grpc-js";

import type { MeshClient } from "./client";
import type { Connection } from "./connection";
import { channelMessage } from "./convert";
import type { RpcError } from "./errors";
import { decodePayload } from "./payload";
import type { SubscribeResponse } from "./proto";
import { errorFromStatus } from "./status";
import type { ChannelMessage } from "./types";

/** Options of {@link MeshClient.subscribe}. */
export interface SubscribeOptions {
  /**
   * Closes the subscription when this signal aborts: a `subscribe` still waiting for the subscription to go
   * live rejects with the signal's reason, and so does the iteration of a live one. Pass
   * `AbortSignal.timeout(ms)` to bound how long to wait (and listen).
   */
  signal?: AbortSignal;
}

/**
 * A live subscription to a channel, from {@link MeshClient.subscribe}: every message published on the channel
 * from the moment `subscribe` resolved, in the order the control plane delivers them (at most once; messages
 * are not stored, so nothing published before is replayed).
 *
 * Iterate it once, with `for await`; leaving the loop (`break`, `return`, a throw) closes the subscription, and
 * so does {@link close} (the loop then ends) or the `signal` given to `subscribe` (the loop then throws the
 * signal's reason). Messages that arrive before the loop starts wait for it. A failure of the stream (the
 * control plane going away, say) throws the matching {@link RpcError} from the loop, after the messages that
 * came before it; a message whose JSON body does not parse throws too. Either closes the subscription. If the
 * control plane ends the stream, the loop ends.
 *
 * ```ts
 * const sub = await client.subscribe<{ headline: string }>("news"); // live: nothing published from now is missed
 * for await (const message of sub) {
 *   console.log(message.publisher, message.data.headline);
 *   if (message.data.headline === "bye") break; // closes the subscription
 * }
 * ```
 */
export interface Subscription<T = unknown> extends AsyncIterable<ChannelMessage<T>> {
  /** The channel subscribed to. */
  readonly channel: string;
  /** True once the subscription was closed (by {@link close}, leaving the loop, the signal) or its stream ended. */
  readonly closed: boolean;
  /** Closes the subscription (idempotent): cancels the stream; a loop over it ends (without throwing). */
  close(): void;
  /** The channel's messages, payloads decoded (JSON as a value, other content types as a Uint8Array). */
  [Symbol.asyncIterator](): AsyncIterator<ChannelMessage<T>, void, undefined>;
}

/** Why an abort closed the subscription (a box, so an `undefined` reason still counts). */
type Aborted = { reason: unknown };

/** The {@link Subscription} over one Subscribe call (internal: `MeshClient.subscribe` makes them). */
export class ChannelSubscription<T = unknown> implements Subscription<T> {
  readonly channel: string;
  private readonly call: ClientReadableStream<SubscribeResponse>;
  private readonly responses: AsyncIterator<SubscribeResponse>;
  private readonly connection: Connection;
  private readonly signal: AbortSignal | undefined;
  private readonly onClose: (() => void) | undefined;
  private readonly onAbort = (): void => {
    this.aborted ??= { reason: this.signal?.reason };
    this.close();
  };
  private aborted: Aborted | undefined;
  private cancelled = false;
  private ended = false; // the call's status arrived

  /**
   * Takes over `call` (just started): reads it, and cancels it on close or when `signal` aborts. `onClose` runs
   * once, when the subscription closes.
   */
  constructor(
    connection: Connection,
    channel: string,
    call: ClientReadableStream<SubscribeResponse>,
    options: { signal?: AbortSignal; onClose?: () => void } = {},
  ) {
    const signal = options.signal;
    this.connection = connection;
    this.channel = channel;
    this.call = call;
    this.signal = signal;
    this.onClose = options.onClose;
    // Created at once, so the stream's 'error' event always has a listener (the iterator's).
    this.responses = (call as AsyncIterable<SubscribeResponse>)[Symbol.asyncIterator]();
    call.once("status", () => {
      this.ended = true;
    });
    signal?.addEventListener("abort", this.onAbort, { once: true });
    if (signal?.aborted) {
      this.onAbort();
    }
  }

  /** See {@link Subscription.closed}. */
  get closed(): boolean {
    return this.cancelled || this.ended;
  }

  /**
   * Resolves once the control plane confirmed the subscription (its first response, `started`); rejects, and
   * closes, if the stream fails or ends first, or its first response is anything else.
   */
  async started(): Promise<void> {
    let first: IteratorResult<SubscribeResponse> | undefined;
    try {
      first = await this.read();
    } catch (error) {
      this.close();
      throw error;
    }
    if (first === undefined || first.done) {
      this.close();
      if (this.aborted) {
        throw this.aborted.reason;
      }
      const details = "the subscription ended before it started";
      throw errorFromStatus({ code: Status.UNAVAILABLE, details }, this.connection.target);
    }
    if (first.value.event?.$case !== "started") {
      this.close();
      throw new TypeError("the control plane answered Subscribe without confirming the subscription first");
    }
  }

  /** See {@link Subscription.close}. */
  close(): void {
    this.signal?.removeEventListener("abort", this.onAbort);
    if (!this.cancelled) {
      this.cancelled = true;
      this.call.cancel();
      this.onClose?.();
    }
  }

  /** See {@link Subscription}: the messages, until the subscription is closed or its stream ends. */
  async *[Symbol.asyncIterator](): AsyncGenerator<ChannelMessage<T>, void, undefined> {
    try {
      while (!this.cancelled) {
        const result = await this.read();
        if (result === undefined || result.done) {
          break;
        }
        const event = result.value.event;
        if (event?.$case === "message") {
          const message = event.message;
          yield channelMessage(message, decodePayload(message.payload)) as ChannelMessage<T>;
        }
      }
      if (this.aborted) {
        throw this.aborted.reason;
      }
    } finally {
      this.close();
    }
  }

  /**
   * The next response; `undefined` once {@link close} cancelled the stream. Throws the signal's reason once it
   * aborted, else the mapped error of a failed stream.
   */
  private async read(): Promise<IteratorResult<SubscribeResponse> | undefined> {
    let result: IteratorResult<SubscribeResponse>;
    try {
      result = await this.responses.next();
    } catch (error) {
      if (this.aborted) {
        throw this.aborted.reason;
      }
      if (this.cancelled) {
        return undefined;
      }
      throw this.connection.error(error);
    }
    return result;
  }
}
