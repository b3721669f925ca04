// Another agent registered this agent's instance id: the plane replaces the session with an ALREADY_EXISTS `error`
// frame on register.instance_id, and the agent stops instead of reconnecting (which would replace the other agent in
// turn, and both would flap for good). Against an in-process fake plane; the real plane: tests/conformance
// (test_instance_id.py).
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";

import { Server, type ServerDuplexStream } from "@grpc/grpc-js";

import {
  AgentLinkServiceService,
  type Assignment,
  type ConnectRequest,
  type ConnectResponse,
} from "../../../generated/ts/meshplane/v1/agent_link";
import { Agent } from "../src/agent";
import { InstanceIdTakenError } from "../src/errors";
import { encodePayload } from "../src/payload";
import { bindLocal, within } from "./support";

type LinkCall = ServerDuplexStream<ConnectRequest, ConnectResponse>;

const INSTANCE_ID = "twin-1";
const TAKEN_MESSAGE = `replaced by a newer session of instance ${INSTANCE_ID}: two agents share this instance_id`;

function instanceTaken(fatal: boolean): ConnectResponse {
  return {
    frame: { $case: "error", error: { code: 6, message: TAKEN_MESSAGE, field: "register.instance_id", fatal } },
  };
}

/** A plane whose every stream gets `play(call)` once the agent registers; it keeps what the agents write. */
class ScriptedPlane {
  readonly streams: LinkCall[] = [];
  readonly written: ConnectRequest[] = [];
  address = "";
  private readonly server = new Server();

  constructor(private readonly play: (call: LinkCall) => void) {}

  async start(): Promise<this> {
    const connect = (call: LinkCall): void => {
      this.streams.push(call);
      call.on("error", () => undefined);
      call.on("end", () => call.end());
      call.on("data", (frame: ConnectRequest) => this.written.push(frame));
      call.once("data", () => this.play(call));
    };
    this.server.addService(AgentLinkServiceService, { connect });
    this.address = await bindLocal(this.server);
    return this;
  }

  results(): number {
    return this.written.filter((frame) => frame.frame?.$case === "taskResults").length;
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

function holdAssignment(): Assignment {
  return {
    taskId: "t1",
    attempt: 1,
    capability: "twin.hold",
    input: encodePayload({}),
    priority: 0,
    correlationId: "",
    metadata: {},
    deadline: undefined,
    heartbeatTimeout: undefined,
    maxAttempts: 3,
    traceparent: "",
    tracestate: "",
  };
}

function registered(call: LinkCall): void {
  call.write({
    frame: {
      $case: "registered",
      registered: {
        sessionId: "s-1",
        heartbeatInterval: { seconds: 1, nanos: 0 },
        leaseTimeout: { seconds: 5, nanos: 0 },
        replicaId: "fake",
        keptTasks: [],
        maxPayloadBytes: 1 << 20,
      },
    },
  });
}

const planes: ScriptedPlane[] = [];
const agents: Agent[] = [];

afterEach(async () => {
  for (const agent of agents.splice(0)) {
    await agent.stop({ timeoutMs: 1_000 });
  }
  for (const plane of planes.splice(0)) {
    plane.stop();
  }
});

async function plane(play: (call: LinkCall) => void): Promise<ScriptedPlane> {
  const started = await new ScriptedPlane(play).start();
  planes.push(started);
  return started;
}

function twin(): { agent: Agent; handlerStarted: Promise<void>; handlerCancelled: Promise<string> } {
  let started!: () => void;
  let cancelled!: (reason: string) => void;
  const handlerStarted = new Promise<void>((resolve) => (started = resolve));
  const handlerCancelled = new Promise<string>((resolve) => (cancelled = resolve));
  const agent = new Agent({
    name: "twin",
    instanceId: INSTANCE_ID,
    logger: "silent",
    reconnect: { initialDelayMs: 10, maxDelayMs: 50 },
  }).task("twin.hold", async (ctx) => {
    started();
    await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
    cancelled(ctx.cancelReason ?? "");
    return { late: true };
  });
  agents.push(agent);
  return { agent, handlerStarted, handlerCancelled };
}

async function rejectsWithInstanceTaken(running: Promise<void>): Promise<void> {
  await within(
    assert.rejects(running, (error: unknown) => {
      if (!(error instanceof InstanceIdTakenError)) {
        assert.fail(`run() rejected with ${String(error)}`);
      }
      assert.equal(error.instanceId, INSTANCE_ID);
      assert.equal(error.planeMessage, TAKEN_MESSAGE);
      assert.equal(error.message, `instance_id "${INSTANCE_ID}" is taken by another agent: ${TAKEN_MESSAGE}`);
      return true;
    }),
    "run() rejected",
  );
}

describe("an agent whose instance id another agent registered", () => {
  for (const fatal of [true, false]) {
    // Older planes sent the frame with fatal false.
    it(`stops instead of reconnecting, sending nothing more (fatal ${fatal})`, async () => {
      const { agent, handlerStarted, handlerCancelled } = twin();
      const fake = await plane((call) => {
        registered(call);
        call.write({ frame: { $case: "assignments", assignments: { assignments: [holdAssignment()] } } });
        void handlerStarted.then(() => {
          // Another error frame (a failed publish) is no reason to stop.
          call.write({ frame: { $case: "error", error: { code: 8, message: "too large", field: "publish", fatal: false } } });
          call.write(instanceTaken(fatal));
          call.end(); // the plane closes the stream right after the frame
        });
      });
      const running = agent.run(fake.address);
      await rejectsWithInstanceTaken(running);
      assert.equal(await within(handlerCancelled, "the handler cancelled"), "agent_stopped");
      assert.equal(fake.streams.length, 1, "the agent reconnected");
      assert.equal(fake.results(), 0, "the stopped agent sent a result");
      assert.equal(agent.status, "stopped");
    });
  }

  it("stops when the session is replaced while it registers", async () => {
    const { agent } = twin();
    const fake = await plane((call) => {
      call.write(instanceTaken(true)); // the first frame: another agent registered the id meanwhile
      call.end();
    });
    await rejectsWithInstanceTaken(agent.run(fake.address));
    assert.equal(fake.streams.length, 1, "the agent reconnected");
  });
});
