"""Interop agent client (Python): one scripted exchange on AgentLinkService.Connect.

Usage: python client.py HOST:PORT

The script every interop client follows (see tests/interop/test_three_language_exchange.py):
register → (registered) → heartbeat → (assignments) → task_results → (result_acks) →
half-close → the stream ends with status OK. The task output echoes what the client
received, so the test servicer can check that every language decoded it correctly.
Exits 0 on success; on any protocol surprise prints what went wrong to stderr and exits 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from typing import Any

import grpc

from meshplane.v1 import agent_link_pb2, agent_link_pb2_grpc, common_pb2

LANGUAGE = "python"
CAPABILITY = "interop.echo"
OVERALL_TIMEOUT_S = 30.0


class ProtocolError(Exception):
    """The plane sent something this client did not expect."""


def register_frame() -> agent_link_pb2.ConnectRequest:
    capability = common_pb2.Capability(name=CAPABILITY, description="Echoes its input back")
    capability.input_schema.update({"type": "object", "required": ["text"]})
    return agent_link_pb2.ConnectRequest(
        register=agent_link_pb2.Register(
            agent_name=f"interop-{LANGUAGE}",
            agent_version="0.1.0",
            instance_id=f"{LANGUAGE}-{uuid.uuid4().hex}",
            description="Meshplane interop test client",
            capabilities=[capability],
            labels={"language": LANGUAGE},
            max_concurrency=4,
            sdk=common_pb2.SdkInfo(language=LANGUAGE, version="0.1.0"),
            weight=1,
            node=socket.gethostname(),
            pid=os.getpid(),
        )
    )


async def expect(call: Any, case: str) -> agent_link_pb2.ConnectResponse:
    frame = await call.read()
    if frame is grpc.aio.EOF:
        raise ProtocolError(f"stream ended while waiting for {case!r} (status {await call.code()})")
    got = frame.WhichOneof("frame")
    if got == "error":
        raise ProtocolError(f"plane sent error frame while waiting for {case!r}: {frame.error}")
    if got != case:
        raise ProtocolError(f"expected a {case!r} frame, got {got!r}: {frame}")
    return frame  # type: ignore[no-any-return]


async def run(address: str) -> str:
    # The target is loopback: never route it through an HTTP proxy from the environment.
    async with grpc.aio.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = agent_link_pb2_grpc.AgentLinkServiceStub(channel)
        call = stub.Connect()
        await call.write(register_frame())

        registered = (await expect(call, "registered")).registered
        if not registered.session_id:
            raise ProtocolError("registered.session_id is empty")
        if not registered.HasField("heartbeat_interval"):
            raise ProtocolError("registered.heartbeat_interval is not set")
        await call.write(
            agent_link_pb2.ConnectRequest(
                heartbeat=agent_link_pb2.Heartbeat(in_flight=0, load=0.25, memory_bytes=5_000_000_000)
            )
        )

        assignments = (await expect(call, "assignments")).assignments.assignments
        if len(assignments) != 1:
            raise ProtocolError(f"expected exactly one assignment, got {len(assignments)}")
        assignment = assignments[0]
        if assignment.capability != CAPABILITY:
            raise ProtocolError(f"assignment for unknown capability {assignment.capability!r}")
        if assignment.input.WhichOneof("kind") != "data" or assignment.input.content_type != "application/json":
            raise ProtocolError(f"assignment input is not JSON bytes: {assignment.input}")
        if not assignment.HasField("deadline"):
            raise ProtocolError("assignment.deadline is not set")
        task_input = json.loads(assignment.input.data)
        output = {
            "echo": task_input,
            "language": LANGUAGE,
            "session_id": registered.session_id,
            "heartbeat_interval_seconds": registered.heartbeat_interval.ToTimedelta().total_seconds(),
            "max_payload_bytes": registered.max_payload_bytes,
            "traceparent": assignment.traceparent,
            "metadata": dict(assignment.metadata),
        }
        result = agent_link_pb2.TaskResult(
            task_id=assignment.task_id,
            attempt=assignment.attempt,
            output=common_pb2.Payload(data=json.dumps(output).encode(), content_type="application/json"),
        )
        await call.write(agent_link_pb2.ConnectRequest(task_results=agent_link_pb2.TaskResults(results=[result])))

        acked = [(t.task_id, t.attempt) for t in (await expect(call, "result_acks")).result_acks.tasks]
        if acked != [(assignment.task_id, assignment.attempt)]:
            raise ProtocolError(f"result_acks {acked} do not match the result sent")
        await call.done_writing()

        extra = await call.read()
        if extra is not grpc.aio.EOF:
            raise ProtocolError(f"expected the stream to end, got {extra}")
        code = await call.code()
        if code != grpc.StatusCode.OK:
            raise ProtocolError(f"stream ended with {code}: {await call.details()}")
        return f"task {assignment.task_id} attempt {assignment.attempt} done on session {registered.session_id}"


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} HOST:PORT", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(asyncio.wait_for(run(sys.argv[1]), OVERALL_TIMEOUT_S))
    except ProtocolError as exc:
        print(f"{LANGUAGE} client: protocol error: {exc}", file=sys.stderr)
        return 1
    except grpc.aio.AioRpcError as exc:
        print(f"{LANGUAGE} client: RPC failed: {exc.code()}: {exc.details()}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"{LANGUAGE} client: exchange not finished within {OVERALL_TIMEOUT_S}s", file=sys.stderr)
        return 1
    print(f"{LANGUAGE} client: ok: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
