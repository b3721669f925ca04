// Interop agent client (TypeScript on Node): one scripted exchange on AgentLinkService.Connect,
// using the ts-proto + grpc-js code in generated/ts.
//
// Usage: node client.js HOST:PORT
//
// The script every interop client follows (see tests/interop/test_three_language_exchange.py):
// register → (registered) → heartbeat → (assignments) → task_results → (result_acks) →
// half-close → the stream ends with status OK. The task output echoes what the client
// received, so the test servicer can check that every language decoded it correctly.
// Exits 0 on success; on any protocol surprise prints what went wrong to stderr and exits 1.

import { randomUUID } from "node:crypto";
import { hostname } from "node:os";

import { type ClientDuplexStream, credentials, type StatusObject, status } from "@grpc/grpc-js";

import {
  AgentLinkServiceClient,
  type ConnectRequest,
  ConnectResponse,
} from "../../../generated/ts/meshplane/v1/agent_link";

const LANGUAGE = "typescript";
const CAPABILITY = "interop.echo";
const OVERALL_TIMEOUT_MS = 30_000;

class ProtocolError extends Error {}

type Frame = NonNullable<ConnectResponse["frame"]>;
type FrameOf<C extends Frame["$case"]> = Extract<Frame, { $case: C }>;

/** Reads frames one at a time and remembers the final status of the call. */
class FrameReader {
  private readonly iterator: AsyncIterator<ConnectResponse>;
  readonly finalStatus: Promise<StatusObject>;

  constructor(private readonly call: ClientDuplexStream<ConnectRequest, ConnectResponse>) {
    this.finalStatus = new Promise((resolve) => call.on("status", resolve));
    this.iterator = call[Symbol.asyncIterator]();
  }

  async next(): Promise<ConnectResponse | undefined> {
    const item = await this.iterator.next();
    return item.done ? undefined : item.value;
  }

  async expect<C extends Frame["$case"]>(kind: C): Promise<FrameOf<C>> {
    const response = await this.next();
    if (response === undefined) {
      const st = await this.finalStatus;
      throw new ProtocolError(`stream ended while waiting for '${kind}' (status ${st.code}: ${st.details})`);
    }
    const frame = response.frame;
    if (frame?.$case === "error") {
      throw new ProtocolError(`plane sent error frame while waiting for '${kind}': ${JSON.stringify(frame.error)}`);
    }
    if (frame?.$case !== kind) {
      throw new ProtocolError(`expected a '${kind}' frame, got ${JSON.stringify(ConnectResponse.toJSON(response))}`);
    }
    return frame as FrameOf<C>;
  }
}

async function run(address: string): Promise<string> {
  // The target is loopback: never route it through an HTTP proxy from the environment.
  const client = new AgentLinkServiceClient(address, credentials.createInsecure(), {
    "grpc.enable_http_proxy": 0,
  });
  try {
    const call = client.connect({ deadline: Date.now() + OVERALL_TIMEOUT_MS });
    const reader = new FrameReader(call);

    call.write({
      frame: {
        $case: "register",
        register: {
          agentName: `interop-${LANGUAGE}`,
          agentVersion: "0.1.0",
          instanceId: `${LANGUAGE}-${randomUUID()}`,
          description: "Meshplane interop test client",
          capabilities: [
            {
              name: CAPABILITY,
              description: "Echoes its input back",
              inputSchema: { type: "object", required: ["text"] },
            },
          ],
          labels: { language: LANGUAGE },
          maxConcurrency: 4,
          sdk: { language: LANGUAGE, version: "0.1.0" },
          heldTasks: [],
          weight: 1,
          node: hostname(),
          pid: process.pid,
          subscriptions: [],
        },
      },
    });

    const { registered } = await reader.expect("registered");
    if (!registered.sessionId) {
      throw new ProtocolError("registered.sessionId is empty");
    }
    if (registered.heartbeatInterval === undefined) {
      throw new ProtocolError("registered.heartbeatInterval is not set");
    }
    call.write({
      frame: {
        $case: "heartbeat",
        heartbeat: { inFlight: 0, load: 0.25, cpuPercent: 0, memoryBytes: 5_000_000_000 },
      },
    });

    const { assignments } = await reader.expect("assignments");
    if (assignments.assignments.length !== 1) {
      throw new ProtocolError(`expected exactly one assignment, got ${assignments.assignments.length}`);
    }
    const assignment = assignments.assignments[0];
    if (assignment.capability !== CAPABILITY) {
      throw new ProtocolError(`assignment for unknown capability '${assignment.capability}'`);
    }
    const input = assignment.input;
    if (input?.kind?.$case !== "data" || input.contentType !== "application/json") {
      throw new ProtocolError(`assignment input is not JSON bytes: ${JSON.stringify(input)}`);
    }
    if (!(assignment.deadline instanceof Date)) {
      throw new ProtocolError("assignment.deadline is not set");
    }
    const taskInput: unknown = JSON.parse(Buffer.from(input.kind.data).toString("utf8"));
    const interval = registered.heartbeatInterval;
    const output = {
      echo: taskInput,
      language: LANGUAGE,
      session_id: registered.sessionId,
      heartbeat_interval_seconds: interval.seconds + interval.nanos / 1e9,
      max_payload_bytes: registered.maxPayloadBytes,
      traceparent: assignment.traceparent,
      metadata: assignment.metadata,
    };
    call.write({
      frame: {
        $case: "taskResults",
        taskResults: {
          results: [
            {
              taskId: assignment.taskId,
              attempt: assignment.attempt,
              outcome: {
                $case: "output",
                output: {
                  kind: { $case: "data", data: Buffer.from(JSON.stringify(output), "utf8") },
                  contentType: "application/json",
                },
              },
            },
          ],
        },
      },
    });

    const { resultAcks } = await reader.expect("resultAcks");
    const acked = resultAcks.tasks.map((t) => [t.taskId, t.attempt]);
    if (JSON.stringify(acked) !== JSON.stringify([[assignment.taskId, assignment.attempt]])) {
      throw new ProtocolError(`resultAcks ${JSON.stringify(acked)} do not match the result sent`);
    }
    call.end();

    const extra = await reader.next();
    if (extra !== undefined) {
      throw new ProtocolError(`expected the stream to end, got ${JSON.stringify(ConnectResponse.toJSON(extra))}`);
    }
    const st = await reader.finalStatus;
    if (st.code !== status.OK) {
      throw new ProtocolError(`stream ended with status ${st.code}: ${st.details}`);
    }
    return `task ${assignment.taskId} attempt ${assignment.attempt} done on session ${registered.sessionId}`;
  } finally {
    client.close();
  }
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (args.length !== 1) {
    process.stderr.write("usage: node client.js HOST:PORT\n");
    return 2;
  }
  try {
    const summary = await run(args[0]);
    process.stdout.write(`${LANGUAGE} client: ok: ${summary}\n`);
    return 0;
  } catch (err) {
    if (err instanceof ProtocolError) {
      process.stderr.write(`${LANGUAGE} client: protocol error: ${err.message}\n`);
    } else {
      // grpc-js surfaces a failed call as an Error carrying code and details.
      const e = err as { code?: number; details?: string; message?: string };
      process.stderr.write(`${LANGUAGE} client: RPC failed: ${e.code ?? "?"}: ${e.details ?? e.message ?? err}\n`);
    }
    return 1;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`${LANGUAGE} client: unexpected failure: ${err}\n`);
    process.exitCode = 1;
  },
);
