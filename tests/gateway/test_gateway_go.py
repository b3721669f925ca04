"""The REST gateway's own Go test suite (plumbing: routing, errors, streaming, health, CORS, limits)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.toolchain import require_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_gateway_go_vet_and_tests_pass() -> None:
    require_tool("go", "the REST gateway is a Go module (install Go >= 1.26)")
    result = subprocess.run(
        ["make", "--no-print-directory", "gateway-test"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"gateway go vet/test failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
