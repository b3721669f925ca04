"""What a handler sees: the task (or channel message) it works on, and what it may do meanwhile."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Coroutine, Generator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from agent_runtime._state import StateStore
from meshplane.v1 import agent_link_pb2

T = TypeVar("T")

task_logger = logging.getLogger("agent_runtime.task")
channel_logger = logging.getLogger("agent_runtime.channel")


class ContextPort(Protocol):
    """What contexts need from the running agent (implemented by the runtime)."""

    agent_name: str
    instance_id: str
    loop: asyncio.AbstractEventLoop
    loop_thread: int
    state: StateStore

    def update(
        self,
        task_id: str,
        attempt: int,
        kind: agent_link_pb2.TaskUpdateKind,
        progress: float = 0.0,
        message: str = "",
    ) -> None:
        """Queue a task update (any thread)."""

    def publish(self, channel: str, data: Any, headers: Mapping[str, str] | None) -> None:
        """Queue a channel publish (any thread); raise at once what the plane would refuse."""


class _Done:
    """An already-finished awaitable: lets ``ctx.progress()`` be awaited in async code and called in sync code."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


_DONE = _Done()


def _blocking(port: ContextPort, awaitable: Awaitable[T], timeout: float | None) -> T:
    if threading.get_ident() == port.loop_thread:
        raise RuntimeError("blocking() is for sync handlers; in async handlers use `await`")

    async def _await() -> T:
        return await awaitable

    coroutine: Coroutine[Any, Any, T] = _await()
    return asyncio.run_coroutine_threadsafe(coroutine, port.loop).result(timeout)


class TaskContext:
    """The running attempt of one task, handed to every task handler as its first argument.

    ``progress``, ``heartbeat`` and ``publish`` queue their message at once and return an awaitable,
    so ``await ctx.progress(0.5)`` (async handlers) and ``ctx.progress(0.5)`` (sync handlers) both work.
    """

    __slots__ = ("_assignment", "_cancel_message", "_cancel_reason", "_cancelled", "_logger", "_port")

    def __init__(self, port: ContextPort, assignment: agent_link_pb2.Assignment) -> None:
        self._port = port
        self._assignment = assignment
        self._cancelled: asyncio.Event | None = None
        self._cancel_reason = ""
        self._cancel_message = ""
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    # ------------------------------------------------------------ the task

    @property
    def task_id(self) -> str:
        return self._assignment.task_id

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self._assignment.attempt

    @property
    def max_attempts(self) -> int:
        return self._assignment.max_attempts

    @property
    def capability(self) -> str:
        return self._assignment.capability

    @property
    def priority(self) -> int:
        return self._assignment.priority

    @property
    def correlation_id(self) -> str:
        return self._assignment.correlation_id

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._assignment.metadata)

    @property
    def traceparent(self) -> str:
        """The submitter's W3C trace context."""
        return self._assignment.traceparent

    @property
    def deadline(self) -> datetime | None:
        """When this attempt must be done (UTC), if the plane set a deadline."""
        if not self._assignment.HasField("deadline"):
            return None
        deadline = self._assignment.deadline
        return datetime.fromtimestamp(deadline.seconds + deadline.nanos / 1e9, UTC)

    @property
    def agent_name(self) -> str:
        return self._port.agent_name

    @property
    def instance_id(self) -> str:
        return self._port.instance_id

    # ------------------------------------------------------------ reporting

    def progress(self, fraction: float, message: str = "") -> Awaitable[None]:
        """Report progress (0..1) and an optional message; also resets the task's heartbeat timeout."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress must be within 0..1, got {fraction}")
        self._port.update(
            self.task_id, self.attempt, agent_link_pb2.TASK_UPDATE_KIND_PROGRESS, float(fraction), message
        )
        return _DONE

    def heartbeat(self) -> Awaitable[None]:
        """Tell the plane the handler is alive (needed when the task has a heartbeat timeout)."""
        self._port.update(self.task_id, self.attempt, agent_link_pb2.TASK_UPDATE_KIND_HEARTBEAT)
        return _DONE

    def publish(self, channel: str, data: Any, *, headers: Mapping[str, str] | None = None) -> Awaitable[None]:
        """Publish a message (any JSON value, a pydantic model, or bytes) to a channel.

        What the control plane would refuse raises here, before anything is sent (the plane's own answer could not
        reach this call): :class:`InvalidArgument` for a channel name or headers it does not take, or JSON nested more
        than 32 levels deep; :class:`ResourceExhausted` for a payload over its ``max_payload_bytes``;
        :class:`NotSerializable` for a value that is not JSON.
        """
        self._port.publish(channel, data, headers)
        return _DONE

    # ------------------------------------------------------------ state

    @property
    def state(self) -> StateStore:
        """Key/value state in the namespace named after the agent (async; from sync handlers use ``blocking``)."""
        return self._port.state

    def blocking(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """From a sync handler: run an SDK awaitable (e.g. ``ctx.state.get("k")``) and wait for its result."""
        return _blocking(self._port, awaitable, timeout)

    # ------------------------------------------------------------ cancellation

    @property
    def cancelled(self) -> asyncio.Event:
        """Set when the plane cancels this attempt (or its deadline passes). Async handlers may ``await`` it."""
        if self._cancelled is None:
            self._cancelled = asyncio.Event()
            if self._cancel_reason:
                self._cancelled.set()
        return self._cancelled

    @property
    def cancel_reason(self) -> str:
        """Why the attempt was cancelled ("cancelled", "timed_out", "deadline_exceeded", ...); empty if not."""
        return self._cancel_reason

    @property
    def cancel_message(self) -> str:
        """The reason the client gave when it cancelled the task (``MeshClient.cancel(task_id, reason=...)``), in its
        own words; empty when it gave none, when the attempt was not cancelled, or when the cancellation is not a
        client's (a timeout, a deadline, the agent stopping). Set before ``cancelled`` is set and before an async
        handler sees ``asyncio.CancelledError``, so the handler can read it as soon as it notices the cancellation."""
        return self._cancel_message

    def is_cancelled(self) -> bool:
        """True once the attempt is cancelled; safe to call from any thread (sync handlers poll this)."""
        return bool(self._cancel_reason)

    def raise_if_cancelled(self) -> None:
        """Raise ``asyncio.CancelledError`` if the attempt was cancelled (a handy check in sync loops)."""
        if self._cancel_reason:
            raise asyncio.CancelledError(self._cancel_reason)

    def _cancel(self, reason: str, message: str = "") -> None:
        if self._cancel_reason:
            return
        self._cancel_message = message  # first: whoever sees the reason (any thread) sees the message too
        self._cancel_reason = reason
        if self._cancelled is not None:
            self._cancelled.set()

    # ------------------------------------------------------------ logging

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry ``task_id``, ``attempt``, ``capability`` and ``correlation_id``."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                task_logger,
                {
                    "task_id": self.task_id,
                    "attempt": self.attempt,
                    "capability": self.capability,
                    "correlation_id": self.correlation_id,
                    "agent": self.agent_name,
                },
            )
        return self._logger

    def __repr__(self) -> str:
        return f"TaskContext(task_id={self.task_id!r}, attempt={self.attempt}, capability={self.capability!r})"


class ChannelContext:
    """A channel message being handled: where it came from, and what the handler may do."""

    __slots__ = ("_logger", "_message", "_port")

    def __init__(self, port: ContextPort, message: Any) -> None:
        self._port = port
        self._message = message
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def channel(self) -> str:
        return str(self._message.channel)

    @property
    def message_id(self) -> str:
        return str(self._message.message_id)

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._message.headers)

    @property
    def publisher(self) -> str:
        """Who published it: "agent/<name>/<instance_id>" or "client"."""
        return str(self._message.publisher)

    @property
    def publish_time(self) -> datetime | None:
        stamp = self._message.publish_time
        if stamp.seconds == 0 and stamp.nanos == 0:
            return None
        return datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, UTC)

    @property
    def agent_name(self) -> str:
        return self._port.agent_name

    def publish(self, channel: str, data: Any, *, headers: Mapping[str, str] | None = None) -> Awaitable[None]:
        """Publish a message to a channel (e.g. a reply); raises as :meth:`TaskContext.publish` does."""
        self._port.publish(channel, data, headers)
        return _DONE

    @property
    def state(self) -> StateStore:
        """Key/value state in the namespace named after the agent."""
        return self._port.state

    def blocking(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """From a sync handler: run an SDK awaitable and wait for its result."""
        return _blocking(self._port, awaitable, timeout)

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry ``channel`` and ``message_id``."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                channel_logger, {"channel": self.channel, "message_id": self.message_id, "agent": self.agent_name}
            )
        return self._logger
