"""How `meshplane bench` waits for a count on the plane's metrics: few scrapes, and it still notices the end.
(Counts of scrapes only, never speeds: no wall-clock assertions.)"""

from __future__ import annotations

import pytest

from controlplane.bench import _wait_for

pytestmark = pytest.mark.timeout(30)


class Counter:
    """A metric that grows by `step` on every scrape; `failures` scrapes time out first."""

    def __init__(self, step: float, failures: int = 0) -> None:
        self.value = 0.0
        self.step = step
        self.failures = failures
        self.scrapes = 0

    def read(self) -> float:
        self.scrapes += 1
        if self.failures:
            self.failures -= 1
            raise TimeoutError("the scrape timed out")  # an OSError, as urllib raises it
        self.value += self.step
        return self.value


async def test_it_returns_once_the_count_reaches_the_target() -> None:
    counter = Counter(step=25)
    await _wait_for(counter.read, 100, 10, "results")
    assert counter.value == 100
    assert counter.scrapes == 4


async def test_a_scrape_that_times_out_is_asked_again() -> None:
    counter = Counter(step=50, failures=2)
    await _wait_for(counter.read, 100, 10, "results")
    assert counter.scrapes == 4


async def test_a_count_that_never_gets_there_times_out_with_what_it_waited_for() -> None:
    counter = Counter(step=0)
    with pytest.raises(TimeoutError, match="12 results"):
        await _wait_for(counter.read, 12, 0.05, "12 results")
