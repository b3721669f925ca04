// A MeshClient given several addresses spreads its calls over them (gRPC's round_robin, as the Go and Python
// clients do), against two in-process fake TaskServices that count the GetTask calls they answer.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { type sendUnaryData, Server, type ServerUnaryCall } from "@grpc/grpc-js";

import { Task } from "../../../generated/ts/meshplane/v1/task";
import {
  type GetTaskRequest,
  type GetTaskResponse,
  TaskServiceService,
} from "../../../generated/ts/meshplane/v1/task_service";
import { MeshClient } from "../src/client";
import { bindLocal } from "./support";

/** A TaskService answering GetTask with the asked-for id, and how many calls it answered. */
class CountingReplica {
  private readonly server = new Server();
  calls = 0;
  address = "";

  async start(): Promise<void> {
    this.server.addService(TaskServiceService, {
      getTask: (
        call: ServerUnaryCall<GetTaskRequest, GetTaskResponse>,
        callback: sendUnaryData<GetTaskResponse>,
      ): void => {
        this.calls += 1;
        callback(null, { task: Task.fromPartial({ id: call.request.taskId }) });
      },
    });
    this.address = await bindLocal(this.server);
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

describe("a MeshClient given several addresses", () => {
  const replicas = [new CountingReplica(), new CountingReplica()];
  before(async () => Promise.all(replicas.map((replica) => replica.start())));
  after(() => replicas.forEach((replica) => replica.stop()));

  it("sends its calls to each in turn, not all to the first that accepted a connection", async () => {
    const client = new MeshClient(`ipv4:${replicas.map((replica) => replica.address).join(",")}`);
    try {
      // The second connection may become ready a moment after the first: call until both have answered.
      for (let made = 0; made < 200 && replicas.some((replica) => replica.calls === 0); made += 1) {
        assert.equal((await client.get(`t-${made}`)).id, `t-${made}`);
      }
      assert.ok(
        replicas.every((replica) => replica.calls > 0),
        `calls: ${replicas.map((r) => r.calls)}`,
      );
      const before = replicas.map((replica) => replica.calls);
      for (let index = 0; index < 8; index += 1) await client.get(`u-${index}`);
      assert.deepEqual(
        replicas.map((replica, i) => replica.calls - (before[i] ?? 0)),
        [4, 4],
      );
    } finally {
      client.close();
    }
  });
});
