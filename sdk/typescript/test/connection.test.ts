import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  type sendUnaryData,
  Server,
  type ServerUnaryCall,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";

import { Task, TaskState } from "../../../generated/ts/meshplane/v1/task";
import {
  type GetTaskRequest,
  GetTaskResponse,
  TaskServiceService,
} from "../../../generated/ts/meshplane/v1/task_service";
import { MeshClient } from "../src/client";
import { MAX_CONNECTIONS } from "../src/connection";
import { bindLocal } from "./support";

/** A TaskService whose GetTask answers and counts the calls by the client connection (peer) they came over. */
class PeerRecorder {
  readonly callsByPeer = new Map<string, number>();
  private readonly server = new Server();
  address = "";

  async start(): Promise<void> {
    const getTask = (
      call: ServerUnaryCall<GetTaskRequest, GetTaskResponse>,
      callback: sendUnaryData<GetTaskResponse>,
    ): void => {
      const peer = call.getPeer();
      this.callsByPeer.set(peer, (this.callsByPeer.get(peer) ?? 0) + 1);
      const task = Task.fromPartial({ id: call.request.taskId, state: TaskState.TASK_STATE_QUEUED });
      callback(null, GetTaskResponse.fromPartial({ task }));
    };
    const implementation: UntypedServiceImplementation = { getTask };
    this.server.addService(TaskServiceService, implementation);
    this.address = await bindLocal(this.server);
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

describe("MeshClient connections", () => {
  const recorder = new PeerRecorder();
  before(() => recorder.start());
  after(() => recorder.stop());

  for (const [connections, expected] of [
    [1, [9]],
    [3, [3, 3, 3]],
  ] as const) {
    it(`takes ${connections} connection(s) in turn`, async () => {
      recorder.callsByPeer.clear();
      const client = new MeshClient(recorder.address, { connections });
      try {
        for (let index = 0; index < 9; index++) {
          assert.equal((await client.get(`t-${index}`)).id, `t-${index}`);
        }
      } finally {
        client.close();
      }
      assert.deepEqual(
        [...recorder.callsByPeer.values()].sort((a, b) => a - b),
        expected,
      );
    });
  }

  it("refuses a connection count out of range", () => {
    for (const connections of [0, MAX_CONNECTIONS + 1, 1.5]) {
      assert.throws(
        () => new MeshClient("127.0.0.1:1", { connections }),
        (error: unknown) =>
          error instanceof RangeError && error.message === `connections must be between 1 and 64, got ${connections}`,
      );
    }
  });
});
