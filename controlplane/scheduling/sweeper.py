"""Clock-driven upkeep: silent sessions, heartbeat and deadline timeouts, dead replicas; and, on a slower
clock of its own (housekeeping), expired state and whatever has outlived its retention."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from controlplane.clock import wall_clock
from controlplane.domain.tasks import TaskRef
from controlplane.lifecycle import Component, TaskOwner
from controlplane.link.supervisor import SessionSupervisor
from controlplane.observability.loop_errors import LoopErrors
from controlplane.services.agents import AgentService
from controlplane.services.recovery import RecoveryService
from controlplane.services.retention import Retention
from controlplane.settings import Settings
from controlplane.stall_grace import StallGrace
from controlplane.store.unit_of_work import Store

logger = logging.getLogger(__name__)

_RECOVERY_STEPS = ("reap-replicas", "orphans", "ghost-instances")  # the steps that wait until `settled`
# Steps that do not run on every sweep: when an outage ends, those that failed in it are not held against the
# sweep until their next turn (the outage would seem to last that much longer).
_OCCASIONAL_STEPS = (*_RECOVERY_STEPS, "queue-depth")

QUEUE_DEPTH_EVERY = 10.0  # seconds between reads of the queue's depth (meshplane_tasks_queued)


class Sweeper(Component):
    name = "sweeper"

    def __init__(
        self,
        *,
        store: Store,
        supervisor: SessionSupervisor,
        recovery: RecoveryService,
        agents: AgentService,
        retention: Retention,
        record_channel_uses: Callable[[], Awaitable[object]],
        settings: Settings,
        replica_id: str,
        address: Callable[[], str],
        database_reachable: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self._database_reachable = database_reachable  # told when the sweep finds the database out, and back
        self._store = store
        self._supervisor = supervisor
        self._recovery = recovery
        self._agents = agents
        self._retention = retention
        self._record_channel_uses = record_channel_uses
        self._housekeeping_every = settings.housekeeping_interval.total_seconds()
        self._replica_id = replica_id
        self._address = address
        self._interval = settings.sweep_interval.total_seconds()
        self._heartbeat_every = settings.heartbeat_interval.total_seconds()
        self._lease = settings.lease_timeout.total_seconds()
        # One heartbeat interval both ways: a lag shorter than that is within the slack a lease leaves (the
        # lease is longer than the interval: 4 of them by default); and within one interval after a stall
        # every live agent has been heard, from the frames that waited or from its next heartbeat.
        self._stall = StallGrace(tolerance=self._heartbeat_every, grace=self._heartbeat_every)
        self._tasks = TaskOwner(self.name)
        self._last: dict[str, float] = {}
        self._started = 0.0
        self._database_was_out = False  # the sweep's steps found the database out of reach, and not back since
        # Tasks waiting in the queue per capability, the whole mesh's, as last read (for the metrics; a
        # capability once seen stays, at 0, so its series does not vanish when its queue empties).
        self.queued_by_capability: dict[str, int] = {}
        self._sweep_errors = LoopErrors(logger, "the sweeper")
        self._housekeeping_errors = LoopErrors(logger, "housekeeping")

    @property
    def errors(self) -> LoopErrors:
        """How the sweep's failures are being logged (an outage in progress, failures not logged since)."""
        return self._sweep_errors

    @property
    def database_out(self) -> bool:
        """The sweep found the database out of reach, and it is not back yet."""
        return self._database_was_out

    async def beat_replica(self) -> None:
        async with self._store.transaction() as uow:
            await uow.replicas.heartbeat(self._replica_id, address=self._address(), now=wall_clock())

    async def _start(self) -> None:
        self._started = time.monotonic()
        await self.beat_replica()
        self._tasks.spawn(self._run(), "loop")
        # Stalls that come while the sweep awaits the database are noticed by this one (see _watch_stalls).
        self._tasks.spawn(self._watch_stalls(), "stall-watch")
        # Its own loop: a long purge never holds up timeouts and lease checks.
        self._tasks.spawn(self._housekeeping(), "housekeeping")

    async def _stop(self) -> None:
        await self._tasks.close()

    @property
    def settled(self) -> bool:
        """Up for a lease (and a lease past the end of a database outage): agents of replicas that died (or of
        this replica's id in an earlier process) have had a lease to reconnect here, keeping the tasks they
        still run. Until then no task is taken back from a silent replica or a session that is gone, however
        long ago it went quiet: after an outage longer than the lease (the only replica restarting, say), its
        agents come back with work that would otherwise run twice."""
        return time.monotonic() - self._started >= self._lease

    def _due(self, name: str, every: float) -> bool:
        now = time.monotonic()
        if now - self._last.get(name, 0.0) >= every:
            self._last[name] = now
            return True
        return False

    @staticmethod
    async def _step(errors: LoopErrors, name: str, action: Callable[[], Awaitable[object]]) -> bool:
        """Run one step; a failure is logged (see LoopErrors, the step being a part) and the other steps go on.
        Whether it went through."""
        try:
            await action()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            errors.failed(f"sweep step {name}", exc, part=name)
            return False
        errors.succeeded(part=name)
        return True

    def _judge_silence(self) -> list[TaskRef]:
        """Close the sessions silent for a lease; the attempts whose heartbeat is overdue (none of either in
        the grace after a stall of the plane's own loop: see StallGrace)."""
        if not self._stall.may_judge(time.monotonic()):
            return []
        self._supervisor.expire_silent()
        return self._supervisor.overdue_heartbeats()

    def _notice_stall(self, asleep_since: float, interval: float) -> None:
        """A timer woke up; if much later than it asked, silence checks restart from now (StallGrace). One stall
        is noticed by both timers: the second finds the grace running and says nothing."""
        now = time.monotonic()
        told = not self._stall.may_judge(now)
        stalled_for = self._stall.woke(asleep_since=asleep_since, interval=interval, now=now)
        if stalled_for and not told:
            logger.warning(
                "the control plane's event loop was stalled for %.1fs (process paused or frozen, or the loop "
                "blocked): silence checks of agent sessions and task heartbeats restart from now, after %gs for "
                "the frames that waited to be read",
                stalled_for,
                self._stall.grace,
            )

    async def sweep_once(self) -> None:
        overdue = self._judge_silence()
        errors = self._sweep_errors
        if overdue:
            await self._step(errors, "heartbeat-timeouts", lambda: self._recovery.heartbeat_timeouts(overdue))
        if not await self._step(errors, "deadlines", self._recovery.time_out):
            if errors.in_outage and not self._database_was_out:
                self._database_was_out = True
                if self._database_reachable is not None:
                    await self._database_reachable(False)
        elif self._database_was_out:
            # The database is back after an outage: as after a restart, agents get a lease to come back with
            # their work (their streams closed when their reports could not be stored) before any is taken.
            self._database_was_out = False
            self._started = time.monotonic()
            for part in _OCCASIONAL_STEPS:  # they failed in the outage, which is over; they wait for their turn
                errors.succeeded(part=part)
            if self._database_reachable is not None:
                await self._database_reachable(True)
        if self._due("replica", self._heartbeat_every):
            await self._step(errors, "replica-heartbeat", self.beat_replica)
            await self._step(errors, "liveness", self._agents.record_liveness)
            running_for = self._heartbeat_every
            await self._step(
                errors, "lost-cancels", lambda: self._supervisor.cancel_ended_attempts(running_for=running_for)
            )
        if self._due("queue-depth", QUEUE_DEPTH_EVERY):
            await self._step(errors, "queue-depth", self.read_queue_depth)
        if self.settled and self._due("recovery", self._lease / 2):
            await self._step(errors, "reap-replicas", lambda: self._recovery.reap_replicas(lease_timeout=self._lease))
            live = self._supervisor.sessions_holding_tasks()
            cutoff = time.time() - self._lease
            await self._step(errors, "orphans", lambda: self._recovery.requeue_orphans(live, older_than=cutoff))
            await self._step(errors, "ghost-instances", lambda: self._agents.disconnect_ghosts(seen_before=cutoff))

    async def read_queue_depth(self) -> None:
        async with self._store.reader() as uow:
            queued = await uow.tasks.queued_by_capability()
        self.queued_by_capability = {**dict.fromkeys(self.queued_by_capability, 0), **queued}

    async def _run(self) -> None:
        while True:
            asleep_since = time.monotonic()
            await asyncio.sleep(self._interval)
            self._notice_stall(asleep_since, self._interval)  # before judging anything, whichever timer woke first
            await self.sweep_once()

    async def _watch_stalls(self) -> None:
        """A timer of its own, a quarter of the tolerance apart: the sweep measures only its sleeps, and a stall
        while it awaited the database (its steps take a while) would go unnoticed, its next sweep judging
        silence an interval after the resume, before every agent that was frozen too has beaten again."""
        tick = self._stall.tolerance / 4
        while True:
            asleep_since = time.monotonic()
            await asyncio.sleep(tick)
            self._notice_stall(asleep_since, tick)

    async def housekeep_once(self) -> None:
        await self._step(self._housekeeping_errors, "channel-uses", self._record_channel_uses)
        await self._step(self._housekeeping_errors, "retention", self._retention.purge)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self._housekeeping_every)
            await self.housekeep_once()
