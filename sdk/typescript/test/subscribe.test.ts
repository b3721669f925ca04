// MeshClient.subscribe against an in-process fake ChannelService (a grpc-js server whose Subscribe calls the
// tests drive by hand): when the subscription goes live, what it yields, how it closes (and that the server
// sees the cancellation), and the errors it maps.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { afterEach, describe, it } from "node:test";

import {
  type Metadata,
  type Server,
  type ServerWritableStream,
  status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";

import {
  type ChannelMessage as ChannelMessageProto,
  ChannelServiceService,
  type SubscribeRequest,
  type SubscribeResponse,
} from "../../../generated/ts/meshplane/v1/channel";
import { MeshClient } from "../src/client";
import {
  InvalidArgumentError,
  MeshplaneError,
  PermissionDeniedError,
  RpcError,
  UnavailableError,
} from "../src/errors";
import { encodePayload } from "../src/payload";
import type { Subscription } from "../src/subscription";
import type { ChannelMessage } from "../src/types";
import { serve, StreamCall, StreamingFake, within } from "./support";

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether `promise` has settled yet (checked after `ms`). */
async function settledAfter(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await delay(ms);
  return settled;
}

/** One Subscribe call as the server sees it; the test says what it answers. */
class Incoming extends StreamCall<SubscribeRequest, SubscribeResponse> {
  readonly metadata: Metadata;

  constructor(stream: ServerWritableStream<SubscribeRequest, SubscribeResponse>) {
    super(stream);
    this.metadata = stream.metadata;
  }

  started(channel = this.request.channel): void {
    this.stream.write({ event: { $case: "started", started: { channel } } });
  }

  message(message: Partial<ChannelMessageProto> & { data?: unknown }): void {
    const { data, ...rest } = message;
    this.stream.write({
      event: {
        $case: "message",
        message: {
          channel: this.request.channel,
          messageId: "m",
          payload: encodePayload(data ?? null),
          headers: {},
          publisher: "client/anonymous",
          publishTime: undefined,
          ...rest,
        },
      },
    });
  }
}

/** A ChannelService whose Subscribe calls queue up for the test; Publish and ListChannels unimplemented. */
class FakeChannels extends StreamingFake<Incoming> {
  protected readonly what = "a Subscribe call";
  protected addServices(server: Server): void {
    const implementation: UntypedServiceImplementation = {
      subscribe: (stream: ServerWritableStream<SubscribeRequest, SubscribeResponse>): void =>
        this.arrive(new Incoming(stream)),
    };
    server.addService(ChannelServiceService, implementation);
  }
}

/** Subscribes and answers `started`: the live subscription and its server side. */
async function live(
  client: MeshClient,
  plane: FakeChannels,
  channel = "news",
  options: { signal?: AbortSignal } = {},
): Promise<{ sub: Subscription; call: Incoming }> {
  const subscribing = client.subscribe(channel, options);
  const call = await plane.next();
  call.started();
  return { sub: await within(subscribing, "subscribe"), call };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok(address !== null && typeof address === "object");
  return address.port;
}

describe("MeshClient.subscribe", () => {
  const plane = new FakeChannels();
  let client: MeshClient;

  serve(plane, (address) => (client = new MeshClient(address, { timeoutMs: 5_000, token: "t0ken" })));
  afterEach(() => plane.reset());

  // ------------------------------------------------------------ going live

  it("resolves only once the control plane confirmed the subscription", async () => {
    const subscribing = client.subscribe("news");
    const call = await plane.next();
    assert.deepEqual(call.request, { channel: "news" });
    assert.deepEqual(call.metadata.get("authorization"), ["Bearer t0ken"]);
    assert.equal(await settledAfter(subscribing, 150), false, "resolved before the started event");

    call.started();
    const sub = await within(subscribing, "subscribe");
    assert.equal(sub.channel, "news");
    assert.equal(sub.closed, false);
    assert.equal(call.isCancelled, false);
    sub.close();
    await within(call.cancelled, "the cancellation");
  });

  it("yields every message sent once live, in order, decoded, even those sent before the loop started", async () => {
    const { sub, call } = await live(client, plane);
    const when = new Date("2026-03-04T05:06:07.089Z");
    // Published right after subscribe resolved, before anyone iterates: buffered, not lost.
    call.message({ messageId: "m1", data: { n: 1, text: "héllo" }, headers: { h: "v" }, publishTime: when });
    call.message({ messageId: "m2", data: [1, "two", null], publisher: "agent/echo/i-1" });
    call.message({ messageId: "m3", payload: encodePayload(new Uint8Array([0, 1, 255])) });
    call.message({ messageId: "m4", payload: undefined });
    await delay(50);

    const seen: ChannelMessage[] = [];
    for await (const message of sub) {
      seen.push(message);
      if (seen.length === 2) {
        call.message({ messageId: "m5", data: "later" }); // sent while the loop runs
      }
      if (seen.length === 5) {
        break;
      }
    }
    assert.deepEqual(
      seen.map((m) => m.messageId),
      ["m1", "m2", "m3", "m4", "m5"],
    );
    assert.deepEqual(seen[0], {
      channel: "news",
      messageId: "m1",
      data: { n: 1, text: "héllo" },
      contentType: "application/json",
      headers: { h: "v" },
      publisher: "client/anonymous",
      publishTime: when,
    });
    assert.deepEqual(seen[1]?.data, [1, "two", null]);
    assert.equal(seen[1]?.publisher, "agent/echo/i-1");
    assert.ok(seen[2]?.data instanceof Uint8Array);
    assert.deepEqual([...(seen[2].data as Uint8Array)], [0, 1, 255]);
    assert.equal(seen[2].contentType, "application/octet-stream");
    assert.equal(seen[3]?.data, null);
    assert.equal(seen[4]?.data, "later");
  });

  it("skips a repeated started event", async () => {
    const { sub, call } = await live(client, plane);
    call.started();
    call.message({ messageId: "m1", data: 1 });
    const iterator = sub[Symbol.asyncIterator]();
    const first = await within(iterator.next(), "a message");
    assert.equal(first.done, false);
    assert.equal(first.value?.messageId, "m1");
    sub.close();
  });

  // ------------------------------------------------------------ closing

  it("closes the stream when the loop is left with break", async () => {
    const { sub, call } = await live(client, plane);
    call.message({ messageId: "m1", data: 1 });
    call.message({ messageId: "m2", data: 2 });
    for await (const message of sub) {
      assert.equal(message.messageId, "m1");
      break;
    }
    await within(call.cancelled, "the cancellation");
    assert.equal(sub.closed, true);
    // A closed subscription yields nothing more.
    assert.deepEqual(await within(sub[Symbol.asyncIterator]().next(), "next"), { done: true, value: undefined });
  });

  it("closes the stream when the loop throws", async () => {
    const { sub, call } = await live(client, plane);
    call.message({ messageId: "m1", data: 1 });
    await assert.rejects(
      (async () => {
        for await (const _ of sub) {
          throw new Error("handler failed");
        }
      })(),
      /handler failed/,
    );
    await within(call.cancelled, "the cancellation");
    assert.equal(sub.closed, true);
  });

  it("close() ends a loop waiting for a message, without error, and cancels the stream", async () => {
    const { sub, call } = await live(client, plane);
    call.message({ messageId: "m1", data: 1 });
    const seen: string[] = [];
    const loop = (async () => {
      for await (const message of sub) {
        seen.push(message.messageId);
      }
    })();
    await delay(100); // the loop took m1 and waits for more
    assert.equal(await settledAfter(loop, 0), false);
    sub.close();
    await within(loop, "the loop's end");
    await within(call.cancelled, "the cancellation");
    assert.deepEqual(seen, ["m1"]);
    assert.equal(sub.closed, true);
    sub.close(); // idempotent
  });

  it("close() before iterating: the loop yields nothing", async () => {
    const { sub, call } = await live(client, plane);
    call.message({ messageId: "m1", data: 1 });
    await delay(50);
    sub.close();
    await within(call.cancelled, "the cancellation");
    const seen: ChannelMessage[] = [];
    for await (const message of sub) {
      seen.push(message);
    }
    assert.deepEqual(seen, []);
  });

  it("an aborted signal cancels the stream; the loop throws the signal's reason", async () => {
    const controller = new AbortController();
    const { sub, call } = await live(client, plane, "news", { signal: controller.signal });
    call.message({ messageId: "m1", data: 1 });
    const seen: string[] = [];
    const reason = new Error("enough");
    const loop = (async () => {
      for await (const message of sub) {
        seen.push(message.messageId);
      }
    })();
    await delay(100);
    controller.abort(reason);
    await assert.rejects(within(loop, "the loop's end"), (error: unknown) => error === reason);
    await within(call.cancelled, "the cancellation");
    assert.deepEqual(seen, ["m1"]);
    assert.equal(sub.closed, true);
  });

  it("a signal aborted while a message is being handled: the loop throws at the next message", async () => {
    const controller = new AbortController();
    const { sub, call } = await live(client, plane, "news", { signal: controller.signal });
    call.message({ messageId: "m1", data: 1 });
    call.message({ messageId: "m2", data: 2 });
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const message of sub) {
          seen.push(message.messageId);
          controller.abort(new RangeError("stop here"));
        }
      })(),
      (error: unknown) => error instanceof RangeError && error.message === "stop here",
    );
    assert.deepEqual(seen, ["m1"]);
    await within(call.cancelled, "the cancellation");
  });

  it("a signal aborted before the subscription is live rejects subscribe with its reason and cancels", async () => {
    const controller = new AbortController();
    const subscribing = client.subscribe("news", { signal: controller.signal });
    const call = await plane.next();
    const reason = new Error("gave up");
    controller.abort(reason);
    await assert.rejects(within(subscribing, "subscribe"), (error: unknown) => error === reason);
    await within(call.cancelled, "the cancellation");
  });

  it("an already aborted signal rejects at once, without a call", async () => {
    const reason = new Error("already");
    await assert.rejects(client.subscribe("news", { signal: AbortSignal.abort(reason) }), (e: unknown) => e === reason);
    await delay(50);
    assert.equal(plane.calls.length, 0);
  });

  it("after close(), aborting the signal changes nothing: the loop just ends", async () => {
    const controller = new AbortController();
    const { sub, call } = await live(client, plane, "news", { signal: controller.signal });
    sub.close();
    await within(call.cancelled, "the cancellation");
    controller.abort(new Error("later"));
    // Closed by close(), not by the signal: the loop just ends.
    const seen: ChannelMessage[] = [];
    for await (const message of sub) {
      seen.push(message);
    }
    assert.deepEqual(seen, []);
  });

  it("closing the client closes its subscriptions: loops end, pending ones reject, all cancelled", async () => {
    const other = new MeshClient(plane.address);
    const { sub, call } = await live(other, plane);
    call.message({ messageId: "m1", data: 1 });
    const seen: string[] = [];
    const loop = (async () => {
      for await (const message of sub) {
        seen.push(message.messageId);
      }
    })();
    const pending = other.subscribe("later");
    const pendingCall = await plane.next();
    await delay(50);

    other.close();
    await within(loop, "the loop's end");
    assert.deepEqual(seen, ["m1"]);
    assert.equal(sub.closed, true);
    await assert.rejects(within(pending, "subscribe"), UnavailableError);
    await within(call.cancelled, "the cancellation");
    await within(pendingCall.cancelled, "the pending call's cancellation");
  });

  // ------------------------------------------------------------ errors

  it("rejects with the mapped error when the stream fails before it is live", async () => {
    const cases: [number, string, new (...args: never[]) => RpcError][] = [
      [status.INVALID_ARGUMENT, "channel: bad name", InvalidArgumentError],
      [status.PERMISSION_DENIED, "no channels:subscribe", PermissionDeniedError],
      [status.UNAVAILABLE, "shutting down", UnavailableError],
    ];
    for (const [code, details, errorClass] of cases) {
      const subscribing = client.subscribe("bad name");
      const call = await plane.next();
      call.fail(code, details);
      await assert.rejects(
        within(subscribing, "subscribe"),
        (error: unknown) => error instanceof errorClass && error.grpcCode === code && error.message.includes(details),
      );
    }
  });

  it("rejects with UnavailableError when the stream ends before it is live", async () => {
    const subscribing = client.subscribe("news");
    const call = await plane.next();
    call.end();
    await assert.rejects(
      within(subscribing, "subscribe"),
      (error: unknown) => error instanceof UnavailableError && /ended before it started/.test(error.message),
    );
  });

  it("refuses a stream whose first response is a message, and cancels it", async () => {
    const subscribing = client.subscribe("news");
    const call = await plane.next();
    call.message({ messageId: "early", data: 1 });
    await assert.rejects(
      within(subscribing, "subscribe"),
      (error: unknown) => error instanceof TypeError && /without confirming the subscription/.test(error.message),
    );
    await within(call.cancelled, "the cancellation");
  });

  it("rejects with UnavailableError when no control plane listens", async () => {
    const nowhere = new MeshClient(`127.0.0.1:${await freePort()}`);
    try {
      await assert.rejects(within(nowhere.subscribe("news"), "subscribe"), UnavailableError);
    } finally {
      nowhere.close();
    }
  });

  it("throws the mapped error from the loop when the stream fails once live, after the earlier messages", async () => {
    const { sub, call } = await live(client, plane);
    call.message({ messageId: "m1", data: 1 });
    call.message({ messageId: "m2", data: 2 });
    call.fail(status.UNAVAILABLE, "replica going away");
    const seen: string[] = [];
    await assert.rejects(
      within(
        (async () => {
          for await (const message of sub) {
            seen.push(message.messageId);
          }
        })(),
        "the loop's end",
      ),
      (error: unknown) => error instanceof UnavailableError && error.message.includes("replica going away"),
    );
    assert.deepEqual(seen, ["m1", "m2"]);
    assert.equal(sub.closed, true);
  });

  it("ends the loop when the control plane ends the stream", async () => {
    const { sub, call } = await live(client, plane);
    call.message({ messageId: "m1", data: 1 });
    call.end();
    const seen: string[] = [];
    await within(
      (async () => {
        for await (const message of sub) {
          seen.push(message.messageId);
        }
      })(),
      "the loop's end",
    );
    assert.deepEqual(seen, ["m1"]);
    assert.equal(sub.closed, true);
  });

  it("throws from the loop, and cancels, on a message whose JSON does not parse", async () => {
    const { sub, call } = await live(client, plane);
    call.message({
      messageId: "bad",
      payload: { kind: { $case: "data", data: Buffer.from("{not json") }, contentType: "application/json" },
    });
    await assert.rejects(
      (async () => {
        for await (const _ of sub) {
          assert.fail("yielded a message that does not parse");
        }
      })(),
      (error: unknown) => error instanceof MeshplaneError && /not valid JSON/.test(error.message),
    );
    await within(call.cancelled, "the cancellation");
  });
});
