"""Agent reports (task updates and results), applied in group-committed batches.

Also the trailing progress events (see progress_events): a loop sends each attempt's held-back progress report
down its agent's lane once it is due, as a report of that agent's.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from controlplane.batching import Batcher, FlushGate
from controlplane.clock import wall_clock
from controlplane.domain.payload import Payload
from controlplane.domain.tasks import TaskError, TaskRef
from controlplane.lifecycle import Component, TaskOwner
from controlplane.observability.loop_errors import LoopErrors
from controlplane.services.effects import Effects
from controlplane.services.progress_events import ProgressEvents, Reported
from controlplane.services.transitions import Transition
from controlplane.settings import Settings
from controlplane.store.unit_of_work import Store

logger = logging.getLogger(__name__)


class UpdateKind(Enum):
    STARTED = "started"
    PROGRESS = "progress"
    TRAILING = "trailing"  # not from an agent: record the held-back progress now (see progress_events)


@dataclass(slots=True)
class UpdateReport:
    ref: TaskRef
    kind: UpdateKind
    progress: float = 0.0
    message: str = ""


@dataclass(slots=True)
class ResultReport:
    ref: TaskRef
    output: Payload | None = None
    error: TaskError | None = None


@dataclass(slots=True)
class AgentReport:
    """What one frame from one agent said about its tasks."""

    actor: str
    instance_id: str
    updates: list[UpdateReport] = field(default_factory=list)
    results: list[ResultReport] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.updates) + len(self.results)


class ReportService(Component):
    name = "report-service"

    def __init__(
        self, store: Store, settings: Settings, effects: Effects, *, clock: Callable[[], float] = wall_clock
    ) -> None:
        super().__init__()
        self._store = store
        self._effects = effects
        self._clock = clock
        # An agent's reports must apply in the order it sent them (a progress update committed after its
        # task's result would be lost), so each agent instance always uses the same lane, and a lane
        # flushes one batch at a time. Lanes flush in parallel on PostgreSQL (SQLite has one writer), once
        # their backlogs are deep enough to be worth it (the shared gate).
        lanes = 4 if store.is_postgres else 1
        gate = FlushGate(parallel_weight=max(1, settings.batch_max_size // 2))
        self.lanes: list[Batcher[AgentReport, None]] = [
            Batcher(
                f"report-batcher-{index}",
                self._flush,
                max_items=settings.batch_max_size * 4,
                weight=lambda report: report.size,
                concurrency=1,
                linger=settings.batch_linger.total_seconds(),
                gate=gate,
            )
            for index in range(lanes)
        ]
        self._progress_events = ProgressEvents(
            burst=settings.progress_event_burst, interval=settings.progress_event_interval.total_seconds()
        )
        self._trailing = TaskOwner(self.name)
        self._trailing_errors = LoopErrors(logger, "trailing progress events")
        self.applied_results = 0
        self.stale_results = 0

    async def _start(self) -> None:
        for lane in self.lanes:
            await lane.start()
        if self._progress_events.interval > 0:  # (none is held back otherwise)
            self._trailing.spawn(self._send_trailing(), "trailing-progress")

    async def _stop(self) -> None:
        await self._trailing.close()
        for lane in self.lanes:
            await lane.stop()

    def _lane(self, instance_id: str) -> Batcher[AgentReport, None]:
        return self.lanes[zlib.crc32(instance_id.encode()) % len(self.lanes)]

    def submit(self, report: AgentReport) -> asyncio.Future[None]:
        """Queue a report; the future resolves once it is durable (then results may be acknowledged)."""
        return self._lane(report.instance_id).enqueue(report)

    async def wait_for_room(self, instance_id: str) -> None:
        await self._lane(instance_id).wait_for_room()

    async def _send_trailing(self) -> None:
        """Every interval, the held-back progress reports that are due, as trailing reports of their agents."""
        while True:
            await asyncio.sleep(self._progress_events.interval)
            for held in self._progress_events.due(self._clock()):
                trailing = AgentReport(held.actor, held.instance_id, [UpdateReport(held.ref, UpdateKind.TRAILING)])
                try:
                    self.submit(trailing).add_done_callback(self._trailed)
                except Exception as exc:
                    self._trailing_errors.failed("queueing a trailing progress event", exc)

    def _trailed(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if isinstance(error, Exception):
            self._trailing_errors.failed("recording a trailing progress event", error)
        else:
            self._trailing_errors.succeeded()

    async def _flush(self, reports: list[AgentReport]) -> list[None]:
        transition = Transition(now=self._clock(), actor="")
        task_ids = {u.ref.task_id for r in reports for u in r.updates} | {
            res.ref.task_id for r in reports for res in r.results
        }
        async with self._store.hot_transaction() as uow:
            live = await uow.tasks.lock_live(task_ids)
            for report in reports:
                transition.actor = report.actor
                for update in report.updates:
                    task = live.get(update.ref.task_id)
                    if task is None or task.agent_instance_id != report.instance_id:
                        continue  # not a task this agent instance holds
                    if update.kind is UpdateKind.STARTED:
                        transition.start(task, update.ref)
                    elif not transition.is_current(task, update.ref):
                        continue  # a report of an attempt that is over
                    elif update.kind is UpdateKind.TRAILING:
                        if self._progress_events.trail(update.ref, transition.now):
                            transition.progress(task, update.ref, task.progress, task.progress_message)
                    else:
                        reported = Reported(update.ref, report.instance_id, report.actor)
                        as_event = self._progress_events.admit(reported, transition.now)
                        transition.progress(task, update.ref, update.progress, update.message, as_event=as_event)
                for result in report.results:
                    task = live.get(result.ref.task_id)
                    if (
                        task is None
                        or not transition.is_current(task, result.ref)
                        or task.agent_instance_id != report.instance_id
                    ):
                        # An attempt that is no longer current (never applied twice), or one this agent
                        # instance does not hold (a confused or foreign agent must not end another's task).
                        self.stale_results += 1
                        continue
                    self._progress_events.forget(task.id)
                    if result.output is not None:
                        transition.succeed(task, result.ref, result.output)
                    else:
                        error = result.error or TaskError("unknown", "agent reported neither output nor error")
                        transition.fail_attempt(task, error)
                    self.applied_results += 1
            await uow.tasks.write(transition.writes)
        await self._effects.after_commit(transition.after)
        return [None] * len(reports)
