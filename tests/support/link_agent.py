"""A raw agent-link client for control plane tests: every frame is explicit, nothing is hidden.

(The SDKs are tested on their own; this exercises the protocol exactly as documented.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc

from meshplane.v1 import agent_link_pb2 as al
from meshplane.v1 import agent_link_pb2_grpc, common_pb2

JSON = "application/json"


def json_payload(value: Any) -> common_pb2.Payload:
    return common_pb2.Payload(data=json.dumps(value).encode(), content_type=JSON)


def payload_value(payload: common_pb2.Payload) -> Any:
    if payload.WhichOneof("kind") == "data":
        return json.loads(payload.data)
    from google.protobuf import json_format

    return json_format.MessageToDict(payload.json)


class LinkAgent:
    def __init__(
        self,
        address: str,
        *,
        name: str = "agent",
        instance_id: str | None = None,
        capabilities: Iterable[str] = ("demo.echo",),
        labels: dict[str, str] | None = None,
        max_concurrency: int = 4,
        weight: int = 1,
        held: Iterable[tuple[str, int]] = (),
        subscriptions: Iterable[str] = (),
        heartbeat: bool = True,
        token: str | None = None,
    ) -> None:
        self.address = address
        self.name = name
        self.instance_id = instance_id or f"{name}-{uuid.uuid4().hex[:8]}"
        self.capabilities = list(capabilities)
        self.labels = labels or {}
        self.max_concurrency = max_concurrency
        self.weight = weight
        self.held = list(held)
        self.subscriptions = list(subscriptions)
        self.heartbeat_enabled = heartbeat
        self.token = token
        self.assignments: asyncio.Queue[al.Assignment] = asyncio.Queue()
        self.all_assignments: list[al.Assignment] = []
        self.cancellations: list[al.Cancellation] = []
        self.acks: list[tuple[str, int]] = []
        self.channel_messages: asyncio.Queue[Any] = asyncio.Queue()
        self.errors: list[al.LinkError] = []
        self.drains: list[al.Drain] = []
        self.registered: al.Registered | None = None
        self.ended: asyncio.Event = asyncio.Event()
        self.end_code: grpc.StatusCode | None = None
        self._outgoing: asyncio.Queue[al.ConnectRequest | None] = asyncio.Queue()
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._registered = asyncio.Event()

    def register_frame(self) -> al.ConnectRequest:
        return al.ConnectRequest(
            register=al.Register(
                agent_name=self.name,
                agent_version="1.0.0",
                instance_id=self.instance_id,
                capabilities=[common_pb2.Capability(name=c) for c in self.capabilities],
                labels=self.labels,
                max_concurrency=self.max_concurrency,
                weight=self.weight,
                sdk=common_pb2.SdkInfo(language="test", version="0"),
                held_tasks=[al.TaskRef(task_id=t, attempt=a) for t, a in self.held],
                subscriptions=self.subscriptions,
            )
        )

    async def connect(self, *, first: al.ConnectRequest | None = None, wait: bool = True) -> al.Registered | None:
        self._channel = grpc.aio.insecure_channel(self.address)
        stub = agent_link_pb2_grpc.AgentLinkServiceStub(self._channel)
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else None
        await self._outgoing.put(first or self.register_frame())
        self._call = stub.Connect(self._requests(), metadata=metadata)
        self._tasks.append(asyncio.ensure_future(self._receive()))
        if wait:
            await asyncio.wait_for(self._registered.wait(), 10)
            if self.heartbeat_enabled:
                self._tasks.append(asyncio.ensure_future(self._heartbeats()))
        return self.registered

    async def _requests(self) -> AsyncIterator[al.ConnectRequest]:
        while True:
            frame = await self._outgoing.get()
            if frame is None:
                return
            yield frame

    async def _receive(self) -> None:
        try:
            async for frame in self._call:
                kind = frame.WhichOneof("frame")
                if kind == "registered":
                    self.registered = frame.registered
                    self._registered.set()
                elif kind == "assignments":
                    for assignment in frame.assignments.assignments:
                        self.all_assignments.append(assignment)
                        await self.assignments.put(assignment)
                elif kind == "cancellations":
                    self.cancellations.extend(frame.cancellations.cancellations)
                elif kind == "result_acks":
                    self.acks.extend((t.task_id, t.attempt) for t in frame.result_acks.tasks)
                elif kind == "channel_message":
                    await self.channel_messages.put(frame.channel_message)
                elif kind == "error":
                    self.errors.append(frame.error)
                elif kind == "drain":
                    self.drains.append(frame.drain)
            self.end_code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            self.end_code = exc.code()
        except asyncio.CancelledError:
            pass
        finally:
            self.ended.set()

    async def _heartbeats(self) -> None:
        interval = self.registered.heartbeat_interval.ToTimedelta().total_seconds() if self.registered else 0.2
        while True:
            await asyncio.sleep(interval)
            await self.send(al.ConnectRequest(heartbeat=al.Heartbeat(in_flight=0, load=0.1)))

    def stop_heartbeats(self) -> None:
        for task in self._tasks[1:]:
            task.cancel()

    async def send(self, frame: al.ConnectRequest) -> None:
        await self._outgoing.put(frame)

    async def next_assignment(self, timeout: float = 10.0) -> al.Assignment:
        return await asyncio.wait_for(self.assignments.get(), timeout)

    async def started(self, assignment: al.Assignment) -> None:
        await self.send(
            al.ConnectRequest(
                task_updates=al.TaskUpdates(
                    updates=[
                        al.TaskUpdate(
                            task_id=assignment.task_id,
                            attempt=assignment.attempt,
                            kind=al.TASK_UPDATE_KIND_STARTED,
                        )
                    ]
                )
            )
        )

    async def progress(self, assignment: al.Assignment, value: float, message: str = "") -> None:
        update = al.TaskUpdate(
            task_id=assignment.task_id,
            attempt=assignment.attempt,
            kind=al.TASK_UPDATE_KIND_PROGRESS,
            progress=value,
            message=message,
        )
        await self.send(al.ConnectRequest(task_updates=al.TaskUpdates(updates=[update])))

    async def task_heartbeat(self, assignment: al.Assignment) -> None:
        update = al.TaskUpdate(
            task_id=assignment.task_id, attempt=assignment.attempt, kind=al.TASK_UPDATE_KIND_HEARTBEAT
        )
        await self.send(al.ConnectRequest(task_updates=al.TaskUpdates(updates=[update])))

    async def succeed(self, assignment: al.Assignment | tuple[str, int], output: Any) -> None:
        task_id, attempt = _ref(assignment)
        result = al.TaskResult(task_id=task_id, attempt=attempt, output=json_payload(output))
        await self.send(al.ConnectRequest(task_results=al.TaskResults(results=[result])))

    async def fail(
        self,
        assignment: al.Assignment | tuple[str, int],
        *,
        code: str = "boom",
        message: str = "it broke",
        retryable: bool = True,
    ) -> None:
        task_id, attempt = _ref(assignment)
        error = common_pb2.TaskError(code=code, message=message, retryable=retryable)
        result = al.TaskResult(task_id=task_id, attempt=attempt, error=error)
        await self.send(al.ConnectRequest(task_results=al.TaskResults(results=[result])))

    async def publish(self, channel: str, value: Any, headers: dict[str, str] | None = None) -> None:
        frame = al.ChannelPublish(channel=channel, payload=json_payload(value), headers=headers or {})
        await self.send(al.ConnectRequest(publish=frame))

    async def echo_forever(self) -> None:
        """Answer every assignment with its own input (run as a background task)."""
        while True:
            assignment = await self.assignments.get()
            await self.succeed(assignment, payload_value(assignment.input))

    def serve_echo(self) -> asyncio.Task[None]:
        task = asyncio.ensure_future(self.echo_forever())
        self._tasks.append(task)
        return task

    async def close(self) -> None:
        """End the stream gracefully (half-close), as an agent leaving does."""
        await self._outgoing.put(None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), 5)
        await self._shutdown()

    async def kill(self) -> None:
        """Drop the connection abruptly, as a crashed agent does."""
        if self._call is not None:
            self._call.cancel()
        await self._shutdown()

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def _ref(assignment: al.Assignment | tuple[str, int]) -> tuple[str, int]:
    if isinstance(assignment, tuple):
        return assignment
    return assignment.task_id, assignment.attempt
