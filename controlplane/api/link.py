"""AgentLinkService: frames in, supervisor calls; the session's outbox out, as frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from controlplane.api import convert
from controlplane.api.errors import backing_service_error, status_code
from controlplane.domain.payload import Payload
from controlplane.domain.tasks import TaskError, TaskRef
from controlplane.errors import InvalidArgument, MeshplaneError
from controlplane.link.messages import ErrorMsg
from controlplane.link.session import AgentSession, SessionState
from controlplane.link.supervisor import SessionSupervisor
from controlplane.services.reports import ResultReport, UpdateKind, UpdateReport
from meshplane.v1 import agent_link_pb2, agent_link_pb2_grpc, common_pb2

logger = logging.getLogger(__name__)

_INVALID_ARGUMENT = 3
_UPDATE_KINDS = {
    agent_link_pb2.TASK_UPDATE_KIND_STARTED: UpdateKind.STARTED,
    agent_link_pb2.TASK_UPDATE_KIND_PROGRESS: UpdateKind.PROGRESS,
}


class AgentLinkServicer(agent_link_pb2_grpc.AgentLinkServiceServicer):
    def __init__(self, supervisor: SessionSupervisor, *, max_payload_bytes: int) -> None:
        self._supervisor = supervisor
        self._max_payload_bytes = max_payload_bytes

    async def Connect(
        self,
        request_iterator: AsyncIterator[agent_link_pb2.ConnectRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        try:
            first = await asyncio.wait_for(anext(request_iterator), self._supervisor.lease_timeout)
        except (StopAsyncIteration, TimeoutError):
            return
        if first.WhichOneof("frame") != "register":
            await self._reject(context, InvalidArgument.of("register", "the first frame must be `register`"))
            return
        registration, held = convert.registration_from_proto(first.register)
        try:
            session = await self._supervisor.open(registration, held)
        except InvalidArgument as error:
            await self._reject(context, error)
            return
        reader = asyncio.ensure_future(self._read(session, request_iterator))
        try:
            await self._write(session, context)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await asyncio.shield(self._supervisor.close_soon(session))
        if session.close_reason.startswith("no heartbeat"):
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"session closed: {session.close_reason}")

    async def _reject(self, context: grpc.aio.ServicerContext, error: InvalidArgument) -> None:
        violation = error.violations[0]
        await context.write(
            convert.error_frame(ErrorMsg(_INVALID_ARGUMENT, error.message, violation.field, fatal=True))
        )
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)

    async def _write(self, session: AgentSession, context: grpc.aio.ServicerContext) -> None:
        while True:
            messages = await session.next_messages()
            for frame in convert.frames(messages):
                await context.write(frame)
            if session.state is SessionState.CLOSED:
                return

    async def _read(self, session: AgentSession, frames: AsyncIterator[agent_link_pb2.ConnectRequest]) -> None:
        try:
            async for frame in frames:
                await self._handle(session, frame)
            session.close("agent closed the stream")
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            session.close(f"stream error: {exc.code().name}")
        except Exception as exc:
            logger.exception("agent link reader failed for session %s", session.session_id)
            session.close(f"reader failed: {exc}")

    def _payload(self, session: AgentSession, message: common_pb2.Payload, field: str) -> Payload | None:
        try:
            payload = convert.payload_from_proto(message, field)
        except MeshplaneError as exc:
            session.send(_frame_failed(exc, field))
            return None
        return payload

    async def _handle(self, session: AgentSession, frame: agent_link_pb2.ConnectRequest) -> None:
        kind = frame.WhichOneof("frame")
        if kind == "heartbeat":
            self._supervisor.heartbeat(session, load=frame.heartbeat.load)
        elif kind == "task_results":
            results = []
            for index, result in enumerate(frame.task_results.results):
                ref = TaskRef(result.task_id, result.attempt)
                if result.WhichOneof("outcome") == "output":
                    output = self._payload(session, result.output, f"task_results.results[{index}].output")
                    if output is None:
                        continue
                    problem = output.json_problem() if output.is_json else None
                    if len(output) > self._max_payload_bytes:
                        results.append(ResultReport(ref, error=_too_large(len(output), self._max_payload_bytes)))
                    elif problem is not None:
                        results.append(ResultReport(ref, error=_invalid_output(problem)))
                    else:
                        results.append(ResultReport(ref, output=output))
                else:
                    results.append(ResultReport(ref, error=convert.task_error_from_proto(result.error)))
            await self._supervisor.report_when_room(session, results=results)
        elif kind == "task_updates":
            updates: list[UpdateReport] = []
            beats: list[TaskRef] = []
            for update in frame.task_updates.updates:
                ref = TaskRef(update.task_id, update.attempt)
                update_kind = _UPDATE_KINDS.get(update.kind)
                if update_kind is None:
                    beats.append(ref)
                else:
                    progress = min(1.0, max(0.0, update.progress))
                    updates.append(UpdateReport(ref, update_kind, progress, update.message))
            await self._supervisor.report_when_room(session, updates=updates, beats=beats)
        elif kind == "publish":
            payload = self._payload(session, frame.publish.payload, "publish.payload")
            if payload is not None:
                try:
                    await self._supervisor.publish(session, frame.publish.channel, payload, dict(frame.publish.headers))
                except Exception as exc:
                    session.send(_frame_failed(_refusal(exc), "publish"))
        elif kind == "subscribe":
            try:
                await self._supervisor.subscribe(session, frame.subscribe.channel)
            except Exception as exc:
                session.send(_frame_failed(_refusal(exc), "subscribe.channel"))
        elif kind == "unsubscribe":
            await self._supervisor.unsubscribe(session, frame.unsubscribe.channel)
        elif kind == "draining":
            await self._supervisor.agent_draining(session, frame.draining.reason)
        elif kind == "register":
            session.send(ErrorMsg(_INVALID_ARGUMENT, "register may only be the first frame", "register", fatal=True))
            session.close("second register frame")
        else:
            session.touch()  # an empty or unknown frame from a newer SDK: still a sign of life


def _too_large(size: int, limit: int) -> TaskError:
    return TaskError(
        code="output_too_large",
        message=f"output is {size} bytes; the limit is {limit} bytes (max_payload_bytes)",
        retryable=False,
    )


def _invalid_output(problem: str) -> TaskError:
    """An output the plane could not hand to anyone who reads it (clients, REST) as JSON."""
    return TaskError(code="invalid_output", message=f"output: {problem}", retryable=False)


def _refusal(exc: Exception) -> MeshplaneError:
    """What a frame that failed tells its agent: the error itself, UNAVAILABLE or RESOURCE_EXHAUSTED for an outage
    of NATS or the database (the session goes on: the agent may try again), else `exc` again (a bug: the reader
    logs it and ends the session)."""
    if isinstance(exc, MeshplaneError):
        return exc
    known = backing_service_error(exc)
    if known is None:
        raise exc
    return known


def _frame_failed(error: MeshplaneError, field: str) -> ErrorMsg:
    """The agent's frame was not applied; the session goes on. Coded like the gRPC status of the same error."""
    return ErrorMsg(status_code(error).value[0], error.message, field)
