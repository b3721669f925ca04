"""Broadcast channels over NATS: publish, and fan out to this replica's subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from controlplane import paging
from controlplane.bus.nats_bus import CHANNEL_PREFIX, NatsBus
from controlplane.clock import wall_clock
from controlplane.domain.audit import AuditEntry
from controlplane.domain.channels import Channel, ChannelMessage
from controlplane.domain.payload import Payload
from controlplane.errors import ResourceExhausted
from controlplane.ids import new_id
from controlplane.lifecycle import TaskOwner
from controlplane.services import channel_codec
from controlplane.services.audit import AuditTrail
from controlplane.store.unit_of_work import Store, UnitOfWork
from controlplane.validation import Violations

logger = logging.getLogger(__name__)

# Channel names whose use this replica has recorded lately (their row's last_use_time), remembered so that a
# publish does not write it again. Bounded: clients that use a channel per request (reply channels) would
# otherwise grow every replica for ever; a name forgotten costs one idempotent upsert when it is used again.
KNOWN_CHANNELS = 10_000
USES_PER_WRITE = 500  # subscribed channels whose use one housekeeping statement records


class ChannelSubscriber(Protocol):
    def deliver(self, message: ChannelMessage) -> None:
        """Must not block: queue the message or drop it."""
        ...


def check_channel_name(name: str, field_path: str = "channel") -> None:
    violations = Violations()
    violations.channel(field_path, name)
    violations.raise_if_any()


class ChannelService:
    def __init__(
        self,
        bus: NatsBus,
        store: Store,
        audit: AuditTrail,
        *,
        max_payload_bytes: int,
        use_refresh: float = 3600.0,
        clock: Callable[[], float] = wall_clock,
    ) -> None:
        """`use_refresh`: seconds after which this replica records a channel's use again (its last_use_time)."""
        self._bus = bus
        self._store = store
        self._audit = audit
        self._max_payload_bytes = max_payload_bytes
        self._use_refresh = use_refresh
        self._clock = clock
        self._local: dict[str, set[ChannelSubscriber]] = defaultdict(set)
        self._nats_subscriptions: dict[str, Subscription] = {}
        # One lock per channel while someone subscribes or unsubscribes to it (counted, so it can go).
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._known_channels: OrderedDict[str, float] = OrderedDict()  # name → when its use was recorded
        self._background = TaskOwner("channels")
        self.delivered = 0
        self.dropped_deliveries = 0  # for subscribers slower than their messages (domain.channels)

    def count_dropped(self) -> None:
        """A subscriber too slow to keep up lost a waiting message."""
        self.dropped_deliveries += 1

    async def _remember(self, channel: str) -> None:
        recorded = self._known_channels.get(channel)
        if recorded is not None and self._clock() - recorded < self._use_refresh:
            self._known_channels.move_to_end(channel)
            return
        await self._record_uses([channel])

    async def _record_uses(self, names: list[str]) -> None:
        now = self._clock()

        async def work(uow: UnitOfWork) -> None:
            await uow.channels.touch(names, now=now)

        await self._store.run(work)
        for name in names:
            self._known_channels[name] = now
            self._known_channels.move_to_end(name)
        while len(self._known_channels) > KNOWN_CHANNELS:
            self._known_channels.popitem(last=False)

    async def record_subscribed_uses(self) -> int:
        """Record a use of every channel with a subscriber here, unless recorded lately (run by housekeeping):
        a channel listened to but quiet is in use, and retention must not take it. Returns how many."""
        now = self._clock()
        due = [name for name in self._local if now - self._known_channels.get(name, -math.inf) >= self._use_refresh]
        for start in range(0, len(due), USES_PER_WRITE):
            await self._record_uses(due[start : start + USES_PER_WRITE])
        return len(due)

    @contextlib.asynccontextmanager
    async def _locked(self, channel: str) -> AsyncIterator[None]:
        """Serialise (un)subscribing to `channel`; its lock is forgotten once nobody holds or awaits it."""
        lock, users = self._locks.get(channel, (asyncio.Lock(), 0))
        self._locks[channel] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[channel]
            if users == 1:
                del self._locks[channel]
            else:
                self._locks[channel] = (lock, users - 1)

    @property
    def tracked_channels(self) -> int:
        """Channels this replica keeps anything in memory for (subscribers, locks, known names)."""
        return len(self._local.keys() | self._locks.keys() | self._known_channels.keys())

    async def publish(
        self, channel: str, payload: Payload, *, headers: dict[str, str], publisher: str, correlation_id: str = ""
    ) -> ChannelMessage:
        """Broadcast to every subscriber on every replica; returns once audited and sent."""
        violations = Violations()
        violations.channel("channel", channel)
        violations.string_map("headers", headers, max_value=4096)
        if payload.is_json:
            problem = payload.json_problem()
            if problem is not None:
                violations.add("payload", problem)
        violations.raise_if_any()
        if len(payload) > self._max_payload_bytes:
            raise ResourceExhausted(
                f"payload is {len(payload)} bytes; the limit is {self._max_payload_bytes} bytes (max_payload_bytes)"
            )
        message = ChannelMessage(
            channel=channel,
            message_id=new_id(),
            payload=payload,
            publisher=publisher,
            publish_time=self._clock(),
            headers=headers,
        )
        # Persist, then act: with the database out the call fails before anyone received the message, so a
        # caller retrying it delivers it once (sent first, it went out and the caller heard UNAVAILABLE).
        await self._remember(channel)
        await self._audit.record(
            AuditEntry(
                actor=publisher,
                action="channel.publish",
                resource=f"channels/{channel}",
                time=message.publish_time,
                correlation_id=correlation_id,
                details={"message_id": message.message_id, "bytes": len(payload)},
            )
        )
        await self._bus.publish(CHANNEL_PREFIX + channel, channel_codec.encode(message))
        return message

    async def subscribe(self, channel: str, subscriber: ChannelSubscriber) -> None:
        """Deliver `channel`'s messages to `subscriber` from now on (live once this returns)."""
        check_channel_name(channel)
        async with self._locked(channel):
            self._local[channel].add(subscriber)
            if channel not in self._nats_subscriptions:
                self._nats_subscriptions[channel] = await self._bus.subscribe(
                    CHANNEL_PREFIX + channel, self._on_message
                )
        await self._remember(channel)

    async def unsubscribe(self, channel: str, subscriber: ChannelSubscriber) -> None:
        async with self._locked(channel):
            members = self._local.get(channel)
            if members is None:
                return
            members.discard(subscriber)
            if not members:
                del self._local[channel]
                subscription = self._nats_subscriptions.pop(channel, None)
                if subscription is not None:
                    try:
                        await subscription.unsubscribe()
                    except Exception:  # the connection may be closing; the subscription dies with it
                        logger.debug("unsubscribe from %s failed", channel, exc_info=True)

    def unsubscribe_soon(self, channel: str, subscriber: ChannelSubscriber) -> None:
        """Stop delivering at once; drop the NATS subscription in the background (safe from `finally`)."""
        members = self._local.get(channel)
        if members is not None:
            members.discard(subscriber)
        self._background.spawn(self.unsubscribe(channel, subscriber), f"unsubscribe-{channel}")

    async def close(self) -> None:
        await self._background.close()

    async def unsubscribe_all(self, subscriber: ChannelSubscriber, channels: set[str]) -> None:
        for channel in list(channels):
            await self.unsubscribe(channel, subscriber)

    async def _on_message(self, msg: Msg) -> None:
        try:
            message = channel_codec.decode(msg.data)
        except (ValueError, KeyError):
            logger.warning("dropping malformed channel message on %s", msg.subject)
            return
        for subscriber in list(self._local.get(message.channel, ())):
            subscriber.deliver(message)
            self.delivered += 1

    async def list_page(self, *, page_size: int, page_token: str) -> tuple[list[Channel], str]:
        size = paging.page_size(page_size)
        after = paging.decode(page_token, ["channels"])
        async with self._store.reader() as uow:
            channels = await uow.channels.list_page(limit=size + 1, after_name=after)
        token = paging.encode(channels[size - 1].name, ["channels"]) if len(channels) > size else ""
        return channels[:size], token
