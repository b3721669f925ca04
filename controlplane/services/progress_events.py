"""Which progress reports become task events.

Every report updates the task's progress (GetTask shows the latest). An attempt's first `burst` reports are
also recorded as events, one each, for WatchTask; after that, at most one per `interval`. An agent that
reports progress in a tight loop (per item of a million) would otherwise add a row and a watch message per
report. What is remembered here is per replica and bounded: an attempt that is forgotten (evicted, or
reported on another replica) starts a new burst.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from controlplane.domain.tasks import TaskRef


@dataclass(slots=True)
class _Recorded:
    attempt: int
    count: int
    last_time: float


class ProgressEvents:
    def __init__(self, *, burst: int, interval: float, capacity: int = 100_000) -> None:
        self._burst = burst
        self._interval = interval
        self._capacity = capacity
        self._recorded: OrderedDict[str, _Recorded] = OrderedDict()

    def admit(self, ref: TaskRef, now: float) -> bool:
        """Whether this progress report of `ref` is recorded as an event (and counted as one if so)."""
        recorded = self._recorded.get(ref.task_id)
        if recorded is None or recorded.attempt != ref.attempt:
            recorded = self._recorded[ref.task_id] = _Recorded(ref.attempt, 0, now)
            self._evict()
        self._recorded.move_to_end(ref.task_id)
        if recorded.count >= self._burst and now - recorded.last_time < self._interval:
            return False
        recorded.count += 1
        recorded.last_time = now
        return True

    def forget(self, task_id: str) -> None:
        """The task's attempt ended: nothing to remember for it."""
        self._recorded.pop(task_id, None)

    def _evict(self) -> None:
        while len(self._recorded) > self._capacity:
            self._recorded.popitem(last=False)

    def __len__(self) -> int:
        return len(self._recorded)
