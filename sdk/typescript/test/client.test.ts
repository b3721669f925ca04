// MeshClient's batch submit and listings against an in-process fake control plane (a grpc-js server with
// scripted TaskService, AgentService, ChannelService and AuditService answers): the requests it sends, the pages
// it follows, what it converts and the errors it maps.
import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";

import {
  type sendUnaryData,
  Server,
  type ServerUnaryCall,
  status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";

import {
  type Agent,
  type AgentInstance,
  AgentInstanceStatus,
  AgentStatus,
} from "../../../generated/ts/meshplane/v1/agent";
import {
  AgentServiceService,
  type DrainAgentInstanceRequest,
  type GetAgentRequest,
  type ListAgentInstancesRequest,
  type ListAgentsRequest,
} from "../../../generated/ts/meshplane/v1/agent_service";
import {
  type AuditEntry as AuditEntryProto,
  AuditServiceService,
  type ListAuditEntriesRequest,
} from "../../../generated/ts/meshplane/v1/audit";
import {
  type Channel,
  ChannelServiceService,
  type ListChannelsRequest,
} from "../../../generated/ts/meshplane/v1/channel";
import { Task, TaskState } from "../../../generated/ts/meshplane/v1/task";
import {
  type BatchSubmitTasksRequest,
  type ListTasksRequest,
  type SubmitTaskRequest,
  TaskServiceService,
} from "../../../generated/ts/meshplane/v1/task_service";
import { MeshClient, type SubmitResult, type TaskSubmission } from "../src/client";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnavailableError,
} from "../src/errors";
import type { AuditEntry, AuditFilter, ChannelInfo } from "../src/index";
import { decodePayload } from "../src/payload";
import { SchedulingStrategy } from "../src/proto";
import type { InstanceInfo, TaskInfo } from "../src/types";
import { bindLocal, serve } from "./support";

/** A request of a batch, its nested messages known to be there. */
type Sent = SubmitTaskRequest & Required<Pick<SubmitTaskRequest, "target" | "retryPolicy" | "timeouts">>;

/** What a scripted method answers: a response, or a gRPC status error. */
type Answer = object | { code: number; details: string };
type Script = (request: unknown) => Answer;

const MAX_CALLS = 20;

/** A TaskService, AgentService, ChannelService and AuditService that record every request and answer from scripts. */
class FakePlane {
  private readonly requests = new Map<string, unknown[]>();
  private readonly scripts = new Map<string, Script>();
  private readonly server = new Server();
  address = "";

  async start(): Promise<void> {
    const implementation = (names: string[]): UntypedServiceImplementation =>
      Object.fromEntries(
        names.map((name) => [
          name,
          (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>): void => {
            const calls = this.calls(name);
            calls.push(call.request);
            const script = this.scripts.get(name);
            const answer: Answer =
              calls.length > MAX_CALLS // a client that never stops paging fails instead of hanging
                ? { code: status.RESOURCE_EXHAUSTED, details: `more than ${MAX_CALLS} ${name} calls` }
                : script
                  ? script(call.request)
                  : { code: status.UNIMPLEMENTED, details: name };
            if ("code" in answer && typeof answer.code === "number") {
              callback(answer as { code: number; details: string }, null);
            } else {
              callback(null, answer);
            }
          },
        ]),
      );
    this.server.addService(TaskServiceService, implementation(["batchSubmitTasks", "listTasks"]));
    this.server.addService(
      AgentServiceService,
      implementation(["listAgents", "getAgent", "listAgentInstances", "drainAgentInstance"]),
    );
    this.server.addService(ChannelServiceService, implementation(["listChannels"]));
    this.server.addService(AuditServiceService, implementation(["listAuditEntries"]));
    this.address = await bindLocal(this.server);
  }

  /** Scripts `method` (the generated client's camelCase name). */
  on<Req>(method: string, script: (request: Req) => Answer): void {
    this.scripts.set(method, script as Script);
  }

  /** The requests `method` received, in order. */
  calls<Req = unknown>(method: string): Req[] {
    let list = this.requests.get(method);
    if (list === undefined) {
      list = [];
      this.requests.set(method, list);
    }
    return list as Req[];
  }

  reset(): void {
    this.requests.clear();
    this.scripts.clear();
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

/** Pages of `items` of `size`, keyed by the token that asks for each ("" the first, then "p1", "p2", ...). */
function paged<T>(items: readonly T[], size: number): Map<string, { items: T[]; next: string }> {
  const pages = new Map<string, { items: T[]; next: string }>();
  for (let start = 0, index = 0; start < items.length || index === 0; start += size, index++) {
    const next = start + size < items.length ? `p${index + 1}` : "";
    pages.set(index === 0 ? "" : `p${index}`, { items: items.slice(start, start + size), next });
  }
  return pages;
}

function page<T>(pages: Map<string, { items: T[]; next: string }>, token: string): { items: T[]; next: string } {
  const found = pages.get(token);
  assert.ok(found, `no page for token ${JSON.stringify(token)}`);
  return found;
}

function protoTask(id: string, extra: Partial<Task> = {}): Task {
  return Task.fromPartial({
    id,
    target: { capability: "greet" },
    state: TaskState.TASK_STATE_SUCCEEDED,
    correlationId: "c-1",
    ...extra,
  });
}

const UPDATED = new Date("2026-01-02T03:04:05.678Z");
const CREATED = new Date("2025-12-24T10:00:00.001Z");

/** A used channel: created CREATED, last used UPDATED (no times at all unless `timed`). */
function protoChannel(name: string, timed = true): Channel {
  return { name, createTime: timed ? CREATED : undefined, lastUseTime: timed ? UPDATED : undefined };
}

function protoEntry(id: number): AuditEntryProto {
  return {
    id,
    time: undefined,
    actor: "client/anonymous",
    action: "state.put",
    resource: `namespaces/n/states/k${id}`,
    correlationId: "",
    details: {},
  };
}

/** An audit trail of `n` entries, newest (highest id) first. */
function trail(n: number): AuditEntryProto[] {
  return Array.from({ length: n }, (_, index) => protoEntry(n - index));
}

function protoAgent(name: string): Agent {
  return {
    name,
    version: "1.2.3",
    description: `the ${name} agent`,
    capabilities: [
      { name: `${name}.one`, description: "first", inputSchema: { type: "object" }, outputSchema: undefined },
      { name: `${name}.two`, description: "", inputSchema: undefined, outputSchema: undefined },
    ],
    labels: { lang: "typescript" },
    status: AgentStatus.AGENT_STATUS_ONLINE,
    connectedInstances: 2,
    createTime: undefined,
    updateTime: UPDATED,
  };
}

function protoInstance(agentName: string, instanceId: string, extra: Partial<AgentInstance> = {}): AgentInstance {
  return {
    instanceId,
    agentName,
    version: "1.2.3",
    sessionId: `s-${instanceId}`,
    status: AgentInstanceStatus.AGENT_INSTANCE_STATUS_CONNECTED,
    sdk: { language: "typescript", version: "0.1.0" },
    node: "host-1",
    pid: 4242,
    labels: { lang: "go" },
    capabilities: ["a.one", "a.two"],
    maxConcurrency: 8,
    inFlight: 3,
    load: 0.25,
    weight: 1,
    replicaId: "r-1",
    connectTime: UPDATED,
    lastSeenTime: UPDATED,
    disconnectTime: undefined,
    ...extra,
  };
}

/** What the client makes of `protoInstance(agentName, instanceId)`, with `extra` changed. */
function instanceInfo(agentName: string, instanceId: string, extra: Partial<InstanceInfo> = {}): InstanceInfo {
  return {
    instanceId,
    agentName,
    version: "1.2.3",
    status: "CONNECTED",
    sessionId: `s-${instanceId}`,
    capabilities: ["a.one", "a.two"],
    maxConcurrency: 8,
    inFlight: 3,
    load: 0.25,
    labels: { lang: "go" },
    sdk: "typescript 0.1.0",
    node: "host-1",
    pid: 4242,
    connectTime: UPDATED,
    lastSeenTime: UPDATED,
    ...extra,
  };
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) {
    out.push(item);
  }
  return out;
}

describe("MeshClient listings and batches", () => {
  const plane = new FakePlane();
  let client: MeshClient;

  serve(plane, (address) => (client = new MeshClient(address, { timeoutMs: 5_000 })));
  beforeEach(() => plane.reset());

  // ------------------------------------------------------------ submitMany

  describe("submitMany", () => {
    it("sends every task with its own options in one BatchSubmitTasks call; results in request order", async () => {
      plane.on("batchSubmitTasks", (request: BatchSubmitTasksRequest) => ({
        tasks: request.requests.map((_, index) =>
          protoTask(`t-${index}`, { state: TaskState.TASK_STATE_QUEUED, priority: index }),
        ),
        deduplicated: request.requests.map((_, index) => index === 1),
      }));
      const submissions: TaskSubmission[] = [
        { capability: "greet", input: { name: "Ada" } },
        {
          capability: "greet",
          input: { name: "Alan" },
          options: {
            priority: 7,
            idempotencyKey: "k-2",
            correlationId: "c-2",
            metadata: { m: "2" },
            labelSelector: { lang: "go" },
            agentName: "greeter",
            routingKey: "r",
            strategy: "consistent_hash",
            maxAttempts: 4,
            nonRetryableErrorCodes: ["Fatal"],
            startToCloseMs: 1500,
          },
        },
        { capability: "count", input: new Uint8Array([1, 2, 3]), options: { correlationId: "c-3" } },
      ];
      const results: SubmitResult[] = await client.submitMany(submissions);

      const calls = plane.calls<BatchSubmitTasksRequest>("batchSubmitTasks");
      assert.equal(calls.length, 1, "one call for the whole batch");
      const sent = calls[0]!.requests;
      assert.equal(sent.length, 3);
      assert.deepEqual(
        sent.map((r) => {
          const input = decodePayload(r.input);
          return [r.target?.capability, input instanceof Uint8Array ? [...input] : input];
        }),
        [
          ["greet", { name: "Ada" }],
          ["greet", { name: "Alan" }],
          ["count", [1, 2, 3]],
        ],
      );
      const [first, second, third] = [0, 1, 2].map((index) => {
        const request = sent[index];
        assert.ok(request?.target && request.retryPolicy && request.timeouts);
        return { ...request, target: request.target, retryPolicy: request.retryPolicy, timeouts: request.timeouts };
      }) as [Sent, Sent, Sent];
      // The first carries no options: defaults.
      assert.equal(first.priority, 0);
      assert.equal(first.correlationId, "");
      assert.deepEqual(first.target.labelSelector, {});
      assert.equal(first.retryPolicy.maxAttempts, 0);
      // The second carries all of its own.
      assert.equal(second.priority, 7);
      assert.equal(second.idempotencyKey, "k-2");
      assert.equal(second.correlationId, "c-2");
      assert.deepEqual(second.metadata, { m: "2" });
      assert.deepEqual(second.target.labelSelector, { lang: "go" });
      assert.equal(second.target.agentName, "greeter");
      assert.equal(second.target.routingKey, "r");
      assert.equal(second.target.strategy, SchedulingStrategy.SCHEDULING_STRATEGY_CONSISTENT_HASH);
      assert.equal(second.retryPolicy.maxAttempts, 4);
      assert.deepEqual(second.retryPolicy.nonRetryableErrorCodes, ["Fatal"]);
      assert.deepEqual(second.timeouts.startToClose, { seconds: 1, nanos: 500_000_000 });
      // The third only its correlation id.
      assert.equal(third.correlationId, "c-3");
      assert.equal(third.priority, 0);
      assert.equal(third.idempotencyKey, "");

      assert.deepEqual(
        results.map((r) => [r.id, r.state, r.priority, r.capability, r.deduplicated]),
        [
          ["t-0", "QUEUED", 0, "greet", false],
          ["t-1", "QUEUED", 1, "greet", true],
          ["t-2", "QUEUED", 2, "greet", false],
        ],
      );
    });

    it("rejects the whole batch with the mapped error", async () => {
      plane.on("batchSubmitTasks", () => ({
        code: status.INVALID_ARGUMENT,
        details: "requests[1].target.capability: is required",
      }));
      await assert.rejects(
        client.submitMany([{ capability: "greet" }, { capability: "" }]),
        (error: unknown) => error instanceof InvalidArgumentError && error.code === "INVALID_ARGUMENT",
      );
      assert.equal(plane.calls("batchSubmitTasks").length, 1);
    });

    it("refuses an answer that does not match the batch", async () => {
      plane.on("batchSubmitTasks", () => ({ tasks: [protoTask("t-0")], deduplicated: [false] }));
      await assert.rejects(
        client.submitMany([{ capability: "greet" }, { capability: "greet" }]),
        (error: unknown) => error instanceof TypeError && /1 tasks for 2 requests/.test(error.message),
      );
    });
  });

  // ------------------------------------------------------------ tasks

  describe("listTasksPage and listTasks", () => {
    it("sends the filter and the page options; returns the page and its next token", async () => {
      plane.on("listTasks", () => ({
        tasks: [protoTask("t-2", { attempt: 1 }), protoTask("t-1")],
        nextPageToken: "next-1",
      }));
      const page = await client.listTasksPage(
        { state: "SUCCEEDED", capability: "greet", correlationId: "c-1" },
        { pageSize: 2, pageToken: "tok" },
      );
      assert.deepEqual(plane.calls<ListTasksRequest>("listTasks"), [
        {
          pageSize: 2,
          pageToken: "tok",
          state: TaskState.TASK_STATE_SUCCEEDED,
          capability: "greet",
          correlationId: "c-1",
        },
      ]);
      assert.equal(page.nextPageToken, "next-1");
      assert.deepEqual(
        page.items.map((t: TaskInfo) => [t.id, t.state, t.capability, t.correlationId, t.attempt]),
        [
          ["t-2", "SUCCEEDED", "greet", "c-1", 1],
          ["t-1", "SUCCEEDED", "greet", "c-1", 0],
        ],
      );
    });

    it("sends no filter by default", async () => {
      plane.on("listTasks", () => ({ tasks: [], nextPageToken: "" }));
      const page = await client.listTasksPage();
      assert.deepEqual(page, { items: [], nextPageToken: "" });
      assert.deepEqual(plane.calls<ListTasksRequest>("listTasks"), [
        { pageSize: 0, pageToken: "", state: TaskState.TASK_STATE_UNSPECIFIED, capability: "", correlationId: "" },
      ]);
    });

    it("maps every task state of the filter", async () => {
      plane.on("listTasks", () => ({ tasks: [], nextPageToken: "" }));
      const states = ["QUEUED", "ASSIGNED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "DEAD_LETTER"];
      for (const state of states) {
        await client.listTasksPage({ state: state as TaskInfo["state"] });
      }
      assert.deepEqual(
        plane.calls<ListTasksRequest>("listTasks").map((r) => r.state),
        [1, 2, 3, 4, 5, 6, 7, 8],
      );
    });

    it("refuses an unknown state before any call", async () => {
      for (const state of ["queued", "DONE", ""]) {
        await assert.rejects(
          client.listTasksPage({ state: state as TaskInfo["state"] }),
          (error: unknown) => error instanceof RangeError && error.message.includes("unknown task state"),
        );
      }
      assert.equal(plane.calls<ListTasksRequest>("listTasks").length, 0);
    });

    it("follows every page, sending each next-page token back with the same filter", async () => {
      const tasks = ["t-5", "t-4", "t-3", "t-2", "t-1"].map((id) => protoTask(id));
      const pages = paged(tasks, 2);
      plane.on("listTasks", (request: ListTasksRequest) => {
        const { items, next } = page(pages, request.pageToken);
        return { tasks: items, nextPageToken: next };
      });
      const listed = await collect(client.listTasks({ capability: "greet", state: "SUCCEEDED" }, { pageSize: 2 }));
      assert.deepEqual(
        listed.map((t) => t.id),
        ["t-5", "t-4", "t-3", "t-2", "t-1"],
      );
      const calls = plane.calls<ListTasksRequest>("listTasks");
      assert.deepEqual(
        calls.map((r) => r.pageToken),
        ["", "p1", "p2"],
      );
      for (const request of calls) {
        assert.equal(request.pageSize, 2);
        assert.equal(request.capability, "greet");
        assert.equal(request.state, TaskState.TASK_STATE_SUCCEEDED);
      }
    });

    it("fetches no further page once the loop is left", async () => {
      const pages = paged(["t-3", "t-2", "t-1"].map((id) => protoTask(id)), 1);
      plane.on("listTasks", (request: ListTasksRequest) => {
        const { items, next } = page(pages, request.pageToken);
        return { tasks: items, nextPageToken: next };
      });
      const seen: string[] = [];
      for await (const task of client.listTasks()) {
        seen.push(task.id);
        if (seen.length === 2) {
          break;
        }
      }
      assert.deepEqual(seen, ["t-3", "t-2"]);
      assert.deepEqual(
        plane.calls<ListTasksRequest>("listTasks").map((r) => r.pageToken),
        ["", "p1"],
      );
    });

    it("maps a failure on a later page", async () => {
      plane.on("listTasks", (request: ListTasksRequest) =>
        request.pageToken === ""
          ? { tasks: [protoTask("t-1")], nextPageToken: "p1" }
          : { code: status.UNAVAILABLE, details: "shutting down" },
      );
      const seen: string[] = [];
      await assert.rejects(
        (async () => {
          for await (const task of client.listTasks()) {
            seen.push(task.id);
          }
        })(),
        (error: unknown) => error instanceof UnavailableError && error.message.includes("shutting down"),
      );
      assert.deepEqual(seen, ["t-1"]);
    });
  });

  // ------------------------------------------------------------ agents

  describe("listAgents, listAgentsPage and getAgent", () => {
    it("follows every page of agents with the largest page size and the capability filter", async () => {
      const pages = paged(["a", "b", "c"].map(protoAgent), 2);
      plane.on("listAgents", (request: ListAgentsRequest) => {
        const { items, next } = page(pages, request.pageToken);
        return { agents: items, nextPageToken: next };
      });
      const agents = await client.listAgents({ capability: "a.one" });
      assert.deepEqual(
        agents.map((a) => a.name),
        ["a", "b", "c"],
      );
      assert.deepEqual(plane.calls<ListAgentsRequest>("listAgents"), [
        { capability: "a.one", pageSize: 1000, pageToken: "" },
        { capability: "a.one", pageSize: 1000, pageToken: "p1" },
      ]);
      assert.deepEqual(agents[0], {
        name: "a",
        version: "1.2.3",
        description: "the a agent",
        status: "ONLINE",
        connectedInstances: 2,
        capabilities: [
          { name: "a.one", description: "first", inputSchema: { type: "object" }, outputSchema: undefined },
          { name: "a.two", description: "", inputSchema: undefined, outputSchema: undefined },
        ],
        labels: { lang: "typescript" },
        updateTime: UPDATED,
      });
    });

    it("strips the status prefix of every agent status", async () => {
      const statuses = [
        AgentStatus.AGENT_STATUS_ONLINE,
        AgentStatus.AGENT_STATUS_DRAINING,
        AgentStatus.AGENT_STATUS_OFFLINE,
        AgentStatus.AGENT_STATUS_UNSPECIFIED,
      ];
      plane.on("listAgents", () => ({
        agents: statuses.map((s, index) => ({ ...protoAgent(`a${index}`), status: s })),
        nextPageToken: "",
      }));
      const agents = await client.listAgents();
      assert.deepEqual(
        agents.map((a) => a.status),
        ["ONLINE", "DRAINING", "OFFLINE", "UNSPECIFIED"],
      );
      assert.deepEqual(plane.calls<ListAgentsRequest>("listAgents"), [
        { capability: "", pageSize: 1000, pageToken: "" },
      ]);
    });

    it("lists one page at a time", async () => {
      plane.on("listAgents", () => ({ agents: [protoAgent("b")], nextPageToken: "after-b" }));
      const page1 = await client.listAgentsPage({ pageSize: 1, pageToken: "after-a" });
      assert.deepEqual(
        [page1.items.map((a) => a.name), page1.nextPageToken],
        [["b"], "after-b"],
      );
      assert.deepEqual(plane.calls<ListAgentsRequest>("listAgents"), [
        { capability: "", pageSize: 1, pageToken: "after-a" },
      ]);
    });

    it("gets one agent by name", async () => {
      plane.on("getAgent", (request: GetAgentRequest) => ({ agent: protoAgent(request.agentName) }));
      const agent = await client.getAgent("greeter");
      assert.equal(agent.name, "greeter");
      assert.equal(agent.status, "ONLINE");
      assert.deepEqual(
        agent.capabilities.map((c) => c.name),
        ["greeter.one", "greeter.two"],
      );
      assert.deepEqual(plane.calls<GetAgentRequest>("getAgent"), [{ agentName: "greeter" }]);
    });

    it("rejects an unknown agent with NotFoundError", async () => {
      plane.on("getAgent", () => ({ code: status.NOT_FOUND, details: "agent nobody not found" }));
      await assert.rejects(
        client.getAgent("nobody"),
        (error: unknown) => error instanceof NotFoundError && error.message === "agent nobody not found",
      );
    });

    it("maps a listing failure", async () => {
      plane.on("listAgents", () => ({ code: status.PERMISSION_DENIED, details: "no agents:read" }));
      await assert.rejects(client.listAgents(), PermissionDeniedError);
    });
  });

  describe("listInstances and listInstancesPage", () => {
    it("lists the connected instances of every agent by default, following pages", async () => {
      const pages = paged(
        [protoInstance("a", "a-1"), protoInstance("a", "a-2"), protoInstance("b", "b-1")],
        1,
      );
      plane.on("listAgentInstances", (request: ListAgentInstancesRequest) => {
        const { items, next } = page(pages, request.pageToken);
        return { instances: items, nextPageToken: next };
      });
      const instances = await client.listInstances();
      assert.deepEqual(
        instances.map((i) => [i.agentName, i.instanceId]),
        [
          ["a", "a-1"],
          ["a", "a-2"],
          ["b", "b-1"],
        ],
      );
      assert.deepEqual(
        plane.calls<ListAgentInstancesRequest>("listAgentInstances"),
        ["", "p1", "p2"].map((pageToken) => ({
          agentName: "-",
          includeDisconnected: false,
          pageSize: 1000,
          pageToken,
        })),
      );
      assert.deepEqual(instances[0], instanceInfo("a", "a-1"));
    });

    it("lists one agent's instances, disconnected ones too when asked", async () => {
      plane.on("listAgentInstances", () => ({
        instances: [
          protoInstance("a", "a-1", { status: AgentInstanceStatus.AGENT_INSTANCE_STATUS_DRAINING }),
          protoInstance("a", "a-2", {
            status: AgentInstanceStatus.AGENT_INSTANCE_STATUS_DISCONNECTED,
            sdk: undefined,
          }),
        ],
        nextPageToken: "",
      }));
      const instances = await client.listInstances("a", { includeDisconnected: true });
      assert.deepEqual(
        instances.map((i) => [i.instanceId, i.status, i.sdk]),
        [
          ["a-1", "DRAINING", "typescript 0.1.0"],
          ["a-2", "DISCONNECTED", ""],
        ],
      );
      assert.deepEqual(plane.calls<ListAgentInstancesRequest>("listAgentInstances"), [
        { agentName: "a", includeDisconnected: true, pageSize: 1000, pageToken: "" },
      ]);
    });

    it("rejects an unknown agent with NotFoundError", async () => {
      plane.on("listAgentInstances", () => ({ code: status.NOT_FOUND, details: "agent nobody not found" }));
      await assert.rejects(client.listInstances("nobody"), NotFoundError);
    });

    it("lists one page: sends the agent, the filter, the page size and token; returns the next token", async () => {
      plane.on("listAgentInstances", () => ({
        instances: [
          protoInstance("a", "a-2"),
          protoInstance("a", "a-3", { status: AgentInstanceStatus.AGENT_INSTANCE_STATUS_DISCONNECTED }),
        ],
        nextPageToken: "after-a-3",
      }));
      const page1 = await client.listInstancesPage("a", {
        includeDisconnected: true,
        pageSize: 2,
        pageToken: "after-a-1",
      });
      assert.deepEqual(
        [page1.items.map((i) => [i.instanceId, i.status]), page1.nextPageToken],
        [
          [
            ["a-2", "CONNECTED"],
            ["a-3", "DISCONNECTED"],
          ],
          "after-a-3",
        ],
      );
      assert.equal(page1.items[0]?.sessionId, "s-a-2", "converted like listInstances");
      assert.deepEqual(plane.calls<ListAgentInstancesRequest>("listAgentInstances"), [
        { agentName: "a", includeDisconnected: true, pageSize: 2, pageToken: "after-a-1" },
      ]);
    });

    it("asks for the first page of every agent's connected instances by default", async () => {
      plane.on("listAgentInstances", () => ({ instances: [], nextPageToken: "" }));
      assert.deepEqual(await client.listInstancesPage(), { items: [], nextPageToken: "" });
      assert.deepEqual(plane.calls<ListAgentInstancesRequest>("listAgentInstances"), [
        { agentName: "-", includeDisconnected: false, pageSize: 0, pageToken: "" },
      ]);
    });

    it("leaves the page size to the control plane, which refuses a bad one", async () => {
      plane.on("listAgentInstances", () => ({
        code: status.INVALID_ARGUMENT,
        details: "page_size: must not be negative",
      }));
      await assert.rejects(client.listInstancesPage("a", { pageSize: -1 }), InvalidArgumentError);
      assert.deepEqual(
        plane.calls<ListAgentInstancesRequest>("listAgentInstances").map((r) => r.pageSize),
        [-1],
      );
    });
  });

  describe("drainInstance", () => {
    it("sends the agent, instance, timeout and reason; resolves to the instance, converted", async () => {
      plane.on("drainAgentInstance", (request: DrainAgentInstanceRequest) => ({
        instance: protoInstance(request.agentName, request.instanceId, {
          status: AgentInstanceStatus.AGENT_INSTANCE_STATUS_DRAINING,
        }),
      }));
      const instance = await client.drainInstance("a", "a-1", { timeoutMs: 2_500, reason: "rolling upgrade" });
      assert.deepEqual(plane.calls<DrainAgentInstanceRequest>("drainAgentInstance"), [
        {
          agentName: "a",
          instanceId: "a-1",
          timeout: { seconds: 2, nanos: 500_000_000 },
          reason: "rolling upgrade",
        },
      ]);
      assert.deepEqual(instance, instanceInfo("a", "a-1", { status: "DRAINING" }));
    });

    it("sends no timeout and an empty reason by default", async () => {
      plane.on("drainAgentInstance", (request: DrainAgentInstanceRequest) => ({
        instance: protoInstance(request.agentName, request.instanceId),
      }));
      const instance = await client.drainInstance("b", "b-7");
      assert.equal(instance.instanceId, "b-7");
      assert.deepEqual(plane.calls<DrainAgentInstanceRequest>("drainAgentInstance"), [
        { agentName: "b", instanceId: "b-7", timeout: undefined, reason: "" },
      ]);
    });

    it("refuses an answer without the instance", async () => {
      plane.on("drainAgentInstance", () => ({}));
      await assert.rejects(
        client.drainInstance("a", "a-1"),
        (error: unknown) => error instanceof TypeError && /DrainAgentInstance without an instance/.test(error.message),
      );
    });

    it("maps a refusal: an instance not connected is a FailedPreconditionError", async () => {
      plane.on("drainAgentInstance", () => ({
        code: status.FAILED_PRECONDITION,
        details: "agent instance a/a-1 is not connected",
      }));
      await assert.rejects(client.drainInstance("a", "a-1"), FailedPreconditionError);
    });
  });

  // ------------------------------------------------------------ channels

  describe("listChannels and listChannelsPage", () => {
    it("follows every page of channels with the largest page size; converts each channel", async () => {
      const pages = paged([protoChannel("alerts"), protoChannel("news", false), protoChannel("orders")], 2);
      plane.on("listChannels", (request: ListChannelsRequest) => {
        const { items, next } = page(pages, request.pageToken);
        return { channels: items, nextPageToken: next };
      });
      const channels: ChannelInfo[] = await client.listChannels();
      assert.deepEqual(channels, [
        { name: "alerts", createTime: CREATED, lastUseTime: UPDATED },
        { name: "news", createTime: undefined, lastUseTime: undefined },
        { name: "orders", createTime: CREATED, lastUseTime: UPDATED },
      ]);
      assert.ok(channels[0]?.createTime instanceof Date, "timestamps become Dates");
      assert.deepEqual(plane.calls<ListChannelsRequest>("listChannels"), [
        { pageSize: 1000, pageToken: "" },
        { pageSize: 1000, pageToken: "p1" },
      ]);
    });

    it("lists one page: sends the page size and token; returns the next token", async () => {
      plane.on("listChannels", () => ({ channels: [protoChannel("news")], nextPageToken: "after-news" }));
      const page1 = await client.listChannelsPage({ pageSize: 1, pageToken: "after-alerts" });
      assert.deepEqual(page1, {
        items: [{ name: "news", createTime: CREATED, lastUseTime: UPDATED }],
        nextPageToken: "after-news",
      });
      assert.deepEqual(await client.listChannelsPage(), {
        items: [{ name: "news", createTime: CREATED, lastUseTime: UPDATED }],
        nextPageToken: "after-news",
      });
      assert.deepEqual(plane.calls<ListChannelsRequest>("listChannels"), [
        { pageSize: 1, pageToken: "after-alerts" },
        { pageSize: 0, pageToken: "" },
      ]);
    });

    it("resolves to [] when no channel is in use", async () => {
      plane.on("listChannels", () => ({ channels: [], nextPageToken: "" }));
      assert.deepEqual(await client.listChannels(), []);
    });

    it("maps a failure", async () => {
      plane.on("listChannels", () => ({ code: status.PERMISSION_DENIED, details: "no channels:read" }));
      await assert.rejects(client.listChannels(), PermissionDeniedError);
      await assert.rejects(
        client.listChannelsPage({ pageSize: 5 }),
        (error: unknown) => error instanceof PermissionDeniedError && error.message === "no channels:read",
      );
    });
  });

  // ------------------------------------------------------------ audit

  describe("listAuditEntriesPage and listAuditEntries", () => {
    /** Serves `entries` as the plane does: pages of the size asked (default 50, at most 1000), tokens "at-<offset>". */
    function serveTrail(entries: readonly AuditEntryProto[], extra = 0): void {
      plane.on("listAuditEntries", (request: ListAuditEntriesRequest) => {
        const start = request.pageToken === "" ? 0 : Number(request.pageToken.slice("at-".length));
        const end = Math.min(start + Math.min(request.pageSize || 50, 1000) + extra, entries.length);
        return { entries: entries.slice(start, end), nextPageToken: end < entries.length ? `at-${end}` : "" };
      });
    }

    it("sends every filter, the times as timestamps, and the page options; converts the entries", async () => {
      plane.on("listAuditEntries", () => ({
        entries: [
          {
            id: Number.MAX_SAFE_INTEGER,
            time: UPDATED,
            actor: "client/token:ab12",
            action: "state.put",
            resource: "namespaces/n/states/k",
            correlationId: "c-9",
            details: { version: 3, previous: null, tags: ["a", "b"], ttl: { seconds: 60 } },
          },
          { ...protoEntry(7), details: undefined },
        ],
        nextPageToken: "at-2",
      }));
      const since = new Date("2026-01-01T08:15:30.123+01:00");
      const until = new Date("2026-01-02T00:00:00.000Z");
      const filter: AuditFilter = {
        resource: "namespaces/n/states/k",
        actor: "client/token:ab12",
        action: "state.put",
        correlationId: "c-9",
        since,
        until,
      };
      const page1 = await client.listAuditEntriesPage(filter, { pageSize: 2, pageToken: "at-0" });
      const sent = plane.calls<ListAuditEntriesRequest>("listAuditEntries");
      assert.deepEqual(sent, [
        {
          resource: "namespaces/n/states/k",
          actor: "client/token:ab12",
          action: "state.put",
          correlationId: "c-9",
          startTime: since,
          endTime: until,
          pageSize: 2,
          pageToken: "at-0",
        },
      ]);
      assert.equal(sent[0]?.startTime?.toISOString(), "2026-01-01T07:15:30.123Z", "the instant, to the millisecond");
      const expected: AuditEntry[] = [
        {
          id: Number.MAX_SAFE_INTEGER,
          time: UPDATED,
          actor: "client/token:ab12",
          action: "state.put",
          resource: "namespaces/n/states/k",
          correlationId: "c-9",
          details: { version: 3, previous: null, tags: ["a", "b"], ttl: { seconds: 60 } },
        },
        {
          id: 7,
          time: undefined,
          actor: "client/anonymous",
          action: "state.put",
          resource: "namespaces/n/states/k7",
          correlationId: "",
          details: {},
        },
      ];
      assert.deepEqual(page1, { items: expected, nextPageToken: "at-2" });
    });

    it("sends no filter and no time bound by default", async () => {
      plane.on("listAuditEntries", () => ({ entries: [], nextPageToken: "" }));
      assert.deepEqual(await client.listAuditEntriesPage(), { items: [], nextPageToken: "" });
      await client.listAuditEntriesPage({ until: UPDATED });
      assert.deepEqual(plane.calls<ListAuditEntriesRequest>("listAuditEntries"), [
        {
          resource: "",
          actor: "",
          action: "",
          correlationId: "",
          startTime: undefined,
          endTime: undefined,
          pageSize: 0,
          pageToken: "",
        },
        {
          resource: "",
          actor: "",
          action: "",
          correlationId: "",
          startTime: undefined,
          endTime: UPDATED,
          pageSize: 0,
          pageToken: "",
        },
      ]);
    });

    it("refuses a time that is not a valid Date before any call", async () => {
      for (const filter of [{ since: new Date("not a date") }, { until: "2026-01-01" as unknown as Date }]) {
        await assert.rejects(
          client.listAuditEntriesPage(filter),
          (error: unknown) => error instanceof RangeError && /must be a valid Date/.test(error.message),
        );
        await assert.rejects(client.listAuditEntries(filter), RangeError);
      }
      assert.equal(plane.calls("listAuditEntries").length, 0);
    });

    it("follows pages up to the limit, asking for no more than are still wanted, with the same filter", async () => {
      serveTrail(trail(2500));
      const since = new Date("2026-01-01T00:00:00Z");
      const entries = await client.listAuditEntries({ action: "state.put", since }, { limit: 2200 });
      assert.equal(entries.length, 2200);
      assert.deepEqual(
        [entries[0]?.id, entries[999]?.id, entries[1000]?.id, entries[2199]?.id],
        [2500, 1501, 1500, 301],
        "newest first, in the plane's order",
      );
      const calls = plane.calls<ListAuditEntriesRequest>("listAuditEntries");
      assert.deepEqual(
        calls.map((r) => [r.pageSize, r.pageToken]),
        [
          [1000, ""],
          [1000, "at-1000"],
          [200, "at-2000"],
        ],
      );
      for (const request of calls) {
        assert.equal(request.action, "state.put");
        assert.deepEqual([request.startTime, request.endTime], [since, undefined]);
      }
    });

    it("takes 50 by default, in one call", async () => {
      serveTrail(trail(120));
      const entries = await client.listAuditEntries();
      assert.deepEqual(
        [entries.length, entries[0]?.id, entries[49]?.id],
        [50, 120, 71],
      );
      assert.deepEqual(
        plane.calls<ListAuditEntriesRequest>("listAuditEntries").map((r) => [r.pageSize, r.pageToken]),
        [[50, ""]],
      );
    });

    it("stops at the last page when there are fewer entries than the limit", async () => {
      serveTrail(trail(1200));
      const entries = await client.listAuditEntries({}, { limit: 5000 });
      assert.equal(entries.length, 1200);
      assert.deepEqual(
        plane.calls<ListAuditEntriesRequest>("listAuditEntries").map((r) => [r.pageSize, r.pageToken]),
        [
          [1000, ""],
          [1000, "at-1000"],
        ],
      );
    });

    it("returns no more than the limit when the plane answers more than asked", async () => {
      serveTrail(trail(10), 4);
      const entries = await client.listAuditEntries({}, { limit: 3 });
      assert.deepEqual(
        entries.map((e) => e.id),
        [10, 9, 8],
      );
    });

    it("resolves to [] for a limit of 0 and refuses a bad limit, without a call", async () => {
      serveTrail(trail(3));
      assert.deepEqual(await client.listAuditEntries({}, { limit: 0 }), []);
      for (const limit of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
        await assert.rejects(
          client.listAuditEntries({}, { limit }),
          (error: unknown) => error instanceof RangeError && /limit must be a whole number/.test(error.message),
          String(limit),
        );
      }
      assert.equal(plane.calls("listAuditEntries").length, 0);
    });

    it("maps failures: a refused filter, and a failure on a later page", async () => {
      plane.on("listAuditEntries", () => ({
        code: status.INVALID_ARGUMENT,
        details: "end_time: must be after start_time",
      }));
      await assert.rejects(
        client.listAuditEntriesPage({ since: UPDATED, until: CREATED }),
        (error: unknown) => error instanceof InvalidArgumentError && /end_time/.test(error.message),
      );
      plane.on("listAuditEntries", (request: ListAuditEntriesRequest) =>
        request.pageToken === ""
          ? { entries: trail(1000), nextPageToken: "at-1000" }
          : { code: status.UNAVAILABLE, details: "shutting down" },
      );
      await assert.rejects(
        client.listAuditEntries({}, { limit: 1500 }),
        (error: unknown) => error instanceof UnavailableError && error.message.includes("shutting down"),
      );
      plane.on("listAuditEntries", () => ({ code: status.PERMISSION_DENIED, details: "no audit:read" }));
      await assert.rejects(client.listAuditEntries(), PermissionDeniedError);
    });
  });
});

describe("MeshClient after close()", () => {
  const plane = new FakePlane();
  serve(plane, () => ({ close: () => undefined }));

  it("rejects calls, watches and subscriptions with UnavailableError, without calling the control plane", async () => {
    const closed = new MeshClient(plane.address, { timeoutMs: 5_000 });
    closed.close();
    const isClosedError = (error: unknown): boolean =>
      error instanceof UnavailableError && /the client is closed/.test(error.message);
    await assert.rejects(closed.get("01TASK"), isClosedError);
    await assert.rejects(closed.listInstancesPage(), isClosedError);
    await assert.rejects(closed.drainInstance("a", "a-1"), isClosedError);
    await assert.rejects(closed.listChannels(), isClosedError);
    await assert.rejects(closed.listAuditEntries(), isClosedError);
    await assert.rejects(closed.subscribe("news"), isClosedError);
    await assert.rejects(closed.watch("01TASK").next(), isClosedError);
    assert.deepEqual(
      ["listAgentInstances", "drainAgentInstance", "listChannels", "listAuditEntries"].map((m) => plane.calls(m)),
      [[], [], [], []],
    );
  });
});
