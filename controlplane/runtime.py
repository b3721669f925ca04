"""How a control plane process runs: its event loop, the pace of its garbage collector, and how often its
threads trade the interpreter lock."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Collect young objects every 20,000 net allocations instead of 700, and the oldest generation rarely.
# A plane holds many long-lived objects (a few dozen per agent session: its stream, tasks, buffers); with
# the defaults the collector kept re-walking them: with 10,000 idle sessions (the benchmark's idle phase,
# run back to back) the plane's CPU went from 26.2% to 19.8% of a core with this, at the same RSS.
# Reference cycles are still reclaimed, just in larger, rarer batches.
GC_THRESHOLDS = (20_000, 20, 100)

# A thread waiting for the GIL asks the running one to let go after this long (Python's default: 5 ms).
# grpc.aio hands every completed read and write from its poller thread to the event loop, and the poller
# needs the GIL to do it: while the loop runs Python without a pause (a busy plane), each hand-off waited
# up to 5 ms. In 13 alternating pairs of benchmark runs on the 2-core machine (2026-11-23, its speed
# swinging ~1.5x over the day), 0.5 ms gave more single submits in 10 (mean 1,320 against 1,223 tasks/s);
# batches (4 of 8 pairs) and one caller's p50 did not move beyond the runs' noise.
GIL_SWITCH_INTERVAL = 0.0005


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed (faster), else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def tune_interpreter() -> None:
    """For a long-running server, once started: what start-up allocated (modules, descriptors, schema)
    stays for good, so it leaves the collector's view (`gc.freeze`), collections come less often, and
    threads trade the GIL sooner (GIL_SWITCH_INTERVAL)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
