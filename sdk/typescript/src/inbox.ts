/**
 * A channel's messages on their way to its handler: a bounded number of handler calls run at once, and a
 * bounded number of messages wait. The control plane keeps at most 1,000 messages (32 MiB) waiting for an
 * agent that reads slowly; an agent reads its stream eagerly, so without a bound of its own a slow handler
 * under a busy channel would grow it instead. Past the bound the oldest waiting message is dropped (channel
 * messages are at most once); the newest always waits.
 */

import type { ChannelMessageProto } from "./proto";

/** Handler calls running at once for one channel. */
export const HANDLERS_PER_CHANNEL = 64;
export const MAX_WAITING_MESSAGES = 1000;
export const MAX_WAITING_BYTES = 32 * 1024 * 1024;

/** Roughly what a waiting message holds: its bytes, or its JSON's length. */
function sizeOf(message: ChannelMessageProto): number {
  const kind = message.payload?.kind;
  if (kind?.$case === "data") {
    return kind.data.length;
  }
  return kind?.$case === "json" ? (JSON.stringify(kind.json) ?? "").length : 0;
}

export class ChannelInbox {
  running = 0;
  dropped = 0;
  private readonly waiting: ChannelMessageProto[] = [];
  private head = 0;
  private bytes = 0;

  constructor(
    readonly handlersAtOnce = HANDLERS_PER_CHANNEL,
    readonly maxWaiting = MAX_WAITING_MESSAGES,
    readonly maxWaitingBytes = MAX_WAITING_BYTES,
  ) {}

  get size(): number {
    return this.waiting.length - this.head;
  }

  hasRoomToRun(): boolean {
    return this.running < this.handlersAtOnce;
  }

  /** Queue `message` for the next free handler; returns how many older ones it pushed out. */
  wait(message: ChannelMessageProto): number {
    const size = sizeOf(message);
    const before = this.dropped;
    while (this.size > 0 && (this.size >= this.maxWaiting || this.bytes + size > this.maxWaitingBytes)) {
      this.bytes -= sizeOf(this.take());
      this.dropped += 1;
    }
    this.waiting.push(message);
    this.bytes += size;
    return this.dropped - before;
  }

  next(): ChannelMessageProto | undefined {
    if (this.size === 0) {
      return undefined;
    }
    const message = this.take();
    this.bytes -= sizeOf(message);
    return message;
  }

  private take(): ChannelMessageProto {
    const message = this.waiting[this.head] as ChannelMessageProto;
    this.head += 1;
    if (this.head > 1024 && this.head * 2 > this.waiting.length) {
      this.waiting.splice(0, this.head); // compact now and then: shifting one by one is O(n) each
      this.head = 0;
    }
    return message;
  }
}
