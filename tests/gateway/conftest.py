"""Fixtures for the REST gateway's end-to-end tests: the gateway binary, built once per session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.gateway.rest_mesh import GATEWAY_BINARY, ROOT
from tests.support.toolchain import require_tool


@pytest.fixture(scope="session")
def gateway_binary() -> Path:
    """`make gateway-build`, once per session (skipped without Go; a failure under CI=true)."""
    require_tool("go", "the REST gateway is a Go module (install Go >= 1.26)")
    result = subprocess.run(
        ["make", "--no-print-directory", "gateway-build"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"make gateway-build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert GATEWAY_BINARY.is_file()
    return GATEWAY_BINARY
