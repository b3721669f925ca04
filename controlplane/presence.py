"""Which other replicas share this one's NATS: a replica alone skips the signals nobody would hear.

Each replica says hello when it starts (those already running answer at once), then announces itself
every `interval`, and says goodbye when it stops; one not heard from for `EXPIRY` intervals is gone.
For its first interval a replica assumes others may be there, since an answer to its hello can be late
or lost, and again after its NATS connection comes back (the others may have forgotten it, and it them, while
it was gone). The signals are hints either way: what a replica misses it finds by polling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from controlplane.bus.nats_bus import PRESENCE, NatsBus
from controlplane.lifecycle import Component, Status, TaskOwner

logger = logging.getLogger(__name__)

PRESENCE_INTERVAL = 5.0  # seconds between a replica's announcements
EXPIRY = 3  # intervals without a word after which a replica counts as gone


class Presence(Component):
    name = "presence"

    def __init__(
        self,
        bus: NatsBus,
        *,
        replica_id: str,
        interval: float = PRESENCE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._bus = bus
        self.replica_id = replica_id
        self._interval = interval
        self._clock = clock
        self._last_heard: dict[str, float] = {}  # other replica -> when it last spoke
        self._unsure_until = 0.0
        self._announcer = TaskOwner("presence")

    async def _start(self) -> None:
        await self._bus.subscribe_json(PRESENCE, self._heard)
        self._bus.on_reconnected(self._say_hello)
        await self._say_hello()
        self._announcer.spawn(self._keep_announcing(), "announce")

    async def _stop(self) -> None:
        await self._announcer.close()
        await self._announce(bye=True)

    @property
    def alone(self) -> bool:
        """True when no other replica has spoken lately (and this one has been up long enough to know)."""
        return self._clock() >= self._unsure_until and not self.others()

    def others(self) -> list[str]:
        """The other replicas heard from lately."""
        oldest = self._clock() - EXPIRY * self._interval
        for replica in [r for r, heard in self._last_heard.items() if heard < oldest]:
            del self._last_heard[replica]
        return sorted(self._last_heard)

    async def _heard(self, payload: dict[str, Any]) -> None:
        replica = str(payload.get("r") or "")
        if not replica or replica == self.replica_id:
            return
        if payload.get("bye"):
            self._last_heard.pop(replica, None)
            return
        self._last_heard[replica] = self._clock()
        if payload.get("hello"):
            await self._announce()  # the newcomer learns of this replica now, not an interval later

    async def _say_hello(self) -> None:
        """Unsure for an interval, and ask the others to say they are there."""
        if self.status is Status.STOPPED:
            return  # a reconnect while this replica leaves
        self._unsure_until = self._clock() + self._interval
        await self._announce(hello=True)

    async def _keep_announcing(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._announce()

    async def _announce(self, *, hello: bool = False, bye: bool = False) -> None:
        payload: dict[str, Any] = {"r": self.replica_id}
        if hello:
            payload["hello"] = True
        if bye:
            payload["bye"] = True
        try:
            await self._bus.publish_json(PRESENCE, payload)
        except Exception as exc:  # a missed announcement costs the others a delay, not an error
            logger.warning("could not announce this replica on NATS: %s", exc)
