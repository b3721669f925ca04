"""Group commit: items that arrive while a flush runs go out together; overlap only with a deep backlog."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from controlplane.batching import Batcher, FlushGate
from tests.support.eventually import eventually


class Recorder:
    """A flush that records its batches and holds each one until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()

    async def flush(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return [item * 10 for item in items]


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Batcher[int, int]]]:
    batchers: list[Batcher[int, int]] = []

    def make(recorder: Recorder, **options: object) -> Batcher[int, int]:
        batcher: Batcher[int, int] = Batcher("test", recorder.flush, **options)  # type: ignore[arg-type]
        batchers.append(batcher)
        return batcher

    yield make
    for batcher in batchers:
        await batcher.stop()


async def test_items_arriving_during_a_flush_go_out_together_in_the_next(
    started: Callable[..., Batcher[int, int]],
) -> None:
    recorder = Recorder()
    batcher = started(recorder, max_items=100, concurrency=4, gate=FlushGate(parallel_weight=50))
    await batcher.start()
    first = batcher.enqueue(1)
    await eventually(lambda: recorder.batches == [[1]])
    rest = [batcher.enqueue(n) for n in range(2, 12)]
    await asyncio.sleep(0.05)  # idle workers had every chance to start small flushes
    assert recorder.batches == [[1]], "a second flush started for a shallow backlog"
    recorder.release.set()
    assert await first == 10
    assert [await future for future in rest] == [n * 10 for n in range(2, 12)]
    assert recorder.batches == [[1], list(range(2, 12))]
    assert recorder.most_running == 1


async def test_a_deep_backlog_flushes_in_parallel(started: Callable[..., Batcher[int, int]]) -> None:
    recorder = Recorder()
    batcher = started(recorder, max_items=10, concurrency=3, gate=FlushGate(parallel_weight=10))
    await batcher.start()
    futures = [batcher.enqueue(n) for n in range(30)]
    await eventually(lambda: recorder.running == 3)
    recorder.release.set()
    assert [await future for future in futures] == [n * 10 for n in range(30)]
    assert [len(batch) for batch in recorder.batches] == [10, 10, 10]


async def test_batchers_sharing_a_gate_take_turns_in_arrival_order(
    started: Callable[..., Batcher[int, int]],
) -> None:
    gate = FlushGate(parallel_weight=1000)
    first, second = Recorder(), Recorder()
    lane_a = started(first, max_items=100, gate=gate)
    lane_b = started(second, max_items=100, gate=gate)
    await lane_a.start()
    await lane_b.start()
    a1 = lane_a.enqueue(1)
    await eventually(lambda: first.running == 1)
    b1 = lane_b.enqueue(2)
    await asyncio.sleep(0.05)
    assert second.batches == [], "lane b flushed while lane a held the only turn"
    a2 = lane_a.enqueue(3)  # lane a has more, but lane b asked first
    first.release.set()
    assert await a1 == 10
    await eventually(lambda: second.running == 1)
    assert first.running == 0 and first.batches == [[1]]
    second.release.set()
    assert await b1 == 20
    assert await a2 == 30
    assert first.batches == [[1], [3]]


async def test_a_lone_callers_flushes_never_linger(started: Callable[..., Batcher[int, int]]) -> None:
    recorder = Recorder()
    recorder.release.set()
    # A linger far beyond the test's timeout: if a lone caller's flush waited for company, this would hang.
    batcher = started(recorder, max_items=100, gate=FlushGate(parallel_weight=50), linger=3600.0)
    await batcher.start()
    for n in range(1, 6):
        assert await batcher.call(n) == n * 10
    assert recorder.batches == [[1], [2], [3], [4], [5]]


async def test_under_concurrent_load_a_shallow_batch_waits_for_company(
    started: Callable[..., Batcher[int, int]],
) -> None:
    recorder = Recorder()
    recorder.release.set()
    batcher = started(recorder, max_items=100, gate=FlushGate(parallel_weight=3), linger=3600.0)
    await batcher.start()
    assert await asyncio.gather(batcher.enqueue(1), batcher.enqueue(2)) == [10, 20]
    assert recorder.batches == [[1, 2]], "two callers at once: others are clearly submitting"
    third = batcher.enqueue(3)
    await asyncio.sleep(0.05)
    assert recorder.batches == [[1, 2]], "a shallow batch after a shared one flushed without waiting"
    rest = [batcher.enqueue(4), batcher.enqueue(5)]  # the backlog is deep now: it goes at once
    assert [await third, *[await future for future in rest]] == [30, 40, 50]
    assert recorder.batches == [[1, 2], [3, 4, 5]]
