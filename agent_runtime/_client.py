"""`MeshClient`: submit tasks and follow them, talk on channels, read and write state."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from google.protobuf import timestamp_pb2

from agent_runtime import _payload
from agent_runtime._errors import (
    TaskCancelled,
    TaskDeadLettered,
    TaskFailed,
    TaskTimedOut,
    Unavailable,
)
from agent_runtime._rpc import DEFAULT_TARGET, Connection
from agent_runtime._state import Seconds, StateStore, duration, integer
from agent_runtime._tls import TLS
from agent_runtime._tls import resolve as resolve_tls
from agent_runtime._types import (
    AgentInfo,
    AgentInstanceInfo,
    AuditEntry,
    ChannelInfo,
    ChannelMessage,
    Page,
    StateEntry,
    Strategy,
    TaskEvent,
    TaskInfo,
    TaskState,
)
from meshplane.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    channel_pb2,
    channel_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
)

T = TypeVar("T")

_MAX_PAGE = 1000
_WATCH_RETRY_SECONDS = 0.5
_STREAM_END_GRACE_SECONDS = 2.0


async def _all_pages(page: Callable[[str], Awaitable[Page[T]]]) -> list[T]:
    """Every item of a listing: `page(token)` from the first page ("") until a page has no next token."""
    items: list[T] = []
    token = ""
    while True:
        answer = await page(token)
        items += answer.items
        token = answer.next_page_token
        if not token:
            return items


async def _up_to(limit: int, page: Callable[[int, str], Awaitable[Page[T]]]) -> list[T]:
    """The first `limit` items of a listing: `page(size, token)` from the first page until enough or the last.
    A limit of 0 makes no call; a negative one is a ValueError (as in the Go and TypeScript SDKs)."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    items: list[T] = []
    token = ""
    while len(items) < limit:
        answer = await page(min(_MAX_PAGE, limit - len(items)), token)
        items += answer.items
        token = answer.next_page_token
        if not token:
            break
    return items[:limit]


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    proto = timestamp_pb2.Timestamp()
    proto.FromDatetime(value)
    return proto


def _wait_timeout(timeout: float | None) -> float | None:
    """A wait's timeout: None (no limit) or seconds >= 0; NaN, infinite or negative ones are a ValueError."""
    if timeout is not None and not 0 <= timeout < math.inf:  # NaN fails this too
        raise ValueError(f"timeout must be a number of seconds >= 0 (or None for no limit), got {timeout!r}")
    return timeout


_STRATEGIES: dict[str, task_pb2.SchedulingStrategy] = {
    "least_loaded": task_pb2.SCHEDULING_STRATEGY_LEAST_LOADED,
    "round_robin": task_pb2.SCHEDULING_STRATEGY_ROUND_ROBIN,
    "weighted": task_pb2.SCHEDULING_STRATEGY_WEIGHTED,
    "consistent_hash": task_pb2.SCHEDULING_STRATEGY_CONSISTENT_HASH,
}


def _strategy(strategy: str | None, routing_key: str) -> task_pb2.SchedulingStrategy:
    """The strategy asked for; with none, consistent_hash when there is a routing key (as in the Go SDK), or
    the plane's default."""
    if strategy is None:
        return _STRATEGIES["consistent_hash"] if routing_key else task_pb2.SCHEDULING_STRATEGY_UNSPECIFIED
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(_STRATEGIES)}, got {strategy!r}")
    return _STRATEGIES[strategy]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """Everything a submission can say. Unset limits take the control plane's defaults.

    ``routing_key`` places tasks with the same key on the same agent instance (while it lives): it implies
    ``strategy="consistent_hash"`` unless another ``strategy`` is given. ``strategy`` is one of
    ``"least_loaded"``, ``"round_robin"``, ``"weighted"`` or ``"consistent_hash"``; unset, the plane's default.
    Retries wait ``initial_backoff`` seconds before the second attempt, growing by ``backoff_multiplier`` (1 to
    100) per attempt up to ``max_backoff``, with jitter; unset, the plane's.
    """

    capability: str
    input: Any = None
    priority: int = 0
    idempotency_key: str = ""
    correlation_id: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    agent_name: str = ""
    label_selector: Mapping[str, str] = field(default_factory=dict)
    routing_key: str = ""
    max_attempts: int = 0
    non_retryable_error_codes: Sequence[str] = ()
    initial_backoff: Seconds | None = None
    max_backoff: Seconds | None = None
    backoff_multiplier: float = 0.0
    schedule_to_start: Seconds | None = None
    start_to_close: Seconds | None = None
    heartbeat_timeout: Seconds | None = None
    schedule_to_close: Seconds | None = None
    content_type: str | None = None
    strategy: Strategy | None = None

    def to_proto(self) -> task_service_pb2.SubmitTaskRequest:
        request = task_service_pb2.SubmitTaskRequest(
            target=task_pb2.TaskTarget(
                capability=self.capability,
                agent_name=self.agent_name,
                label_selector=dict(self.label_selector),
                routing_key=self.routing_key,
                strategy=_strategy(self.strategy, self.routing_key),
            ),
            input=_payload.encode(self.input, self.content_type),
            priority=integer(self.priority, "priority", 32),
            idempotency_key=self.idempotency_key,
            correlation_id=self.correlation_id,
            metadata=dict(self.metadata),
        )
        retry = request.retry_policy
        if self.max_attempts:
            retry.max_attempts = integer(self.max_attempts, "max_attempts", 32)
        retry.non_retryable_error_codes.extend(self.non_retryable_error_codes)
        if self.initial_backoff is not None:
            retry.initial_backoff.CopyFrom(duration(self.initial_backoff, "initial_backoff"))
        if self.max_backoff is not None:
            retry.max_backoff.CopyFrom(duration(self.max_backoff, "max_backoff"))
        if self.backoff_multiplier:
            if not math.isfinite(self.backoff_multiplier):
                raise ValueError(f"backoff_multiplier must be a finite number, got {self.backoff_multiplier!r}")
            retry.backoff_multiplier = self.backoff_multiplier
        if retry.ByteSize() == 0:
            request.ClearField("retry_policy")  # nothing asked: the plane's policy, as before
        timeouts = {
            "schedule_to_start": self.schedule_to_start,
            "start_to_close": self.start_to_close,
            "heartbeat": self.heartbeat_timeout,
            "schedule_to_close": self.schedule_to_close,
        }
        for name, value in timeouts.items():
            if value is not None:
                option = "heartbeat_timeout" if name == "heartbeat" else name
                getattr(request.timeouts, name).CopyFrom(duration(value, option))
        return request


_FAILURES: dict[TaskState, type[TaskFailed]] = {
    TaskState.CANCELLED: TaskCancelled,
    TaskState.TIMED_OUT: TaskTimedOut,
    TaskState.DEAD_LETTER: TaskDeadLettered,
}


def raise_for_outcome(task: TaskInfo) -> TaskInfo:
    """``task`` if it succeeded; otherwise the matching :class:`TaskFailed` (carrying the task)."""
    if task.state is TaskState.SUCCEEDED:
        return task
    raise _FAILURES.get(task.state, TaskFailed)(task)


class TaskHandle:
    """A submitted task: its record at submission (``task``; the plane leaves the input out of it, ``get()``
    has it), whether an idempotency key matched an existing task, and shortcuts to follow it."""

    def __init__(self, client: MeshClient, task: TaskInfo, deduplicated: bool = False) -> None:
        self.client = client
        self.task = task
        self.deduplicated = deduplicated

    @property
    def id(self) -> str:
        return self.task.id

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the output; raises :class:`TaskFailed` (or a subclass) if the task does not succeed."""
        return await self.client.result(self.id, timeout=timeout)

    async def wait(self, timeout: float | None = None) -> TaskInfo:
        """Wait for the task to end; its final record (raises :class:`TaskFailed` unless it succeeded)."""
        return await self.client.wait(self.id, timeout=timeout)

    def watch(self, *, after_sequence: int = 0) -> AsyncIterator[TaskEvent]:
        """The task's events: history first, then live ones, ending with the terminal event."""
        return self.client.watch(self.id, after_sequence=after_sequence)

    async def get(self) -> TaskInfo:
        return await self.client.get(self.id)

    async def cancel(self, reason: str = "") -> TaskInfo:
        return await self.client.cancel(self.id, reason=reason)

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r}, capability={self.task.capability!r})"


class Subscription:
    """A live channel subscription: ``async with client.subscribe("news") as sub: async for m in sub: ...``.

    Entering waits until the subscription is live, so nothing published afterwards is missed.
    """

    def __init__(self, connection: Connection, channel: str) -> None:
        self._connection = connection
        self.channel = channel
        self._call: Any = None

    async def start(self) -> None:
        if self._call is not None:
            return
        stub = self._connection.stub(channel_pb2_grpc.ChannelServiceStub)
        self._call = stub.Subscribe(
            channel_pb2.SubscribeRequest(channel=self.channel), metadata=self._connection.metadata
        )
        try:
            first = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._connection.error(exc) from exc
        if first is grpc.aio.EOF or first.WhichOneof("event") != "started":
            raise Unavailable(self._connection.target, "subscription did not start")

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChannelMessage:
        await self.start()
        while True:
            try:
                response = await self._call.read()
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED:
                    raise StopAsyncIteration from exc
                raise self._connection.error(exc) from exc
            if response is grpc.aio.EOF:
                raise StopAsyncIteration
            if response.WhichOneof("event") == "message":
                return ChannelMessage.from_proto(response.message)


class MeshClient:
    """Async client of the control plane's API.

    ::

        async with MeshClient("localhost:50051") as client:
            task = await client.submit("text.summarize", {"text": "..."})
            print(await task.result(timeout=30))

    ``target`` defaults to ``MESHPLANE_TARGET`` or ``127.0.0.1:50051``; ``token`` to ``MESHPLANE_TOKEN``.
    Of a target naming several addresses (a list, ``ipv4:10.0.0.1:50051,10.0.0.2:50051``, or a DNS name with
    several), calls go to each connected one in turn (gRPC's round_robin policy, as in the Go SDK) rather than all
    to the first that accepts a connection; one address works as before. Over TLS without a ``server_name``, a
    list's first address is the name verified in the plane's certificate (as for an agent), so every replica's
    certificate must hold it, or give a ``server_name``.
    ``timeout`` bounds each unary call (seconds). Failed calls raise the :class:`RpcError` subclasses.
    ``connections`` (1 to 64): how many connections calls take in turn. The control plane accepts one
    connection's calls one at a time, so a client making many calls at once goes faster over several.
    ``tls``: a :class:`TLS` (whom to trust, a client certificate), True for TLS trusting the system's roots,
    False for plaintext; unset, the ``MESHPLANE_TLS*`` environment variables decide (plaintext without them).
    ``metadata``: pairs every call carries, e.g. ``[("x-correlation-id", "order-42")]`` (the plane records it with
    what the call changes, and a submit naming no correlation id takes it as the task's).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        timeout: float | None = 30.0,
        connections: int = 1,
        tls: TLS | bool | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.target = target or os.environ.get("MESHPLANE_TARGET") or DEFAULT_TARGET
        token = token or os.environ.get("MESHPLANE_TOKEN") or None
        self._connection = Connection(
            self.target,
            token=token,
            timeout=timeout,
            connections=connections,
            tls=resolve_tls(tls),
            round_robin=True,  # replicas share the calls, as the Go client's do
            metadata=metadata,
        )

    async def close(self) -> None:
        await self._connection.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _stub(self, stub_class: type[Any]) -> Any:
        return self._connection.stub(stub_class)

    @property
    def _tasks(self) -> Any:
        return self._stub(task_service_pb2_grpc.TaskServiceStub)

    @property
    def _agents(self) -> Any:
        return self._stub(agent_service_pb2_grpc.AgentServiceStub)

    # ------------------------------------------------------------ tasks

    async def submit(self, capability: str, input: Any = None, **options: Any) -> TaskHandle:
        """Submit one task; ``options`` are the other :class:`TaskSpec` fields (priority, idempotency_key, ...)."""
        return await self.submit_spec(TaskSpec(capability, input, **options))

    async def submit_spec(self, spec: TaskSpec) -> TaskHandle:
        """Submit one task described by a :class:`TaskSpec`."""
        response = await self._connection.unary(self._tasks.SubmitTask, spec.to_proto())
        return TaskHandle(self, TaskInfo.from_proto(response.task), response.deduplicated)

    async def submit_many(self, specs: Iterable[TaskSpec]) -> list[TaskHandle]:
        """Submit up to 1000 tasks atomically (all or none), in one call."""
        request = task_service_pb2.BatchSubmitTasksRequest(requests=[s.to_proto() for s in specs])
        response = await self._connection.unary(self._tasks.BatchSubmitTasks, request)
        return [
            TaskHandle(self, TaskInfo.from_proto(task), deduplicated)
            for task, deduplicated in zip(response.tasks, response.deduplicated, strict=False)
        ]

    async def get(self, task_id: str) -> TaskInfo:
        """The task with its attempts; :class:`NotFound` if there is none."""
        response = await self._connection.unary(self._tasks.GetTask, task_service_pb2.GetTaskRequest(task_id=task_id))
        return TaskInfo.from_proto(response.task)

    async def cancel(self, task_id: str, *, reason: str = "") -> TaskInfo:
        """Cancel a task (:class:`FailedPrecondition` if it already ended).

        ``reason`` (at most 1000 characters) is recorded on the task, and the handler running it sees it as
        ``ctx.cancel_message``."""
        request = task_service_pb2.CancelTaskRequest(task_id=task_id, reason=reason)
        response = await self._connection.unary(self._tasks.CancelTask, request)
        return TaskInfo.from_proto(response.task)

    async def resubmit(self, task_id: str) -> TaskHandle:
        """Submit a new task with the spec of an ended one (e.g. a dead-lettered task)."""
        request = task_service_pb2.ResubmitTaskRequest(task_id=task_id)
        response = await self._connection.unary(self._tasks.ResubmitTask, request)
        return TaskHandle(self, TaskInfo.from_proto(response.task))

    async def list_tasks_page(
        self,
        *,
        state: TaskState | str | None = None,
        capability: str = "",
        correlation_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[TaskInfo]:
        """One page of tasks, newest first (attempts omitted)."""
        request = task_service_pb2.ListTasksRequest(
            page_size=page_size,
            page_token=page_token,
            state=TaskState(str(state).upper()).to_proto() if state else 0,  # type: ignore[arg-type]
            capability=capability,
            correlation_id=correlation_id,
        )
        response = await self._connection.unary(self._tasks.ListTasks, request)
        return Page([TaskInfo.from_proto(t) for t in response.tasks], response.next_page_token, response)

    async def list_tasks(
        self,
        *,
        state: TaskState | str | None = None,
        capability: str = "",
        correlation_id: str = "",
        limit: int = 50,
    ) -> list[TaskInfo]:
        """Up to ``limit`` tasks, newest first, following pages as needed."""
        return await _up_to(
            limit,
            lambda size, token: self.list_tasks_page(
                state=state, capability=capability, correlation_id=correlation_id, page_size=size, page_token=token
            ),
        )

    async def watch(self, task_id: str, *, after_sequence: int = 0) -> AsyncGenerator[TaskEvent, None]:
        """The task's events after ``after_sequence``: stored ones, then live ones, ending after the terminal one."""
        request = task_service_pb2.WatchTaskRequest(task_id=task_id, after_sequence=after_sequence)
        call = self._tasks.WatchTask(request, metadata=self._connection.metadata)
        try:
            async for response in call:
                yield TaskEvent.from_proto(response.event)
        except grpc.aio.AioRpcError as exc:
            raise self._connection.error(exc) from exc
        finally:
            call.cancel()

    async def _terminal_event(self, task_id: str) -> TaskEvent | None:
        """Follow the task until it ends (resuming the watch if the plane blips); its terminal event."""
        after = 0
        terminal: TaskEvent | None = None
        while True:
            try:
                async with contextlib.aclosing(self.watch(task_id, after_sequence=after)) as events:
                    async for event in events:
                        after = event.sequence
                        if event.state.is_terminal:
                            terminal = event
                            break
                    if terminal is not None:
                        # The plane ends the stream right after the terminal event: let it, rather than
                        # cancel the call under the servicer's feet (bounded, in case it lingers).
                        with contextlib.suppress(TimeoutError, StopAsyncIteration):
                            await asyncio.wait_for(anext(events), _STREAM_END_GRACE_SECONDS)
                return terminal  # None: the stream ended without one (the task had ended before)
            except Unavailable:
                if terminal is not None:
                    return terminal
                await asyncio.sleep(_WATCH_RETRY_SECONDS)

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        """Wait until the task ends; its final record. Raises :class:`TaskFailed` (or
        :class:`TaskCancelled`, :class:`TaskTimedOut`, :class:`TaskDeadLettered`) unless it succeeded,
        and ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(_wait_timeout(timeout)) as scope:
            await self._terminal_event(task_id)
            return raise_for_outcome(await self._final_record(task_id, scope.when()))

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the task's output (decoded JSON, or bytes); raises like :meth:`wait`."""
        async with asyncio.timeout(_wait_timeout(timeout)) as scope:
            event = await self._terminal_event(task_id)
            if event is not None and event.state is TaskState.SUCCEEDED:
                return event.output
            return raise_for_outcome(await self._final_record(task_id, scope.when())).output

    async def _final_record(self, task_id: str, deadline: float | None) -> TaskInfo:
        """The ended task's record, read again while the plane is unavailable (it may be restarting right after
        the task ended) until the wait's ``deadline`` (loop time); then the last :class:`Unavailable`."""
        while True:
            try:
                return await self.get(task_id)
            except Unavailable:
                if deadline is not None and asyncio.get_running_loop().time() + _WATCH_RETRY_SECONDS >= deadline:
                    raise
                await asyncio.sleep(_WATCH_RETRY_SECONDS)

    # ------------------------------------------------------------ agents

    async def list_agents_page(
        self, *, capability: str = "", page_size: int = 0, page_token: str = ""
    ) -> Page[AgentInfo]:
        """One page of agents, by name."""
        request = agent_service_pb2.ListAgentsRequest(capability=capability, page_size=page_size, page_token=page_token)
        response = await self._connection.unary(self._agents.ListAgents, request)
        return Page([AgentInfo.from_proto(a) for a in response.agents], response.next_page_token, response)

    async def list_agents(self, *, capability: str = "") -> list[AgentInfo]:
        """Every registered agent, by name."""
        return await _all_pages(
            lambda token: self.list_agents_page(capability=capability, page_size=_MAX_PAGE, page_token=token)
        )

    async def get_agent(self, name: str) -> AgentInfo:
        response = await self._connection.unary(
            self._agents.GetAgent, agent_service_pb2.GetAgentRequest(agent_name=name)
        )
        return AgentInfo.from_proto(response.agent)

    async def list_instances_page(
        self, agent_name: str = "-", *, include_disconnected: bool = False, page_size: int = 0, page_token: str = ""
    ) -> Page[AgentInstanceInfo]:
        """One page of the instances of one agent (``"-"``: of every agent); connected ones (CONNECTED or
        DRAINING) unless ``include_disconnected``."""
        request = agent_service_pb2.ListAgentInstancesRequest(
            agent_name=agent_name, include_disconnected=include_disconnected, page_size=page_size, page_token=page_token
        )
        response = await self._connection.unary(self._agents.ListAgentInstances, request)
        return Page([AgentInstanceInfo.from_proto(i) for i in response.instances], response.next_page_token, response)

    async def list_instances(
        self, agent_name: str = "-", *, include_disconnected: bool = False
    ) -> list[AgentInstanceInfo]:
        """Instances of one agent (``"-"``: of every agent), following pages."""
        return await _all_pages(
            lambda token: self.list_instances_page(
                agent_name, include_disconnected=include_disconnected, page_size=_MAX_PAGE, page_token=token
            )
        )

    async def drain_instance(
        self, agent_name: str, instance_id: str, *, timeout: Seconds | None = None, reason: str = ""
    ) -> AgentInstanceInfo:
        """Ask a connected instance to finish its work and reconnect (rolling upgrades)."""
        request = agent_service_pb2.DrainAgentInstanceRequest(
            agent_name=agent_name, instance_id=instance_id, reason=reason
        )
        if timeout is not None:
            request.timeout.CopyFrom(duration(timeout, "timeout"))
        response = await self._connection.unary(self._agents.DrainAgentInstance, request)
        return AgentInstanceInfo.from_proto(response.instance)

    # ------------------------------------------------------------ channels

    async def publish(self, channel: str, data: Any, *, headers: Mapping[str, str] | None = None) -> ChannelMessage:
        """Publish a message to every current subscriber of ``channel``."""
        request = channel_pb2.PublishRequest(channel=channel, payload=_payload.encode(data), headers=headers)
        response = await self._connection.unary(self._stub(channel_pb2_grpc.ChannelServiceStub).Publish, request)
        return ChannelMessage.from_proto(response.message)

    def subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel`` (use ``async with``; iterate for messages)."""
        return Subscription(self._connection, channel)

    async def list_channels_page(self, *, page_size: int = 0, page_token: str = "") -> Page[ChannelInfo]:
        """One page of the channels in use (published to or subscribed to within the channel retention), by
        name."""
        request = channel_pb2.ListChannelsRequest(page_size=page_size, page_token=page_token)
        response = await self._connection.unary(self._stub(channel_pb2_grpc.ChannelServiceStub).ListChannels, request)
        return Page([ChannelInfo.from_proto(c) for c in response.channels], response.next_page_token, response)

    async def list_channels(self) -> list[ChannelInfo]:
        """Every channel in use, by name."""
        return await _all_pages(lambda token: self.list_channels_page(page_size=_MAX_PAGE, page_token=token))

    # ------------------------------------------------------------ state

    def state(self, namespace: str) -> StateStore:
        """The state entries of ``namespace`` (an agent's tasks use the namespace named after the agent)."""
        return StateStore(self._connection, namespace)

    async def get_state(self, namespace: str, key: str) -> StateEntry | None:
        """The entry, or None if absent."""
        return await self.state(namespace).get(key)

    async def put_state(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        ttl: Seconds | None = None,
        expected_version: int | None = None,
    ) -> StateEntry:
        """Write an entry (compare-and-set with ``expected_version``; :class:`VersionConflict` on mismatch)."""
        return await self.state(namespace).put(key, value, ttl=ttl, expected_version=expected_version)

    async def delete_state(self, namespace: str, key: str, *, expected_version: int | None = None) -> bool:
        """Delete an entry; False if it did not exist."""
        return await self.state(namespace).delete(key, expected_version=expected_version)

    # ------------------------------------------------------------ audit

    async def list_audit_entries_page(
        self,
        *,
        resource: str = "",
        actor: str = "",
        action: str = "",
        correlation_id: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[AuditEntry]:
        """One page of the audit trail, newest first: entries matching every filter given, recorded at or after
        ``since`` and before ``until`` (aware datetimes; naive ones are taken as UTC)."""
        request = audit_pb2.ListAuditEntriesRequest(
            resource=resource,
            actor=actor,
            action=action,
            correlation_id=correlation_id,
            start_time=_timestamp(since) if since is not None else None,
            end_time=_timestamp(until) if until is not None else None,
            page_size=page_size,
            page_token=page_token,
        )
        response = await self._connection.unary(self._stub(audit_pb2_grpc.AuditServiceStub).ListAuditEntries, request)
        return Page([AuditEntry.from_proto(e) for e in response.entries], response.next_page_token, response)

    async def list_audit_entries(
        self,
        *,
        resource: str = "",
        actor: str = "",
        action: str = "",
        correlation_id: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
    ) -> list[AuditEntry]:
        """Up to ``limit`` audit entries, newest first, following pages as needed."""
        return await _up_to(
            limit,
            lambda size, token: self.list_audit_entries_page(
                resource=resource,
                actor=actor,
                action=action,
                correlation_id=correlation_id,
                since=since,
                until=until,
                page_size=size,
                page_token=token,
            ),
        )
