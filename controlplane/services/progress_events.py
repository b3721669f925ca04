"""Which progress reports become task events.

Every report updates the task's progress (GetTask shows the latest). An attempt's first `burst` reports are
also recorded as events, one each, for WatchTask; after that, at most one per `interval`. An agent that
reports progress in a tight loop (per item of a million) would otherwise add a row and a watch message per
report.

A report left out is held back, so that an attempt going quiet right after one does not leave its watchers
on older progress than the task shows (until its next event, maybe its end). Once an interval has passed since
the attempt's last event, the held-back report is due (`due`; the report service looks every interval): the
report service sends a trailing report down the agent's own lane, and applying it (`trail`) records the
task's progress (the latest report's) as the attempt's trailing event, unless a later event recorded newer
progress meanwhile. In that lane the trailing report keeps its place among the agent's own reports: applied
after the attempt's result, it finds the attempt over and is skipped, as any report of an attempt that is over.

What is remembered here is per replica and bounded: an attempt that is forgotten (evicted, ended by its
result, or reported on another replica) starts a new burst, and has nothing held back.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from controlplane.domain.tasks import TaskRef


@dataclass(frozen=True, slots=True)
class Reported:
    """A progress report of attempt `ref`, by agent instance `instance_id` (the event's `actor`)."""

    ref: TaskRef
    instance_id: str
    actor: str


@dataclass(slots=True)
class _Attempt:
    number: int
    count: int  # reports recorded as events
    last_time: float  # when the last of them was recorded
    held: Reported | None = None  # the latest report, when it was not recorded and no event came since


class ProgressEvents:
    def __init__(self, *, burst: int, interval: float, capacity: int = 100_000) -> None:
        self._burst = burst
        self.interval = interval
        self._capacity = capacity
        self._recorded: OrderedDict[str, _Attempt] = OrderedDict()
        self._due: set[str] = set()  # tasks whose held-back report `due` has not handed out yet

    def admit(self, report: Reported, now: float) -> bool:
        """Whether `report` is recorded as an event (and counted as one if so); if not, it is held back."""
        task_id = report.ref.task_id
        attempt = self._recorded.get(task_id)
        if attempt is None or attempt.number != report.ref.attempt:
            attempt = self._recorded[task_id] = _Attempt(report.ref.attempt, 0, now)
            self._due.discard(task_id)
            self._evict()
        self._recorded.move_to_end(task_id)
        if attempt.count >= self._burst and now - attempt.last_time < self.interval:
            attempt.held = report
            self._due.add(task_id)
            return False
        self._record(task_id, attempt, now)
        return True

    def due(self, now: float) -> list[Reported]:
        """The held-back reports whose attempts' last event was an interval ago or more, each handed out once:
        the caller sends each down its agent's lane as a trailing report (which `trail` then records)."""
        handed: list[Reported] = []
        for task_id in list(self._due):
            attempt = self._recorded[task_id]
            if attempt.held is not None and now - attempt.last_time >= self.interval:
                handed.append(attempt.held)
                self._due.discard(task_id)
        return handed

    def trail(self, ref: TaskRef, now: float) -> bool:
        """Whether the trailing report of `ref` is recorded as an event (of the task's progress, the latest
        report's); counted as one if so. Not when nothing is held back any more (a later report was recorded,
        or the attempt forgotten), nor less than an interval after a later event (then it is due again later).
        """
        attempt = self._recorded.get(ref.task_id)
        if attempt is None or attempt.number != ref.attempt or attempt.held is None:
            return False
        if now - attempt.last_time < self.interval:
            self._due.add(ref.task_id)
            return False
        self._record(ref.task_id, attempt, now)
        return True

    def forget(self, task_id: str) -> None:
        """The task's attempt ended: nothing to remember for it."""
        self._recorded.pop(task_id, None)
        self._due.discard(task_id)

    def _record(self, task_id: str, attempt: _Attempt, now: float) -> None:
        attempt.count += 1
        attempt.last_time = now
        attempt.held = None
        self._due.discard(task_id)

    def _evict(self) -> None:
        while len(self._recorded) > self._capacity:
            task_id, _ = self._recorded.popitem(last=False)
            self._due.discard(task_id)

    def __len__(self) -> int:
        return len(self._recorded)
