"""A latency histogram the hot path can afford: plain ints and floats, read by the collector at scrape time.

`observe` is a bisect and two adds; there is no lock (the event loop is the only writer). A scrape, on the
metrics server's thread, copies the counts in one go (the GIL makes the list copy atomic); the sum it reads
may hold an observation or two the counts do not yet, which Prometheus's rates never notice.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

# gRPC calls: 0.5 ms to 10 s.
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Tasks (queue waits, whole lives): 1 ms to an hour.
TASK_BUCKETS = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """What a scrape shows: each bound with the observations at or under it (cumulative), then the sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # one per bound, then +Inf (the count)
    total: float

    @property
    def count(self) -> int:
        return self.cumulative[-1]

    def with_zeros(self, zeros: int) -> HistogramSnapshot:
        """This snapshot with `zeros` more observations of 0 (at or under every bound)."""
        return HistogramSnapshot(self.bounds, tuple(c + zeros for c in self.cumulative), self.total)


class Histogram:
    """Observations counted per bucket (`le` bounds, as Prometheus's), with their sum."""

    __slots__ = ("_counts", "_sum", "bounds")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be distinct and ascending")
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: over every bound (+Inf)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self.bounds, value)] += 1  # bisect_left: a value equal to a bound is `le` it
        self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        counts = list(self._counts)
        cumulative = []
        running = 0
        for count in counts:
            running += count
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), self._sum)
