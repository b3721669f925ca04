"""`SyncMeshClient`: the client for code without an event loop (scripts, notebooks, WSGI apps)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from agent_runtime._client import MeshClient, TaskHandle, TaskSpec
from agent_runtime._state import Seconds
from agent_runtime._tls import TLS
from agent_runtime._types import (
    AgentInfo,
    AgentInstanceInfo,
    AuditEntry,
    ChannelInfo,
    ChannelMessage,
    Page,
    StateEntry,
    SubmitResult,
    TaskEvent,
    TaskInfo,
    TaskState,
)

T = TypeVar("T")


def _submitted(handle: TaskHandle) -> SubmitResult:
    """What the async client's handle says, without the async shortcuts (this client has its own)."""
    return SubmitResult.of(handle.task, handle.deduplicated)


class SyncMeshClient:
    """The same operations as :class:`MeshClient`, blocking. Runs its own event loop; use from one thread.

    ::

        with SyncMeshClient("localhost:50051") as client:
            task = client.submit("demo.echo", {"text": "hi"})
            print(client.result(task.id, timeout=30))
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        timeout: float | None = 30.0,
        tls: TLS | bool | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._runner = asyncio.Runner()
        self._client = MeshClient(target, token=token, timeout=timeout, tls=tls, metadata=metadata)
        self.target = self._client.target

    def _run(self, awaitable: Any) -> Any:
        return self._runner.run(awaitable)

    def close(self) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> T:
            return await anext(iterator)

        while True:
            try:
                yield self._run(step())
            except StopAsyncIteration:
                return

    # ------------------------------------------------------------ tasks

    def submit(self, capability: str, input: Any = None, **options: Any) -> SubmitResult:
        """Submit one task; its record as stored, with ``deduplicated`` set when its idempotency key matched an
        existing task (``options``: the other :class:`TaskSpec` fields)."""
        return _submitted(self._run(self._client.submit(capability, input, **options)))

    def submit_spec(self, spec: TaskSpec) -> SubmitResult:
        """Submit one task described by a :class:`TaskSpec`; its record as stored, with ``deduplicated``."""
        return _submitted(self._run(self._client.submit_spec(spec)))

    def submit_many(self, specs: Iterable[TaskSpec]) -> list[SubmitResult]:
        """Submit up to 1000 tasks atomically; their records as stored, each with ``deduplicated``."""
        handles: list[TaskHandle] = self._run(self._client.submit_many(specs))
        return [_submitted(handle) for handle in handles]

    def get(self, task_id: str) -> TaskInfo:
        result: TaskInfo = self._run(self._client.get(task_id))
        return result

    def cancel(self, task_id: str, *, reason: str = "") -> TaskInfo:
        result: TaskInfo = self._run(self._client.cancel(task_id, reason=reason))
        return result

    def resubmit(self, task_id: str) -> TaskInfo:
        """Submit a new task with the spec of an ended one (e.g. a dead-lettered task); the new task."""
        handle = self._run(self._client.resubmit(task_id))
        task: TaskInfo = handle.task
        return task

    def list_tasks_page(
        self,
        *,
        state: TaskState | str | None = None,
        capability: str = "",
        correlation_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[TaskInfo]:
        """One page of tasks, newest first (attempts omitted)."""
        result: Page[TaskInfo] = self._run(
            self._client.list_tasks_page(
                state=state,
                capability=capability,
                correlation_id=correlation_id,
                page_size=page_size,
                page_token=page_token,
            )
        )
        return result

    def list_tasks(
        self, *, state: TaskState | str | None = None, capability: str = "", correlation_id: str = "", limit: int = 50
    ) -> list[TaskInfo]:
        result: list[TaskInfo] = self._run(
            self._client.list_tasks(state=state, capability=capability, correlation_id=correlation_id, limit=limit)
        )
        return result

    def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        """Block until the task ends; raises :class:`TaskFailed` (or a subclass) unless it succeeded."""
        result: TaskInfo = self._run(self._client.wait(task_id, timeout=timeout))
        return result

    def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """Block until the task's output is there."""
        return self._run(self._client.result(task_id, timeout=timeout))

    def watch(self, task_id: str, *, after_sequence: int = 0) -> Iterator[TaskEvent]:
        """The task's events, ending after the terminal one."""
        events = self._client.watch(task_id, after_sequence=after_sequence)
        try:
            yield from self._iterate(events)
        finally:
            self._run(events.aclose())

    # ------------------------------------------------------------ agents

    def list_agents_page(self, *, capability: str = "", page_size: int = 0, page_token: str = "") -> Page[AgentInfo]:
        """One page of agents, by name."""
        result: Page[AgentInfo] = self._run(
            self._client.list_agents_page(capability=capability, page_size=page_size, page_token=page_token)
        )
        return result

    def list_agents(self, *, capability: str = "") -> list[AgentInfo]:
        result: list[AgentInfo] = self._run(self._client.list_agents(capability=capability))
        return result

    def get_agent(self, name: str) -> AgentInfo:
        result: AgentInfo = self._run(self._client.get_agent(name))
        return result

    def list_instances_page(
        self, agent_name: str = "-", *, include_disconnected: bool = False, page_size: int = 0, page_token: str = ""
    ) -> Page[AgentInstanceInfo]:
        """One page of the instances of one agent (``"-"``: of every agent)."""
        result: Page[AgentInstanceInfo] = self._run(
            self._client.list_instances_page(
                agent_name, include_disconnected=include_disconnected, page_size=page_size, page_token=page_token
            )
        )
        return result

    def list_instances(self, agent_name: str = "-", *, include_disconnected: bool = False) -> list[AgentInstanceInfo]:
        result: list[AgentInstanceInfo] = self._run(
            self._client.list_instances(agent_name, include_disconnected=include_disconnected)
        )
        return result

    def drain_instance(
        self, agent_name: str, instance_id: str, *, timeout: Seconds | None = None, reason: str = ""
    ) -> AgentInstanceInfo:
        """Ask a connected instance to finish its work and reconnect (rolling upgrades); the instance, draining."""
        result: AgentInstanceInfo = self._run(
            self._client.drain_instance(agent_name, instance_id, timeout=timeout, reason=reason)
        )
        return result

    # ------------------------------------------------------------ channels

    def publish(self, channel: str, data: Any, *, headers: Mapping[str, str] | None = None) -> ChannelMessage:
        result: ChannelMessage = self._run(self._client.publish(channel, data, headers=headers))
        return result

    @contextlib.contextmanager
    def subscribe(self, channel: str) -> Iterator[Iterator[ChannelMessage]]:
        """``with client.subscribe("news") as messages: for m in messages: ...`` (live once entered)."""
        subscription = self._client.subscribe(channel)
        self._run(subscription.start())
        try:
            yield self._iterate(subscription)
        finally:
            self._run(subscription.close())

    def list_channels_page(self, *, page_size: int = 0, page_token: str = "") -> Page[ChannelInfo]:
        """One page of the channels in use, by name."""
        result: Page[ChannelInfo] = self._run(
            self._client.list_channels_page(page_size=page_size, page_token=page_token)
        )
        return result

    def list_channels(self) -> list[ChannelInfo]:
        result: list[ChannelInfo] = self._run(self._client.list_channels())
        return result

    # ------------------------------------------------------------ state

    def get_state(self, namespace: str, key: str) -> StateEntry | None:
        result: StateEntry | None = self._run(self._client.get_state(namespace, key))
        return result

    def put_state(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        ttl: Seconds | None = None,
        expected_version: int | None = None,
    ) -> StateEntry:
        result: StateEntry = self._run(
            self._client.put_state(namespace, key, value, ttl=ttl, expected_version=expected_version)
        )
        return result

    def delete_state(self, namespace: str, key: str, *, expected_version: int | None = None) -> bool:
        result: bool = self._run(self._client.delete_state(namespace, key, expected_version=expected_version))
        return result

    # ------------------------------------------------------------ audit

    def list_audit_entries_page(
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
        """One page of the audit trail, newest first (see :meth:`MeshClient.list_audit_entries_page`)."""
        result: Page[AuditEntry] = self._run(
            self._client.list_audit_entries_page(
                resource=resource,
                actor=actor,
                action=action,
                correlation_id=correlation_id,
                since=since,
                until=until,
                page_size=page_size,
                page_token=page_token,
            )
        )
        return result

    def list_audit_entries(
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
        result: list[AuditEntry] = self._run(
            self._client.list_audit_entries(
                resource=resource,
                actor=actor,
                action=action,
                correlation_id=correlation_id,
                since=since,
                until=until,
                limit=limit,
            )
        )
        return result
