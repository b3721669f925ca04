"""The running agent: what survives reconnects (running attempts, unacknowledged results), and the reconnect loop.

Protocol duties (docs/agent-link.md): answer every assignment with exactly one result; keep results until
the plane acknowledges them and resend them after a reconnect; list held attempts when registering;
signal cancellations to handlers; finish work before leaving on `drain` or SIGTERM. An attempt the agent gives
up because it is leaving (past the drain timeout, or on a hard stop) is answered too, with the retryable error
`agent_stopped`, and leaving waits (bounded) for those results' acknowledgements: the plane re-queues the task at
once instead of when the lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import grpc

from agent_runtime import _limits, _payload
from agent_runtime._backoff import Backoff
from agent_runtime._context import ChannelContext, TaskContext
from agent_runtime._errors import InstanceIdTaken, RegistrationRejected, RpcError, TaskError
from agent_runtime._handlers import ChannelHandler, InputInvalid, TaskHandler
from agent_runtime._inbox import ChannelInbox
from agent_runtime._link import LinkSession
from agent_runtime._outbox import Outbox, Ref
from agent_runtime._rpc import Connection, cause_hidden
from agent_runtime._state import StateStore
from agent_runtime._tasks import TaskOwner
from agent_runtime._tls import TLS
from agent_runtime._version import __version__
from meshplane.v1 import agent_link_pb2, common_pb2

logger = logging.getLogger("agent_runtime.agent")

# A session that stayed up this long resets the reconnect backoff.
_STABLE_SESSION_SECONDS = 5.0
# How long leaving waits for the plane to acknowledge the results of the attempts it gave up (`agent_stopped`).
_GIVE_UP_ACK_SECONDS = 2.0
_TRACEBACK_LIMIT = 4000

try:  # resource figures for heartbeats; optional
    import psutil

    _PROCESS: Any = psutil.Process()
except Exception:  # pragma: no cover - psutil missing or unusable
    _PROCESS = None


class AgentStatus(StrEnum):
    """Where an agent is in its life."""

    NEW = "new"
    CONNECTING = "connecting"  # (re)connecting to the control plane
    CONNECTED = "connected"  # registered, taking work
    DRAINING = "draining"  # finishing in-flight work, taking none
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """What an agent registers: identity, limits and handlers."""

    name: str
    version: str
    instance_id: str
    description: str
    labels: Mapping[str, str]
    max_concurrency: int
    weight: int
    tasks: Mapping[str, TaskHandler]
    channels: Mapping[str, ChannelHandler]
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    drain_timeout: float = 30.0


@dataclass(slots=True)
class _Attempt:
    ctx: TaskContext
    handler: TaskHandler
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    discard: bool = False  # no longer ours (not_held): its result is dropped


@dataclass(frozen=True, slots=True)
class _Drain:
    """A drain the agent started itself (SIGTERM or ``Agent.drain``)."""

    deadline: float  # monotonic


def _error_result(
    ref: Ref, code: str, message: str, retryable: bool, details: Mapping[str, Any] | None = None
) -> agent_link_pb2.TaskResult:
    error = common_pb2.TaskError(code=code, message=message, retryable=retryable)
    if details:
        try:
            error.details.CopyFrom(_payload.dict_to_struct(dict(details)))
        except (TypeError, ValueError):
            error.details.CopyFrom(_payload.dict_to_struct({"details": repr(details)}))
    return agent_link_pb2.TaskResult(task_id=ref[0], attempt=ref[1], error=error)


def _stopped_result(ref: Ref, instance_id: str) -> agent_link_pb2.TaskResult:
    message = f"agent instance {instance_id!r} stopped before the task finished"
    return _error_result(ref, "agent_stopped", message, True)


class AgentRuntime:
    """One ``serve()`` of an agent: connects, reconnects, runs handlers, and leaves cleanly."""

    def __init__(self, spec: AgentSpec, target: str, *, token: str | None = None, tls: TLS | None = None) -> None:
        self.spec = spec
        self.agent_name = spec.name
        self.instance_id = spec.instance_id
        self.target = target
        self.connection = Connection(target, token=token, keepalive=True, tls=tls, round_robin=True)
        self._tls_hint = self.connection.closed_hint if tls is not None else ""  # (plaintext agents: as before)
        self.state = StateStore(self.connection, spec.name)
        self.outbox = Outbox()
        self.status = AgentStatus.NEW
        self.session_id = ""
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self._running: dict[Ref, _Attempt] = {}
        self._abandoned: dict[Ref, _Attempt] = {}  # given up (`agent_stopped` sent); the handler may still run
        self._giving_up = False  # leaving: attempts are answered with `agent_stopped`, none is started
        self._backlog: dict[Ref, agent_link_pb2.Assignment] = {}  # assigned beyond max_concurrency (rare)
        self._unacked: dict[Ref, agent_link_pb2.TaskResult] = {}
        self._held_at_register: set[Ref] = set()
        # What the plane takes at most in a payload, as its last `registered` said (0: not known yet, not checked):
        # a publish or an output over it is refused here, before it is sent (see _limits).
        self._max_payload_bytes = 0
        self._executor: ThreadPoolExecutor | None = None
        self._background = TaskOwner(f"agent-{spec.name}")
        self._inboxes: dict[str, ChannelInbox] = {}
        self._session: LinkSession | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._wakeup = asyncio.Event()  # stop or drain finished: leave the reconnect loop
        self._hard_stop = False
        self._drain: _Drain | None = None
        self._plane_drain: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._finished = asyncio.Event()
        self._capabilities = [self._capability(h) for h in spec.tasks.values()]

    # ------------------------------------------------------------ the reconnect loop

    async def run(self) -> None:
        backoff = Backoff(self.spec.backoff_initial, self.spec.backoff_max)
        failures = 0
        reconnecting = False
        reopened = False  # the connection was replaced after the last attempt, which failed before `registered`
        try:
            while not self._wakeup.is_set():
                if reconnecting:
                    self.connection.renew_tls()  # a renewed client certificate goes out on the new connection
                reconnecting = True
                self.status = AgentStatus.DRAINING if self._drain else AgentStatus.CONNECTING
                session = LinkSession(self, self.connection)
                self._session = session
                started = time.monotonic()
                error = await self._run_session(session)
                self._disconnected()
                if self._wakeup.is_set():
                    break
                if isinstance(error, RegistrationRejected | InstanceIdTaken | RpcError):
                    raise error  # no reconnect can fix it (or, for InstanceIdTaken, one would do harm)
                if session.registered is not None:
                    failures = 0
                    reopened = False
                    if error is None or time.monotonic() - started > _STABLE_SESSION_SECONDS:
                        backoff.reset()  # it worked: come back soon (drained, replaced, plane restarting)
                else:
                    reopened = self._reconnect_after_failed_registration(reopened)
                delay = backoff.next_delay()
                if error is None:
                    logger.info(
                        "agent %s: link to %s closed; reconnecting in %.2fs", self.agent_name, self.target, delay
                    )
                else:
                    failures += 1
                    # The first failure is news; while the plane stays away, only every tenth is.
                    log = logger.warning if failures == 1 or failures % 10 == 0 else logger.debug
                    log(
                        "agent %s: link to %s lost (%s); reconnecting in %.2fs (attempt %d)",
                        self.agent_name,
                        self.target,
                        _describe(error)
                        + (self._tls_hint if isinstance(error, grpc.aio.AioRpcError) and cause_hidden(error) else ""),
                        delay,
                        failures,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay)
        finally:
            await self._shutdown()

    def _reconnect_after_failed_registration(self, reopened: bool) -> bool:
        """After a session that failed before `registered` (say a replica without its database, which cannot
        store the registration), the next attempt goes over a new connection: the stream after it would go down
        the same HTTP/2 connection to the same replica, whereas a new one may reach another (behind a load
        balancer). When it was already a new one that failed, the next attempt keeps it: a new connection to a
        list of addresses may land on the failing one again, and on the same connection the round_robin policy
        sends the next stream to the next address. True when the connection was replaced."""
        if reopened:
            return False
        logger.debug("agent %s: the next attempt goes over a new connection", self.agent_name)
        self.connection.reconnect()
        return True

    async def _run_session(self, session: LinkSession) -> BaseException | None:
        """Run one session until it ends or the agent must leave; the error that ended it, if any."""
        task = asyncio.ensure_future(session.run())
        waker = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({task, waker}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and session.registered is not None:
                if self._hard_stop:
                    # Stopping at once: only the results already on their way get a moment to be acknowledged.
                    await self._until_idle(_GIVE_UP_ACK_SECONDS, task)
                elif self._drain is not None:
                    # Drained: the session is half-closing; let the plane end the stream (bounded).
                    await asyncio.wait({task}, timeout=5.0)
        finally:
            waker.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            return None
        return task.exception()

    async def _until_idle(self, timeout: float, session_task: asyncio.Future[None] | None = None) -> None:
        """Wait until nothing runs and every result is acknowledged, `session_task` ends, or `timeout` passes."""
        idle = asyncio.ensure_future(self._idle.wait())
        waiting: set[asyncio.Future[Any]] = {idle} if session_task is None else {idle, session_task}
        try:
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()

    def _disconnected(self) -> None:
        self._session = None
        self.session_id = ""
        self._connected.clear()
        if self._plane_drain is not None:
            self._plane_drain.cancel()
            self._plane_drain = None

    async def _shutdown(self) -> None:
        self.status = AgentStatus.STOPPED
        for attempt in list(self._running.values()):
            attempt.discard = True
            attempt.ctx._cancel("agent_stopped")
            if attempt.task is not None and attempt.handler.is_async:
                attempt.task.cancel()
        attempts = [*self._running.values(), *self._abandoned.values()]
        pending = [a.task for a in attempts if a.task is not None and a.handler.is_async and not a.task.done()]
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        await self._background.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        await self.connection.close()
        self._finished.set()
        logger.info("agent %s (%s) stopped", self.agent_name, self.instance_id)

    # ------------------------------------------------------------ leaving

    async def drain(self, timeout: float | None = None) -> None:
        """Stop taking work, finish in-flight tasks (at most ``timeout`` s), deliver their results, leave."""
        if self._finished.is_set():
            return
        if self._drain is None:
            grace = self.spec.drain_timeout if timeout is None else timeout
            self._drain = _Drain(time.monotonic() + grace)
            self.status = AgentStatus.DRAINING
            logger.info(
                "agent %s draining: finishing %d task(s), up to %.0fs", self.agent_name, len(self._running), grace
            )
            if self._connected.is_set():
                self.outbox.control(_draining_frame())
            self._background.spawn(self._finish_drain(self._drain), "drain")
        await self._finished.wait()

    async def _finish_drain(self, drain: _Drain) -> None:
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, drain.deadline - time.monotonic()))
        except TimeoutError:
            logger.warning(
                "agent %s: drain timeout passed with %d task(s) running, %d result(s) unacknowledged",
                self.agent_name,
                len(self._running) + len(self._backlog),
                len(self._unacked),
            )
            self._give_up()
            if self._connected.is_set():  # the results go out now: leave once they are acknowledged (bounded)
                await self._until_idle(_GIVE_UP_ACK_SECONDS)
        session = self._session
        if session is not None and session.registered is not None:
            session.close_when_flushed()
        self._wakeup.set()

    def _give_up(self) -> None:
        """Leaving with work unfinished: stop its handlers and answer each attempt with the retryable
        ``agent_stopped``, so that the plane re-queues the task now (per its retry policy) rather than when the
        lease runs out. Results of given-up handlers that still finish are dropped.
        """
        self._giving_up = True
        given_up = [*self._running, *self._backlog]
        for ref, attempt in list(self._running.items()):
            del self._running[ref]
            self._abandoned[ref] = attempt
            if attempt.timer is not None:
                attempt.timer.cancel()
                attempt.timer = None
            attempt.ctx._cancel("agent_stopped")
            if attempt.task is not None and attempt.handler.is_async:
                attempt.task.cancel()
        self._backlog.clear()
        for ref in given_up:
            result = _stopped_result(ref, self.instance_id)
            self._unacked[ref] = result
            self.outbox.result(ref, result)
        if given_up:
            logger.warning(
                "agent %s: gave up %d unfinished task(s), reported as failed (agent_stopped) for the plane to re-queue",
                self.agent_name,
                len(given_up),
            )
        self._update_idle()

    def stop(self) -> None:
        """Leave now: running handlers are cancelled and their results dropped. When connected, each attempt is
        first reported as failed (``agent_stopped``, retryable) so that the plane re-runs it at once; leaving waits
        at most ``_GIVE_UP_ACK_SECONDS`` for the acknowledgements."""
        self._hard_stop = True
        session = self._session
        reporting = session is not None and session.registered is not None and not session.closing
        if reporting:
            if self._drain is None:
                self.outbox.control(_draining_frame())  # no new work while the results go out
            self._give_up()
        self._wakeup.set()
        if session is not None and not reporting:
            session.abort()

    async def wait_finished(self) -> None:
        await self._finished.wait()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    # ------------------------------------------------------------ frames out (LinkHandler)

    def _capability(self, handler: TaskHandler) -> common_pb2.Capability:
        capability = common_pb2.Capability(name=handler.capability, description=handler.description)
        if handler.input.schema is not None:
            capability.input_schema.CopyFrom(_payload.dict_to_struct(handler.input.schema))
        if handler.output_schema is not None:
            capability.output_schema.CopyFrom(_payload.dict_to_struct(handler.output_schema))
        return capability

    def register_frame(self) -> agent_link_pb2.ConnectRequest:
        held = [*self._running, *self._backlog, *self._unacked]
        self._held_at_register = set(held)
        return agent_link_pb2.ConnectRequest(
            register=agent_link_pb2.Register(
                agent_name=self.spec.name,
                agent_version=self.spec.version,
                instance_id=self.spec.instance_id,
                description=self.spec.description,
                capabilities=self._capabilities,
                labels=dict(self.spec.labels),
                max_concurrency=self.spec.max_concurrency,
                sdk=common_pb2.SdkInfo(language="python", version=__version__),
                held_tasks=[agent_link_pb2.TaskRef(task_id=t, attempt=a) for t, a in held],
                weight=self.spec.weight,
                node=socket.gethostname(),
                pid=os.getpid(),
                subscriptions=list(self.spec.channels),
            )
        )

    def heartbeat_frame(self) -> agent_link_pb2.ConnectRequest:
        in_flight = len(self._running)
        heartbeat = agent_link_pb2.Heartbeat(in_flight=in_flight, load=min(1.0, in_flight / self.spec.max_concurrency))
        if _PROCESS is not None:
            try:
                heartbeat.cpu_percent = _PROCESS.cpu_percent(None)
                heartbeat.memory_bytes = _PROCESS.memory_info().rss
            except Exception:  # pragma: no cover - a platform without these figures
                pass
        return agent_link_pb2.ConnectRequest(heartbeat=heartbeat)

    # ------------------------------------------------------------ frames in (LinkHandler)

    def on_registered(self, session: LinkSession, registered: agent_link_pb2.Registered) -> None:
        self.outbox.clear_task_messages()
        self._max_payload_bytes = registered.max_payload_bytes
        kept = {(ref.task_id, ref.attempt) for ref in registered.kept_tasks}
        for ref in self._held_at_register - kept:
            self._forget(ref)
        for ref in kept:
            result = self._unacked.get(ref)
            if result is not None:
                self.outbox.result(ref, result)
        if self._drain is not None:
            self.outbox.control(_draining_frame())
        self.session_id = registered.session_id
        self.status = AgentStatus.DRAINING if self._drain else AgentStatus.CONNECTED
        self._connected.set()
        logger.info(
            "agent %s (%s) connected to %s: session %s, %d task(s) kept, %d result(s) to resend",
            self.agent_name,
            self.instance_id,
            self.target,
            registered.session_id,
            len(kept),
            sum(1 for ref in kept if ref in self._unacked),
        )

    def on_frame(self, session: LinkSession, frame: agent_link_pb2.ConnectResponse) -> None:
        kind = frame.WhichOneof("frame")
        if kind == "assignments":
            self._assign(frame.assignments.assignments)
        elif kind == "result_acks":
            for ref in frame.result_acks.tasks:
                self._unacked.pop((ref.task_id, ref.attempt), None)
            self._update_idle()
        elif kind == "cancellations":
            for cancellation in frame.cancellations.cancellations:
                target = (cancellation.task_id, cancellation.attempt)
                self._cancel(target, cancellation.reason or "cancelled", cancellation.message)
        elif kind == "channel_message":
            self._deliver(frame.channel_message)
        elif kind == "drain":
            self._plane_drained(session, frame.drain)
        elif kind == "error":
            error = frame.error
            log = logger.error if error.fatal else logger.warning
            log("agent %s: control plane reports: %s (field %s)", self.agent_name, error.message, error.field or "-")

    # ------------------------------------------------------------ assignments and results

    def _assign(self, assignments: Any) -> None:
        handlers = self.spec.tasks
        for assignment in assignments:
            ref = (assignment.task_id, assignment.attempt)
            if ref in self._running or ref in self._unacked or ref in self._backlog:
                continue  # a duplicate delivery: that attempt has its one result already coming
            handler = handlers.get(assignment.capability)
            if handler is None:
                message = f"agent {self.agent_name} has no handler for {assignment.capability!r}"
                self._finish(ref, _error_result(ref, "unknown_capability", message, False))
            elif self._giving_up:  # sent before the plane saw `draining`: not started, handed back at once
                self._finish(ref, _stopped_result(ref, self.instance_id))
            elif len(self._running) >= self.spec.max_concurrency:
                self._backlog[ref] = assignment
            else:
                self._start(ref, assignment, handler)
        self._update_idle()

    def _start(self, ref: Ref, assignment: agent_link_pb2.Assignment, handler: TaskHandler) -> None:
        ctx = TaskContext(self, assignment)
        attempt = _Attempt(ctx, handler)
        self._running[ref] = attempt
        self.outbox.started(ref)
        attempt.task = self.loop.create_task(self._execute(ref, attempt, assignment.input))
        if assignment.HasField("deadline"):
            deadline = assignment.deadline
            delay = deadline.seconds + deadline.nanos / 1e9 - time.time()
            attempt.timer = self.loop.call_later(max(0.0, delay), self._cancel, ref, "deadline_exceeded")

    async def _execute(self, ref: Ref, attempt: _Attempt, payload: common_pb2.Payload) -> None:
        ctx, handler = attempt.ctx, attempt.handler
        try:
            data = handler.input.decode(payload)
            if handler.is_async:
                value = await handler.function(ctx, data)
            else:
                value = await self.loop.run_in_executor(self._thread_pool(), handler.function, ctx, data)
            result = self._output_result(ref, ctx, value)
        except asyncio.CancelledError:
            if not ctx.cancel_reason:
                raise  # the agent itself is stopping
            result = self._cancelled_result(ref, ctx)
        except InputInvalid as exc:
            ctx.logger.warning("input rejected: %s", exc.message)
            result = _error_result(ref, "validation_failed", exc.message, False, {"errors": exc.errors})
        except _payload.NotSerializable as exc:
            ctx.logger.warning("output rejected: %s", exc)
            result = _error_result(ref, "output_not_serializable", str(exc), False)
        except TaskError as exc:
            ctx.logger.warning("task failed: %s: %s", exc.code, exc.message)
            result = _error_result(ref, exc.code, exc.message or str(exc), exc.retryable, exc.details)
        except Exception as exc:
            ctx.logger.warning("task failed: %s", exc, exc_info=True)
            trace = "".join(traceback.format_exception(exc))[-_TRACEBACK_LIMIT:]
            result = _error_result(ref, type(exc).__name__, str(exc) or repr(exc), True, {"traceback": trace})
        if ctx.cancel_reason:
            result = self._cancelled_result(ref, ctx)
        self._finish(ref, result)

    def _output_result(self, ref: Ref, ctx: TaskContext, value: Any) -> agent_link_pb2.TaskResult:
        """The result for what a handler returned. An output over the plane's max_payload_bytes fails the attempt
        here, not retryable (another attempt would return as much): sent, the plane would refuse it, or one over its
        gRPC message limit would break the stream on every resend. Raises NotSerializable."""
        output = _payload.encode(value)
        problem = _limits.too_large("output", len(output.data), self._max_payload_bytes)
        if problem is not None:
            ctx.logger.warning("output rejected: %s", problem)
            return _error_result(ref, _limits.OUTPUT_TOO_LARGE, problem, False)
        return agent_link_pb2.TaskResult(task_id=ref[0], attempt=ref[1], output=output)

    def _cancelled_result(self, ref: Ref, ctx: TaskContext) -> agent_link_pb2.TaskResult:
        if ctx.cancel_reason == "deadline_exceeded":
            return _error_result(ref, "deadline_exceeded", "the attempt's deadline passed", True)
        return _error_result(ref, "cancelled", f"cancelled by the control plane ({ctx.cancel_reason})", False)

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.spec.max_concurrency + 4, thread_name_prefix=f"{self.agent_name}-handler"
            )
        return self._executor

    def _finish(self, ref: Ref, result: agent_link_pb2.TaskResult) -> None:
        if self._abandoned.pop(ref, None) is not None:
            return  # given up: its `agent_stopped` result went out instead
        attempt = self._running.pop(ref, None)
        if attempt is not None:
            if attempt.timer is not None:
                attempt.timer.cancel()
            if attempt.discard:
                self._refill()
                self._update_idle()
                return
        self._unacked[ref] = result
        self.outbox.result(ref, result)
        self._refill()

    def _refill(self) -> None:
        while self._backlog and len(self._running) < self.spec.max_concurrency:
            ref = next(iter(self._backlog))
            assignment = self._backlog.pop(ref)
            handler = self.spec.tasks[assignment.capability]
            self._start(ref, assignment, handler)

    def _update_idle(self) -> None:
        if self._running or self._backlog or self._unacked:
            self._idle.clear()
        else:
            self._idle.set()

    # ------------------------------------------------------------ cancellation

    def _cancel(self, ref: Ref, reason: str, message: str = "") -> None:
        if reason == "not_held":
            self._forget(ref)
            return
        attempt = self._running.get(ref)
        if attempt is not None:
            if attempt.ctx.cancel_reason:
                return
            if message:
                attempt.ctx.logger.info("cancelling: %s: %s", reason, message)
            else:
                attempt.ctx.logger.info("cancelling: %s", reason)
            attempt.ctx._cancel(reason, message)
            if attempt.handler.is_async and attempt.task is not None:
                attempt.task.cancel()
            return
        if ref in self._backlog:
            del self._backlog[ref]
            self._finish(ref, _error_result(ref, "cancelled", f"cancelled by the control plane ({reason})", False))
            self._update_idle()

    def _forget(self, ref: Ref) -> None:
        """The plane no longer considers this attempt ours: stop it and drop its result."""
        attempt = self._running.get(ref)
        if attempt is not None:
            attempt.discard = True
            attempt.ctx._cancel("not_held")
            if attempt.handler.is_async and attempt.task is not None:
                attempt.task.cancel()
        self._backlog.pop(ref, None)
        self._unacked.pop(ref, None)
        self.outbox.discard_result(ref)
        self._update_idle()

    # ------------------------------------------------------------ drain from the plane

    def _plane_drained(self, session: LinkSession, drain: agent_link_pb2.Drain) -> None:
        logger.info(
            "agent %s: control plane asks to drain (%s); finishing %d task(s), then reconnecting",
            self.agent_name,
            drain.reason or "no reason given",
            len(self._running),
        )
        if self._plane_drain is None:
            self._plane_drain = self._background.spawn(self._close_when_idle(session), "plane-drain")

    async def _close_when_idle(self, session: LinkSession) -> None:
        await self._idle.wait()
        session.close_when_flushed()

    # ------------------------------------------------------------ channels

    def _deliver(self, message: Any) -> None:
        handler = self.spec.channels.get(message.channel)
        if handler is None:
            logger.debug("agent %s: message on %s without a handler", self.agent_name, message.channel)
            return
        inbox = self._inboxes.setdefault(message.channel, ChannelInbox())
        if inbox.has_room_to_run():
            inbox.running += 1
            self._background.spawn(self._run_inbox(handler, inbox, message), f"channel-{message.channel}")
        elif inbox.wait(message) and inbox.dropped == 1:
            logger.warning(
                "agent %s: the handler of channel %s is slower than its messages come: the oldest waiting "
                "ones are dropped",
                self.agent_name,
                message.channel,
            )

    async def _run_inbox(self, handler: ChannelHandler, inbox: ChannelInbox, message: Any) -> None:
        """Handle `message`, then whatever waits in the inbox, until it is empty (one of its handler slots)."""
        try:
            while message is not None:
                await self._handle_message(handler, message)
                message = inbox.next()
        finally:
            inbox.running -= 1

    async def _handle_message(self, handler: ChannelHandler, message: Any) -> None:
        ctx = ChannelContext(self, message)
        try:
            data = handler.input.decode(message.payload)
            if handler.is_async:
                await handler.function(ctx, data)
            else:
                await self.loop.run_in_executor(self._thread_pool(), handler.function, ctx, data)
        except InputInvalid as exc:
            ctx.logger.warning("message on %s rejected: %s", message.channel, exc.message)
        except Exception:
            ctx.logger.exception("channel handler for %s failed", message.channel)

    # ------------------------------------------------------------ ContextPort

    def update(
        self,
        task_id: str,
        attempt: int,
        kind: agent_link_pb2.TaskUpdateKind,
        progress: float = 0.0,
        message: str = "",
    ) -> None:
        update = agent_link_pb2.TaskUpdate(
            task_id=task_id,
            attempt=attempt,
            kind=kind,
            progress=progress,
            message=message,
        )
        self._on_loop(self.outbox.update, update)

    def publish(self, channel: str, data: Any, headers: Mapping[str, str] | None) -> None:
        """Queue a publish; raises at once what the plane would refuse (see _limits), or NotSerializable."""
        _limits.check_publish(channel, headers or {})
        payload = _payload.encode(data)
        if _payload.is_json(payload.content_type):
            _limits.check_json_depth(payload.data)
        _limits.check_payload_size(len(payload.data), self._max_payload_bytes)
        frame = agent_link_pb2.ConnectRequest(
            publish=agent_link_pb2.ChannelPublish(channel=channel, payload=payload, headers=headers)
        )
        self._on_loop(self.outbox.control, frame)

    def _on_loop(self, function: Any, argument: Any) -> None:
        if threading.get_ident() == self.loop_thread:
            function(argument)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the agent stopped, drop it
                self.loop.call_soon_threadsafe(function, argument)

    # ------------------------------------------------------------ introspection

    @property
    def in_flight(self) -> int:
        return len(self._running)


def _draining_frame() -> agent_link_pb2.ConnectRequest:
    return agent_link_pb2.ConnectRequest(draining=agent_link_pb2.AgentDraining(reason="agent shutting down"))


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"
