"""`python -m controlplane.devtools.serve` (the plane the bench and the process tests start) warns about MESHPLANE_*
variables nothing reads, as `meshplane up` does: a misspelled setting in a benchmark's environment was ignored
silently, and the run measured the default it was meant to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.plane_process import PlaneProcess

pytestmark = pytest.mark.timeout(60)


def test_the_dev_plane_warns_about_a_misspelled_setting_and_serves(tmp_path: Path) -> None:
    plane = PlaneProcess(tmp_path / "plane", lease_timout="5s")  # MESHPLANE_LEASE_TIMOUT
    try:
        plane.start()
        assert plane.terminate() == 0
    finally:
        plane.kill()
    log = (tmp_path / "plane" / "plane-stderr.log").read_text()
    warning = "unknown variable MESHPLANE_LEASE_TIMOUT ignored (did you mean MESHPLANE_LEASE_TIMEOUT?)"
    assert [line for line in log.splitlines() if line.endswith(warning)] == [f"WARNING:controlplane.settings:{warning}"]
