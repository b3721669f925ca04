"""The control plane process's event loop runner and interpreter tuning (garbage collector, GIL hand-offs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from controlplane.runtime import GC_THRESHOLDS, GIL_SWITCH_INTERVAL, run_event_loop

pytestmark = pytest.mark.timeout(60)


def test_run_event_loop_returns_what_the_coroutine_returns() -> None:
    async def answer() -> int:
        return 42

    assert run_event_loop(answer()) == 42


def test_tuning_freezes_start_up_objects_slows_collections_and_shortens_gil_waits() -> None:
    # In a fresh interpreter: the collector's settings and the switch interval are process-wide.
    script = (
        "import gc, sys; from controlplane.runtime import tune_interpreter; "
        "before = gc.get_freeze_count(); tune_interpreter(); "
        "print(before, gc.get_freeze_count(), sys.getswitchinterval(), *gc.get_threshold())"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    before, frozen, switch_interval, *thresholds = output.split()
    assert int(before) == 0 and int(frozen) > 1000, "start-up objects left the collector's view"
    assert tuple(map(int, thresholds)) == GC_THRESHOLDS
    assert float(switch_interval) == pytest.approx(GIL_SWITCH_INTERVAL)
