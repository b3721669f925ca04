"""The NATS connection and the cluster signals that travel on it.

Subjects:
  meshplane.doorbell            work became due: {"r": replica, "due": {capability: epoch}}, with
                                "until": {capability: epoch} when retries were scheduled (the last one's time)
  meshplane.tasks.changed       tasks got new events: {"r": replica, "ids": [...]}
  meshplane.replica.<id>        commands for one replica: cancel an attempt, drain an instance
  meshplane.sessions.replaced   an instance reconnected elsewhere: {"r", "instance", "session"}
  meshplane.replicas.presence   a replica is there: {"r"}, with "hello": true when it starts (answer it)
                                and "bye": true when it stops
  meshplane.channel.<name>      channel messages
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from controlplane.bus.nats_tls import NatsTls
from controlplane.errors import ResourceExhausted, Unavailable
from controlplane.lifecycle import Component
from controlplane.observability.loop_errors import LoopErrors

logger = logging.getLogger(__name__)

DOORBELL = "meshplane.doorbell"
TASKS_CHANGED = "meshplane.tasks.changed"
SESSIONS_REPLACED = "meshplane.sessions.replaced"
PRESENCE = "meshplane.replicas.presence"
CHANNEL_PREFIX = "meshplane.channel."


def replica_subject(replica_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in replica_id)
    return f"meshplane.replica.{safe}"


JsonHandler = Callable[[dict[str, Any]], Awaitable[None]]

CONNECT_WITHIN = 30.0  # seconds a plane starting waits for NATS before it gives up


class NatsUnreachable(ConnectionError):
    """NATS did not answer while the plane was starting."""


def without_credentials(servers: Sequence[str]) -> str:
    """The server URLs for a message: user, password or token left out."""
    shown = []
    for server in servers:
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        host = parts.hostname or "?"
        shown.append(f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}")
    return ", ".join(shown)


class NatsBus(Component):
    name = "nats-bus"

    def __init__(
        self,
        servers: list[str],
        *,
        client_name: str,
        no_echo: bool = False,
        connect_within: float = CONNECT_WITHIN,
        tls: NatsTls | None = None,
    ) -> None:
        """`no_echo`: the server does not send this connection's own messages back to its subscriptions
        (the cluster signals: a replica ignores its own, and receiving them costs a read and a parse each).
        `connect_within`: how long starting waits for the server (then NatsUnreachable). `tls`: TLS to the
        servers (see nats_tls; its files are looked at again while reconnecting); None: plaintext, or the
        system's roots for tls:// URLs."""
        super().__init__()
        self._servers = servers
        self._tls = tls
        self._client_name = client_name
        self._no_echo = no_echo
        self._connect_within = connect_within
        self._nc: Client | None = None
        self._last_error = ""
        self._reconnect_listeners: list[Callable[[], Awaitable[None]]] = []
        # While the server is gone the client retries every half second, and reports each failed attempt:
        # an outage is logged when it starts, once a minute while it lasts, and when it ends.
        self.outage = LoopErrors(logger, f"NATS ({client_name})")

    def on_reconnected(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Call `listener` each time the connection comes back after a loss (subscriptions are restored)."""
        self._reconnect_listeners.append(listener)

    @property
    def client(self) -> Client:
        if self._nc is None:
            raise RuntimeError("NATS is not connected")
        return self._nc

    async def _start(self) -> None:
        client = Client()
        try:
            async with asyncio.timeout(self._connect_within):
                await client.connect(
                    servers=self._servers,
                    name=self._client_name,
                    no_echo=self._no_echo,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,  # type: ignore[arg-type]  # seconds: annotated int, used by sleep
                    connect_timeout=5,
                    tls=self._tls.context if self._tls is not None else None,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
        except BaseException as exc:  # timed out, or the start was abandoned (a signal)
            with contextlib.suppress(Exception):
                await client.close()
            if not isinstance(exc, TimeoutError):
                raise
            raise NatsUnreachable(
                f"cannot reach NATS at {without_credentials(self._servers)} within {self._connect_within:g}s "
                f"({self._last_error or 'no answer'})"
            ) from None
        self._nc = client
        self.outage.succeeded()  # if the first attempts failed
        logger.info("connected to NATS at %s", client.connected_url.netloc if client.connected_url else "?")

    async def _stop(self) -> None:
        if self._nc is None or self._nc.is_closed:
            return
        if self._nc.is_connected:
            try:
                await self._nc.drain()  # what was published is sent, subscriptions end in order
                return
            except Exception:  # the server went away meanwhile: closing is all that is left
                logger.debug("draining the NATS connection failed", exc_info=True)
        # The server is gone (the client is reconnecting): close without waiting for it.
        with contextlib.suppress(Exception):
            await self._nc.close()

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = str(exc) or type(exc).__name__
        if self._tls is not None:
            self._tls.refresh()  # renewed files (a certificate the server now wants) go out on the next attempt
        if self._nc is None:  # still starting: each attempt fails the same way
            self.outage.unavailable("NATS unreachable, retrying", self._last_error)
        elif self.outage.in_outage:
            self.outage.unavailable("NATS unreachable, reconnecting", self._last_error)
        else:
            logger.warning("NATS error: %s", exc)

    async def _on_disconnected(self) -> None:
        if self._tls is not None:
            self._tls.refresh()
        if self.running:
            self.outage.unavailable("NATS unreachable, reconnecting", "disconnected")

    async def _on_reconnected(self) -> None:
        self.outage.succeeded()
        for listener in self._reconnect_listeners:
            try:
                await listener()
            except Exception:
                logger.exception("a NATS reconnect listener failed")

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def max_payload(self) -> int:
        """The largest message the server accepts (its `max_payload`, told when the client connected)."""
        return self.client.max_payload

    async def publish(self, subject: str, data: bytes) -> None:
        """Raises ResourceExhausted for a message over the server's `max_payload`, and Unavailable while the
        server is away and the client's buffer for that time is full (or the connection is closed)."""
        try:
            await self.client.publish(subject, data)
        except nats.errors.MaxPayloadError:
            raise ResourceExhausted(
                f"the message is {len(data)} bytes as sent on NATS; the NATS server accepts at most "
                f"{self.max_payload} (its max_payload)"
            ) from None
        except (nats.errors.OutboundBufferLimitError, nats.errors.ConnectionClosedError) as exc:
            raise Unavailable(f"NATS is unreachable ({type(exc).__name__}); retry") from exc

    async def publish_json(self, subject: str, payload: dict[str, Any]) -> None:
        await self.client.publish(subject, json.dumps(payload, separators=(",", ":")).encode())

    async def subscribe(self, subject: str, handler: Callable[[Msg], Awaitable[None]]) -> Subscription:
        subscription = await self.client.subscribe(subject, cb=handler)
        await self.client.flush()  # the server knows the subscription before we say it is live
        return subscription

    async def subscribe_json(self, subject: str, handler: JsonHandler) -> Subscription:
        async def on_message(msg: Msg) -> None:
            try:
                payload = json.loads(msg.data)
            except ValueError:
                logger.warning("ignoring malformed message on %s", msg.subject)
                return
            try:
                await handler(payload)
            except Exception:
                logger.exception("handler for %s failed", msg.subject)

        return await self.subscribe(subject, on_message)

    async def flush(self) -> None:
        await self.client.flush()
