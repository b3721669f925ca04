"""This replica's side of the cluster: after-commit effects, and the NATS signals between replicas.

Doorbells and change notices are hints — lost ones only delay work until the next poll — so
publishing them never fails a request. They are coalesced: whatever commits within SIGNAL_DELAY goes out
as one doorbell and one change notice (local effects — this replica's dispatcher and watchers — happen
at once). A replica alone on its NATS (see controlplane.presence) sends none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from controlplane.bus.nats_bus import DOORBELL, SESSIONS_REPLACED, TASKS_CHANGED, NatsBus, replica_subject
from controlplane.domain.tasks import TaskRef
from controlplane.lifecycle import Component, TaskOwner
from controlplane.link.messages import CancelMsg
from controlplane.link.registry import SessionRegistry
from controlplane.observability.histogram import TASK_BUCKETS, Histogram
from controlplane.presence import PRESENCE_INTERVAL, Presence
from controlplane.services.transitions import AfterCommit, CancelOrder
from controlplane.services.watch import WatchHub

logger = logging.getLogger(__name__)

SIGNAL_DELAY = 0.002  # seconds a doorbell / change notice waits for company
MAX_IDS_PER_NOTICE = 5_000  # keeps a change notice far below NATS's payload limit

WakeCallback = Callable[[Iterable[str], float | None], None]  # capabilities with new work, when due
RetriesCallback = Callable[[Mapping[str, float]], None]  # capabilities with retries to come, the last one's time
DrainCallback = Callable[[str, float, str], None]


class Cluster(Component):
    name = "cluster"

    def __init__(
        self,
        bus: NatsBus,
        registry: SessionRegistry,
        watch: WatchHub,
        *,
        replica_id: str,
        presence_interval: float = PRESENCE_INTERVAL,
    ) -> None:
        super().__init__()
        self._bus = bus
        self.presence = Presence(bus, replica_id=replica_id, interval=presence_interval)
        self._registry = registry
        self._watch = watch
        self.replica_id = replica_id
        self._on_work_due: WakeCallback = lambda _capabilities, _at: None
        self._on_retries: RetriesCallback = lambda _until: None
        self._on_drain: DrainCallback = lambda _session, _timeout, _reason: None
        self._on_replaced: Callable[[str, str], Awaitable[None]] = _ignore_replaced
        self.tasks_ended: dict[str, int] = {}
        # Transitions committed here: each task's wait from submit to its first assignment, and its whole life
        # (submit to terminal state) by that state. Assignments a submit made itself are not here: they
        # waited nothing (see plane_metrics).
        self.task_queue_waits = Histogram(TASK_BUCKETS)
        self.task_lifetimes: dict[str, Histogram] = {}
        self._changed: set[str] = set()  # not yet announced to the other replicas
        self._due: dict[str, float] = {}
        self._retries_until: dict[str, float] = {}
        self._signals_waiting = asyncio.Event()
        self._signaller = TaskOwner("cluster-signals")
        self.signals_sent = 0  # doorbells and change notices published
        self.signals_skipped = 0  # coalesced signals not published: no other replica to hear them

    def connect(
        self,
        *,
        work_due: WakeCallback,
        retries: RetriesCallback,
        drain: DrainCallback,
        replaced: Callable[[str, str], Awaitable[None]],
    ) -> None:
        """Wire the local handlers (the dispatcher's wake and retry window, the supervisor's drain and replace)."""
        self._on_work_due = work_due
        self._on_retries = retries
        self._on_drain = drain
        self._on_replaced = replaced

    async def _start(self) -> None:
        await self.presence.start()
        await self._bus.subscribe_json(DOORBELL, self._doorbell)
        await self._bus.subscribe_json(TASKS_CHANGED, self._tasks_changed)
        await self._bus.subscribe_json(SESSIONS_REPLACED, self._sessions_replaced)
        await self._bus.subscribe_json(replica_subject(self.replica_id), self._command)
        self._signaller.spawn(self._send_signals(), "send")

    async def _stop(self) -> None:
        await self._signaller.close()
        await self._publish_signals()  # what committed last still reaches the other replicas
        await self.presence.stop()

    # -- outgoing

    async def after_commit(self, after: AfterCommit) -> None:
        for state, count in after.ended.items():
            self.tasks_ended[state] = self.tasks_ended.get(state, 0) + count
        self._observe_latencies(after)
        for task_id, correlation_id, outcome, why in after.notable:
            logger.info(
                "task %s ended %s: %s",
                task_id,
                outcome,
                why,
                extra={"task_id": task_id, "correlation_id": correlation_id, "outcome": outcome},
            )
        if after.changed:
            self._watch.notify(after.changed)
            self._changed.update(after.changed)
            self._signals_waiting.set()
        if after.retries:
            self._on_retries(after.retries)
            for capability, until in after.retries.items():
                self._retries_until[capability] = max(until, self._retries_until.get(capability, until))
        if after.requeued:
            self._on_work_due(after.requeued.keys(), min(after.requeued.values()))
            for capability, due in after.requeued.items():
                self._due[capability] = min(due, self._due.get(capability, due))
            self._signals_waiting.set()
        for order in after.cancels:
            await self.deliver_cancel(order)

    def _observe_latencies(self, after: AfterCommit) -> None:
        for seconds in after.queue_waits:
            self.task_queue_waits.observe(seconds)
        for state, seconds in after.lifetimes:
            lifetimes = self.task_lifetimes.get(state)
            if lifetimes is None:
                lifetimes = self.task_lifetimes[state] = Histogram(TASK_BUCKETS)
            lifetimes.observe(seconds)

    async def deliver_cancel(self, order: CancelOrder) -> None:
        if order.replica_id == self.replica_id:
            self._cancel_locally(order.session_id, order.ref, order.reason, order.message)
        elif order.replica_id:
            await self._publish(
                replica_subject(order.replica_id),
                {
                    "type": "cancel",
                    "session": order.session_id,
                    "task": order.ref.task_id,
                    "attempt": order.ref.attempt,
                    "reason": order.reason,
                    "message": order.message,
                },
            )

    async def drain_instance(
        self, *, replica_id: str, session_id: str, instance_id: str, timeout: float, reason: str
    ) -> None:
        if replica_id == self.replica_id:
            self._on_drain(session_id, timeout, reason)
        else:
            await self._publish(
                replica_subject(replica_id),
                {"type": "drain", "session": session_id, "instance": instance_id, "timeout": timeout, "reason": reason},
            )

    async def announce_session(self, instance_id: str, session_id: str) -> None:
        await self._publish(SESSIONS_REPLACED, {"r": self.replica_id, "instance": instance_id, "session": session_id})

    async def _send_signals(self) -> None:
        while True:
            await self._signals_waiting.wait()
            await asyncio.sleep(SIGNAL_DELAY)
            self._signals_waiting.clear()
            await self._publish_signals()

    async def _publish_signals(self) -> None:
        if not (self._changed or self._due):
            return
        if self.presence.alone:  # no other replica to hear them
            self._changed, self._due, self._retries_until = set(), {}, {}
            self.signals_skipped += 1
            return
        changed, self._changed = sorted(self._changed), set()
        due, self._due = self._due, {}
        until, self._retries_until = self._retries_until, {}
        self.signals_sent += 1
        if due:
            doorbell: dict[str, Any] = {"r": self.replica_id, "due": due}
            if until:
                doorbell["until"] = until
            await self._publish(DOORBELL, doorbell)
        for start in range(0, len(changed), MAX_IDS_PER_NOTICE):
            await self._publish(
                TASKS_CHANGED, {"r": self.replica_id, "ids": changed[start : start + MAX_IDS_PER_NOTICE]}
            )

    async def _publish(self, subject: str, payload: dict[str, Any]) -> None:
        try:
            await self._bus.publish_json(subject, payload)
        except Exception as exc:  # a hint lost is a delay, not an error
            logger.warning("could not publish to %s: %s", subject, exc)

    # -- incoming

    def _cancel_locally(self, session_id: str, ref: TaskRef, reason: str, message: str = "") -> None:
        session = self._registry.get(session_id)
        if session is not None:
            session.send(CancelMsg(ref, reason, message))

    async def _doorbell(self, payload: dict[str, Any]) -> None:
        if payload.get("r") == self.replica_id:
            return
        due = payload.get("due") or {}
        until = payload.get("until") or {}
        if until:
            self._on_retries({str(capability): float(t) for capability, t in until.items()})
        if due:
            self._on_work_due(list(due), max(time.time(), min(float(t) for t in due.values())))

    async def _tasks_changed(self, payload: dict[str, Any]) -> None:
        if payload.get("r") != self.replica_id:
            self._watch.notify(payload.get("ids") or [])

    async def _sessions_replaced(self, payload: dict[str, Any]) -> None:
        if payload.get("r") != self.replica_id:
            await self._on_replaced(str(payload.get("instance", "")), str(payload.get("session", "")))

    async def _command(self, payload: dict[str, Any]) -> None:
        kind = payload.get("type")
        if kind == "cancel":
            ref = TaskRef(str(payload["task"]), int(payload["attempt"]))
            reason, message = str(payload.get("reason", "cancelled")), str(payload.get("message", ""))
            self._cancel_locally(str(payload["session"]), ref, reason, message)
        elif kind == "drain":
            self._on_drain(str(payload["session"]), float(payload["timeout"]), str(payload.get("reason", "")))
        else:
            logger.warning("unknown replica command %r", kind)


async def _ignore_replaced(_instance_id: str, _session_id: str) -> None:
    """The replaced callback until `connect` wires the supervisor's."""
