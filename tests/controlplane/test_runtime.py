"""The control plane process's event loop runner and garbage-collector tuning."""

from __future__ import annotations

import subprocess
import sys

import pytest

from controlplane.runtime import GC_THRESHOLDS, run_event_loop

pytestmark = pytest.mark.timeout(60)


def test_run_event_loop_returns_what_the_coroutine_returns() -> None:
    async def answer() -> int:
        return 42

    assert run_event_loop(answer()) == 42


def test_tuning_freezes_start_up_objects_and_slows_collections() -> None:
    # In a fresh interpreter: the collector's settings are process-wide.
    script = (
        "import gc; from controlplane.runtime import tune_garbage_collection; "
        "before = gc.get_freeze_count(); tune_garbage_collection(); "
        "print(before, gc.get_freeze_count(), *gc.get_threshold())"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    before, frozen, *thresholds = map(int, output.split())
    assert before == 0 and frozen > 1000, "start-up objects left the collector's view"
    assert tuple(thresholds) == GC_THRESHOLDS
