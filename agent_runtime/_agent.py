"""`Agent`: declare task and channel handlers, then serve them on the mesh."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from agent_runtime._handlers import ChannelHandler, TaskHandler, channel_handler, task_handler
from agent_runtime._rpc import DEFAULT_TARGET
from agent_runtime._runtime import AgentRuntime, AgentSpec, AgentStatus
from agent_runtime._tls import TLS
from agent_runtime._tls import resolve as resolve_tls

logger = logging.getLogger("agent_runtime.agent")

F = TypeVar("F", bound=Callable[..., Any])

_NOT_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _default_instance_id(name: str) -> str:
    host = _NOT_ID_CHARS.sub("-", socket.gethostname()).strip(".-") or "host"
    return f"{name}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"[:128]


def default_target() -> str:
    """``MESHPLANE_TARGET`` or ``127.0.0.1:50051``."""
    return os.environ.get("MESHPLANE_TARGET") or DEFAULT_TARGET


class Agent:
    """A named, versioned program that serves capabilities on the mesh.

    ::

        agent = Agent("summarizer", version="1.0.0", max_concurrency=8)

        @agent.task("text.summarize")
        async def summarize(ctx: TaskContext, data: dict) -> dict:
            await ctx.progress(0.5, "halfway")
            return {"summary": data["text"][:100]}

        agent.run("localhost:50051")

    Handlers may be ``async def`` (run on the event loop) or plain ``def`` (run in a thread pool).
    A handler's second parameter may be typed (a pydantic model, or any type pydantic validates):
    the input is validated, and a mismatch fails the task with the non-retryable code ``validation_failed``.
    """

    def __init__(
        self,
        name: str,
        version: str = "0.0.0",
        *,
        max_concurrency: int = 16,
        labels: Mapping[str, str] | None = None,
        description: str = "",
        instance_id: str | None = None,
        weight: int = 1,
        token: str | None = None,
        drain_timeout: float = 30.0,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        if not 1 <= max_concurrency <= 10000:
            raise ValueError("max_concurrency must be within 1..10000")
        self.name = name
        self.version = version
        self.description = description
        self.labels = dict(labels or {})
        self.max_concurrency = max_concurrency
        self.weight = weight
        self.instance_id = instance_id or _default_instance_id(name)  # stable for this object's lifetime
        self.token = token
        self.drain_timeout = drain_timeout
        self.reconnect_max_delay = reconnect_max_delay
        self._tasks: dict[str, TaskHandler] = {}
        self._channels: dict[str, ChannelHandler] = {}
        self._runtime: AgentRuntime | None = None
        self._status = AgentStatus.NEW  # when not serving
        self._serving = asyncio.Event()

    # ------------------------------------------------------------ declaring handlers

    def task(
        self,
        capability: str,
        *,
        description: str = "",
        input_schema: dict[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function as the handler of ``capability``.

        ``input_schema`` defaults to the JSON Schema of the input's type (e.g. a pydantic model),
        ``description`` to the first line of the docstring.
        """

        def register(function: F) -> F:
            if capability in self._tasks:
                raise ValueError(f"capability {capability!r} already has a handler")
            self._tasks[capability] = task_handler(
                capability, function, description=description, input_schema=input_schema, output_schema=output_schema
            )
            return function

        return register

    def on_channel(self, channel: str) -> Callable[[F], F]:
        """Register the decorated function for messages on ``channel``: ``(ctx: ChannelContext, message)``."""

        def register(function: F) -> F:
            if channel in self._channels:
                raise ValueError(f"channel {channel!r} already has a handler")
            self._channels[channel] = channel_handler(channel, function)
            return function

        return register

    @property
    def capabilities(self) -> list[str]:
        """The capability names this agent serves."""
        return list(self._tasks)

    @property
    def channels(self) -> list[str]:
        """The channels this agent subscribes to."""
        return list(self._channels)

    # ------------------------------------------------------------ state

    @property
    def status(self) -> AgentStatus:
        return self._runtime.status if self._runtime is not None else self._status

    @property
    def session_id(self) -> str | None:
        """The current session's id; None while not connected."""
        runtime = self._runtime
        return runtime.session_id or None if runtime is not None else None

    @property
    def in_flight(self) -> int:
        """Handlers running now."""
        return self._runtime.in_flight if self._runtime is not None else 0

    # ------------------------------------------------------------ serving

    def _spec(self) -> AgentSpec:
        if not self._tasks and not self._channels:
            raise ValueError(f"agent {self.name!r} has no task or channel handlers")
        return AgentSpec(
            name=self.name,
            version=self.version,
            instance_id=self.instance_id,
            description=self.description,
            labels=dict(self.labels),
            max_concurrency=self.max_concurrency,
            weight=self.weight,
            tasks=dict(self._tasks),
            channels=dict(self._channels),
            backoff_max=max(0.1, self.reconnect_max_delay),
            drain_timeout=self.drain_timeout,
        )

    async def serve(
        self, target: str | None = None, *, token: str | None = None, tls: TLS | bool | None = None
    ) -> None:
        """Connect to the control plane at ``target`` and serve until ``drain()`` or ``stop()``.

        Reconnects with jittered exponential backoff whenever the link breaks. Raises
        :class:`RegistrationRejected` (or :class:`Unauthenticated`) when no retry can succeed, and
        :class:`InstanceIdTaken` when another agent registered this one's instance_id (reconnecting would take the
        session back from it, and both would flap for good).
        ``target`` defaults to ``MESHPLANE_TARGET`` or ``127.0.0.1:50051``, ``token`` to ``MESHPLANE_TOKEN``;
        ``tls`` as :class:`MeshClient`'s (unset: the ``MESHPLANE_TLS*`` environment variables decide).

        ``target`` may name several replicas (``ipv4:10.0.0.1:50051,10.0.0.2:50051``, or a DNS name with several
        addresses): each new link stream goes to the next one (gRPC's round_robin). After a session that failed
        before the plane registered the agent (a replica that lost its database answers UNAVAILABLE), the next
        attempt goes over a new connection, which a load balancer may send to another replica; when that new one
        failed too, the attempt after it stays on it (round_robin then takes the next address).
        """
        if self._runtime is not None:
            raise RuntimeError(f"agent {self.name!r} is already serving")
        chosen = token or self.token or os.environ.get("MESHPLANE_TOKEN") or None
        runtime = AgentRuntime(self._spec(), target or default_target(), token=chosen, tls=resolve_tls(tls))
        self._runtime = runtime
        self._serving.set()
        try:
            await runtime.run()
        finally:
            self._runtime = None
            self._status = AgentStatus.STOPPED
            self._serving = asyncio.Event()

    def run(self, target: str | None = None, *, token: str | None = None, tls: TLS | bool | None = None) -> None:
        """Serve until SIGTERM/SIGINT (blocking). The first signal drains gracefully, a second one stops at once."""
        asyncio.run(self.run_async(target, token=token, tls=tls))

    async def run_async(
        self, target: str | None = None, *, token: str | None = None, tls: TLS | bool | None = None
    ) -> None:
        """``run()`` for code that already has an event loop: serve, draining on SIGTERM/SIGINT."""
        loop = asyncio.get_running_loop()
        serving = asyncio.ensure_future(self.serve(target, token=token, tls=tls))
        draining: list[asyncio.Task[None]] = []

        def on_signal(name: str) -> None:
            if not draining:
                logger.info("agent %s: %s received, draining (send it again to stop at once)", self.name, name)
                draining.append(loop.create_task(self.drain()))
            else:
                logger.warning("agent %s: %s received again, stopping now", self.name, name)
                if self._runtime is not None:
                    self._runtime.stop()

        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, on_signal, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread / Windows
                pass
        try:
            await serving
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            for task in draining:
                task.cancel()

    async def wait_connected(self, timeout: float | None = 30.0) -> None:
        """Wait until the agent is registered with the control plane (after ``serve()`` was started)."""
        async with asyncio.timeout(timeout):
            await self._serving.wait()
            runtime = self._runtime
            if runtime is not None:
                await runtime.wait_connected()

    async def drain(self, timeout: float | None = None) -> None:
        """Tell the plane to send no more work, finish in-flight tasks, deliver their results, then leave.

        Tasks still running when ``timeout`` (default: ``drain_timeout``) passes are cancelled and reported failed
        with the retryable code ``agent_stopped``, so that the plane re-queues them at once.
        """
        runtime = self._runtime
        if runtime is not None:
            await runtime.drain(timeout)

    async def stop(self) -> None:
        """Leave at once: running handlers are cancelled; each of their attempts is reported failed (retryable code
        ``agent_stopped``, at most a couple of seconds spent waiting for the plane's acknowledgement) so that the
        plane re-runs the task at once rather than after its lease runs out."""
        runtime = self._runtime
        if runtime is not None:
            runtime.stop()
            await runtime.wait_finished()

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, version={self.version!r}, capabilities={self.capabilities})"
