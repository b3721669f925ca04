"""One agent session: what it registered, its credits (in-flight attempts) and its outbox."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from controlplane.clock import wall_clock
from controlplane.domain import channels
from controlplane.domain.agents import Registration
from controlplane.domain.channels import ChannelMessage
from controlplane.domain.tasks import TaskRef
from controlplane.link.messages import ChannelDelivery, Outbound


class SessionState(Enum):
    OPENING = "opening"  # registering; no work until `registered` has been sent
    ACTIVE = "active"  # taking work
    DRAINING = "draining"  # finishing work, taking none
    CLOSED = "closed"


@dataclass(slots=True)
class InFlight:
    heartbeat_timeout: float
    last_beat: float  # monotonic
    since: float = 0.0  # monotonic, when it was assigned on this session
    cancel_resent: bool = False  # the store had ended it and a cancel went (again) to the agent


class AgentSession:
    """Held by the replica serving the stream. Credits: never more unfinished attempts than max_concurrency."""

    def __init__(
        self,
        session_id: str,
        registration: Registration,
        *,
        replica_id: str,
        on_dropped_delivery: Callable[[AgentSession], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.registration = registration
        self.replica_id = replica_id
        self.connect_time = wall_clock()
        self.last_seen = time.monotonic()
        self.last_seen_wall = self.connect_time
        self.load = 0.0
        self.state = SessionState.OPENING
        self.subscriptions: set[str] = set()
        self.in_flight: dict[TaskRef, InFlight] = {}
        self._outbox: deque[Outbound] = deque()
        self._pending_deliveries = 0  # ChannelDelivery messages in the outbox
        self._pending_delivery_bytes = 0
        self.dropped_deliveries = 0
        self._on_dropped_delivery = on_dropped_delivery
        self._ready = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason = ""

    # -- identity

    @property
    def instance_id(self) -> str:
        return self.registration.instance_id

    @property
    def agent_name(self) -> str:
        return self.registration.agent_name

    @property
    def max_concurrency(self) -> int:
        return self.registration.max_concurrency

    def __repr__(self) -> str:
        return f"AgentSession({self.agent_name}/{self.instance_id} {self.session_id[:8]} {self.state.value})"

    # -- credits

    @property
    def free_slots(self) -> int:
        if self.state is not SessionState.ACTIVE:
            return 0
        return max(0, self.max_concurrency - len(self.in_flight))

    @property
    def utilisation(self) -> float:
        return len(self.in_flight) / self.max_concurrency

    def reserve(self, ref: TaskRef, heartbeat_timeout: float) -> None:
        now = time.monotonic()
        self.in_flight[ref] = InFlight(heartbeat_timeout, now, now)

    def release(self, ref: TaskRef) -> bool:
        """Free the slot of a finished attempt; False if the session did not hold it."""
        return self.in_flight.pop(ref, None) is not None

    def beat(self, ref: TaskRef) -> None:
        entry = self.in_flight.get(ref)
        if entry is not None:
            entry.last_beat = time.monotonic()

    def touch(self) -> None:
        self.last_seen = time.monotonic()
        self.last_seen_wall = wall_clock()

    # -- outbox

    def send(self, message: Outbound) -> None:
        if self.state is SessionState.CLOSED:
            return
        self._outbox.append(message)
        self._ready.set()

    async def next_messages(self) -> list[Outbound]:
        """Everything queued so far (waits for at least one message)."""
        await self._ready.wait()
        messages = list(self._outbox)
        self._outbox.clear()
        self._pending_deliveries = self._pending_delivery_bytes = 0
        self._ready.clear()
        return messages

    def deliver(self, message: ChannelMessage) -> None:
        """A message on a channel this session subscribed to (the oldest waiting one may make room for it; see
        domain.channels.MAX_WAITING_MESSAGES). Other frames are never dropped: they are few, bounded by the
        session's credits."""
        if self.state is SessionState.CLOSED:
            return
        size = len(message.payload.data)
        while channels.must_make_room(self._pending_deliveries, self._pending_delivery_bytes, size):
            self._drop_oldest_delivery()
        self._pending_deliveries += 1
        self._pending_delivery_bytes += size
        self.send(ChannelDelivery(message))

    def _drop_oldest_delivery(self) -> None:
        for index, waiting in enumerate(self._outbox):
            if isinstance(waiting, ChannelDelivery):
                del self._outbox[index]
                self._pending_deliveries -= 1
                self._pending_delivery_bytes -= len(waiting.message.payload.data)
                self.dropped_deliveries += 1
                if self._on_dropped_delivery is not None:
                    self._on_dropped_delivery(self)
                return

    def close(self, reason: str) -> None:
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
        self.close_reason = reason
        self.closed.set()
        self._ready.set()  # wake the writer so it notices
