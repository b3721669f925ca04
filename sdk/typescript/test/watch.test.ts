// MeshClient.watch and wait against an in-process fake TaskService (a grpc-js server whose WatchTask calls the
// tests drive by hand, and whose GetTask answers a scripted task): what a watch yields, and how it ends — the
// stream ending, the signal aborting, and the client's close() (grpc-js does not end a live stream when its
// channel closes, so the client has to), which also ends a wait() and refuses watches started afterwards.
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";

import {
  type sendUnaryData,
  type Server,
  type ServerUnaryCall,
  type ServerWritableStream,
  status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";

import { Task, TaskEvent as TaskEventProto, TaskEventType, TaskState } from "../../../generated/ts/meshplane/v1/task";
import {
  type GetTaskRequest,
  type GetTaskResponse,
  TaskServiceService,
  type WatchTaskRequest,
  type WatchTaskResponse,
} from "../../../generated/ts/meshplane/v1/task_service";
import { MeshClient } from "../src/client";
import { NotFoundError, UnavailableError } from "../src/errors";
import type { TaskEvent } from "../src/types";
import { serve, StreamCall, StreamingFake, within } from "./support";

/** One WatchTask call as the server sees it; the test says what it sends. It stays open until told. */
class Incoming extends StreamCall<WatchTaskRequest, WatchTaskResponse> {
  event(sequence: number, state = TaskState.TASK_STATE_RUNNING, type = TaskEventType.TASK_EVENT_TYPE_STARTED): void {
    const event = TaskEventProto.fromPartial({ taskId: this.request.taskId, sequence, type, state });
    this.stream.write({ event });
  }
}

/** A TaskService whose WatchTask calls queue up for the test, and whose GetTask answers `task`. */
class FakeTasks extends StreamingFake<Incoming> {
  protected readonly what = "a WatchTask call";
  /** The GetTask requests so far. */
  readonly gets: GetTaskRequest[] = [];
  /** What GetTask answers (NOT_FOUND when unset). */
  task: Task | undefined;

  protected addServices(server: Server): void {
    const implementation: UntypedServiceImplementation = {
      watchTask: (stream: ServerWritableStream<WatchTaskRequest, WatchTaskResponse>): void =>
        this.arrive(new Incoming(stream)),
      getTask: (call: ServerUnaryCall<GetTaskRequest, GetTaskResponse>, callback: sendUnaryData<GetTaskResponse>) => {
        this.gets.push(call.request);
        if (this.task === undefined) {
          callback({ code: status.NOT_FOUND, details: `task ${call.request.taskId} not found` }, null);
        } else {
          callback(null, { task: this.task });
        }
      },
    };
    server.addService(TaskServiceService, implementation);
  }

  /** Ends every call still open and forgets the gets and the task (between tests). */
  override reset(): void {
    super.reset();
    this.gets.length = 0;
    this.task = undefined;
  }
}

/** A `for await` loop over `events`, run in the background: what it saw so far, and its end. */
class Loop {
  readonly seen: TaskEvent[] = [];
  /** Settles when the loop ends: resolves if it ended, rejects with what it threw. */
  readonly done: Promise<void>;
  private wake: (() => void) | undefined;

  constructor(events: AsyncIterable<TaskEvent>) {
    this.done = (async () => {
      for await (const event of events) {
        this.seen.push(event);
        this.wake?.();
      }
    })();
    this.done.catch(() => undefined); // the test looks at it; not an unhandled rejection meanwhile
  }

  /** Resolves once the loop saw `count` events (it is then waiting for the next). */
  saw(count: number): Promise<void> {
    const until = async (): Promise<void> => {
      while (this.seen.length < count) {
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    };
    return within(until(), `${count} events`);
  }

  /** The sequence numbers seen. */
  get sequences(): number[] {
    return this.seen.map((e) => e.sequence);
  }
}

describe("MeshClient.watch and wait", () => {
  const plane = new FakeTasks();
  let client: MeshClient;
  /** A client of its own, to close in the test. */
  const fresh = (): MeshClient => new MeshClient(plane.address, { timeoutMs: 5_000 });

  serve(plane, () => (client = fresh()));
  afterEach(() => plane.reset());

  // ------------------------------------------------------------ the stream

  it("sends the task id and sequence, yields the events converted, and ends when the stream ends", async () => {
    const loop = new Loop(client.watch("t-1", { afterSequence: 2 }));
    const call = await plane.next();
    assert.deepEqual(call.request, { taskId: "t-1", afterSequence: 2 });
    call.event(3, TaskState.TASK_STATE_RUNNING, TaskEventType.TASK_EVENT_TYPE_PROGRESS);
    call.event(4, TaskState.TASK_STATE_SUCCEEDED, TaskEventType.TASK_EVENT_TYPE_SUCCEEDED);
    call.end();
    await within(loop.done, "the loop's end");
    assert.deepEqual(
      loop.seen.map((e) => [e.taskId, e.sequence, e.type, e.state]),
      [
        ["t-1", 3, "PROGRESS", "RUNNING"],
        ["t-1", 4, "SUCCEEDED", "SUCCEEDED"],
      ],
    );
  });

  it("throws the mapped error when the stream fails, after the events before it", async () => {
    const loop = new Loop(client.watch("t-1"));
    const call = await plane.next();
    call.event(1);
    call.fail(status.NOT_FOUND, "task t-1 not found");
    await assert.rejects(within(loop.done, "the loop's end"), NotFoundError);
    assert.deepEqual(loop.sequences, [1]);
  });

  // ------------------------------------------------------------ close()

  it("close() ends a live watch (the stream still open) without error, and cancels its stream", async () => {
    const other = fresh();
    const loop = new Loop(other.watch("t-1"));
    const call = await plane.next();
    call.event(1);
    await loop.saw(1); // the loop waits for the next event; the server keeps the stream open

    other.close();
    await within(loop.done, "the loop's end"); // resolves: ended, not thrown
    await within(call.cancelled, "the cancellation");
    assert.deepEqual(loop.sequences, [1]);
    other.close(); // idempotent
  });

  it("close() ends every live watch: waiting for an event, with no answer yet, paused between events", async () => {
    const other = fresh();
    const waiting = new Loop(other.watch("t-1"));
    const first = await plane.next();
    first.event(1);
    await waiting.saw(1);

    const unanswered = new Loop(other.watch("t-2"));
    const second = await plane.next(); // nothing sent on it

    // Driven by hand: it has taken an event and is not asking for the next one when the client closes.
    const paused = other.watch("t-3");
    const taking = paused.next();
    const third = await plane.next();
    third.event(7);
    assert.equal((await within(taking, "the first event")).value?.sequence, 7);

    other.close();
    await within(waiting.done, "the waiting loop's end");
    await within(unanswered.done, "the unanswered loop's end");
    assert.deepEqual(await within(paused.next(), "the paused watch's next"), { done: true, value: undefined });
    await within(Promise.all([first.cancelled, second.cancelled, third.cancelled]), "the cancellations");
    assert.deepEqual([waiting.sequences, unanswered.sequences], [[1], []]);
  });

  it("a watch started after close() rejects with UnavailableError at once, without a call", async () => {
    const other = fresh();
    other.close();
    const iterator = other.watch("t-1");
    await assert.rejects(
      within(iterator.next(), "the first next"),
      (error: unknown) => error instanceof UnavailableError && /client is closed/.test(error.message),
    );
    assert.equal(plane.calls.length, 0);
  });

  // ------------------------------------------------------------ the signal

  it("the signal aborting cancels the stream; the loop throws its reason", async () => {
    const controller = new AbortController();
    const loop = new Loop(client.watch("t-1", { signal: controller.signal }));
    const call = await plane.next();
    call.event(1);
    await loop.saw(1);
    const reason = new Error("enough");
    controller.abort(reason);
    await assert.rejects(within(loop.done, "the loop's end"), (error: unknown) => error === reason);
    await within(call.cancelled, "the cancellation");
    assert.deepEqual(loop.sequences, [1]);
  });

  it("an already aborted signal throws its reason at once, without a call", async () => {
    const reason = new Error("already");
    const iterator = client.watch("t-1", { signal: AbortSignal.abort(reason) });
    await assert.rejects(within(iterator.next(), "the first next"), (error: unknown) => error === reason);
    assert.equal(plane.calls.length, 0);
  });

  it("whichever comes first wins: aborted then closed throws the reason; closed then aborted just ends", async () => {
    for (const abortFirst of [true, false]) {
      const other = fresh();
      const controller = new AbortController();
      const reason = new Error("aborted");
      const loop = new Loop(other.watch("t-1", { signal: controller.signal }));
      const call = await plane.next();
      call.event(1);
      await loop.saw(1);
      if (abortFirst) {
        controller.abort(reason);
        other.close();
        await assert.rejects(within(loop.done, "the loop's end"), (error: unknown) => error === reason);
      } else {
        other.close();
        controller.abort(reason);
        await within(loop.done, "the loop's end");
      }
      await within(call.cancelled, "the cancellation");
    }
  });

  // ------------------------------------------------------------ wait

  it("wait() resolves to the task once its terminal event arrives", async () => {
    plane.task = Task.fromPartial({
      id: "t-1",
      target: { capability: "greet" },
      state: TaskState.TASK_STATE_SUCCEEDED,
    });
    const waiting = client.wait("t-1");
    const call = await plane.next();
    call.event(1);
    call.event(2, TaskState.TASK_STATE_SUCCEEDED, TaskEventType.TASK_EVENT_TYPE_SUCCEEDED);
    const task = await within(waiting, "wait");
    assert.equal(task.id, "t-1");
    assert.equal(task.state, "SUCCEEDED");
    assert.deepEqual(plane.gets, [{ taskId: "t-1" }]);
  });

  it("close() during wait() rejects it with UnavailableError, without another watch or a get", async () => {
    const other = fresh();
    const waiting = other.wait("t-1");
    waiting.catch(() => undefined); // looked at below
    const call = await plane.next();
    call.event(1); // not terminal: the wait goes on watching
    other.close();
    await assert.rejects(
      within(waiting, "wait"),
      (error: unknown) => error instanceof UnavailableError && /client is closed/.test(error.message),
    );
    await within(call.cancelled, "the cancellation");
    assert.equal(plane.calls.length, 1, "no watch after close()");
    assert.equal(plane.gets.length, 0, "no GetTask after close()");
  });

  it("close() while wait() pauses after a failed watch rejects it with UnavailableError, no other watch", async () => {
    const other = fresh();
    const waiting = other.wait("t-1");
    waiting.catch(() => undefined);
    const call = await plane.next();
    call.fail(status.UNAVAILABLE, "control plane restarting"); // the wait pauses, then watches again
    // A call answered on the same connection after the failure: the wait has most likely begun its pause.
    await assert.rejects(within(other.get("t-0"), "get"), NotFoundError);
    other.close();
    await assert.rejects(within(waiting, "wait"), UnavailableError);
    assert.equal(plane.calls.length, 1, "no watch after close()");
  });

  it("wait() on a closed client rejects with UnavailableError at once", async () => {
    const other = fresh();
    other.close();
    await assert.rejects(within(other.wait("t-1"), "wait"), UnavailableError);
    assert.equal(plane.calls.length, 0);
  });
});
