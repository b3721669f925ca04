"""One agent session: one ``AgentLinkService.Connect`` stream, from `register` to its end.

The session reads frames and hands them to its handler (the runtime), writes whatever the outbox holds
(coalesced), and sends heartbeats. What must survive a reconnect lives in the runtime, not here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import grpc

from agent_runtime._errors import InstanceIdTaken, RegistrationRejected
from agent_runtime._outbox import Outbox
from agent_runtime._rpc import Connection, error_from_rpc
from agent_runtime._tasks import TaskOwner
from meshplane.v1 import agent_link_pb2, agent_link_pb2_grpc

logger = logging.getLogger(__name__)

# Status codes that no reconnect can fix: the agent stops instead of retrying forever.
FATAL_CODES = frozenset(
    {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED}
)
# The `error` frame of a session replaced because another agent registered its instance_id (docs/agent-link.md §1).
_ALREADY_EXISTS = 6  # google.rpc.Code
_INSTANCE_ID_FIELD = "register.instance_id"


class LinkHandler(Protocol):
    """The runtime, as the session sees it."""

    outbox: Outbox
    instance_id: str

    def register_frame(self) -> agent_link_pb2.ConnectRequest: ...

    def heartbeat_frame(self) -> agent_link_pb2.ConnectRequest: ...

    def on_registered(self, session: LinkSession, registered: agent_link_pb2.Registered) -> None: ...

    def on_frame(self, session: LinkSession, frame: agent_link_pb2.ConnectResponse) -> None: ...


class LinkSession:
    """Runs one stream. ``run()`` returns when the stream ends cleanly and raises when it breaks."""

    def __init__(self, handler: LinkHandler, connection: Connection) -> None:
        self._handler = handler
        self._connection = connection
        self._call: Any = None
        self._owner = TaskOwner("agent-link")
        self._closing = False
        self.registered: agent_link_pb2.Registered | None = None

    @property
    def session_id(self) -> str:
        return self.registered.session_id if self.registered is not None else ""

    async def run(self) -> None:
        stub = self._connection.stub(agent_link_pb2_grpc.AgentLinkServiceStub)
        self._call = call = stub.Connect(metadata=self._connection.metadata)
        try:
            await call.write(self._handler.register_frame())
            self.registered = await self._registration(call)
            interval = self.registered.heartbeat_interval
            seconds = interval.seconds + interval.nanos / 1e9 or 5.0
            self._handler.on_registered(self, self.registered)
            self._owner.spawn(self._write_loop(call), "writer")
            self._owner.spawn(self._heartbeat_loop(seconds), "heartbeats")
            while True:
                frame = await call.read()
                if frame is grpc.aio.EOF:
                    return
                self._raise_if_instance_taken(frame)
                self._handler.on_frame(self, frame)
        finally:
            await self._owner.close()
            call.cancel()

    async def _registration(self, call: Any) -> agent_link_pb2.Registered:
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as exc:
            if exc.code() in FATAL_CODES:
                raise error_from_rpc(exc, self._connection.target) from exc
            raise
        if first is grpc.aio.EOF:
            raise ConnectionError("the control plane ended the stream before `registered`")
        kind = first.WhichOneof("frame")
        if kind == "error":
            self._raise_if_instance_taken(first)  # replaced while it registered
            raise RegistrationRejected(first.error.message, first.error.field)
        if kind != "registered":
            raise ConnectionError(f"expected `registered` as the first frame, got {kind!r}")
        registered: agent_link_pb2.Registered = first.registered
        return registered

    def _raise_if_instance_taken(self, frame: agent_link_pb2.ConnectResponse) -> None:
        """The plane replaced this session because another agent registered its instance_id (this agent's own
        reconnects abandon the old stream first, so the frame never reaches it for them). Reconnecting would
        replace the other agent in turn, and both would flap for good: the session ends with InstanceIdTaken,
        which stops the agent. Whether the plane marked the frame fatal does not matter (older planes did not)."""
        if frame.WhichOneof("frame") != "error":
            return
        error = frame.error
        if error.code == _ALREADY_EXISTS and error.field == _INSTANCE_ID_FIELD:
            raise InstanceIdTaken(self._handler.instance_id, error.message)

    @property
    def closing(self) -> bool:
        """`close_when_flushed` was called: nothing queued after that is written."""
        return self._closing

    def close_when_flushed(self) -> None:
        """Half-close the stream once everything queued has been written (the plane then ends it)."""
        self._closing = True
        self._handler.outbox.wake()

    def abort(self) -> None:
        """Break the stream now."""
        if self._call is not None:
            self._call.cancel()

    async def _write_loop(self, call: Any) -> None:
        outbox = self._handler.outbox
        try:
            while True:
                await outbox.ready.wait()
                for frame in outbox.take():
                    await call.write(frame)
                if self._closing and not outbox.pending:
                    await call.done_writing()
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke under us: end the session, the reader sees why
            logger.debug("agent link writer stopped: %r", exc)
            call.cancel()

    async def _heartbeat_loop(self, interval: float) -> None:
        outbox = self._handler.outbox
        while True:
            await asyncio.sleep(interval)
            outbox.control(self._handler.heartbeat_frame())
