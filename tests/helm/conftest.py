"""The pinned helm and the gateway binary, built once per session through the Makefile."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.helm.kube import ROOT
from tests.support.toolchain import require_tool

# The first build of helm compiles it from its Go module (~2.5 minutes here); later ones are no-ops.
BUILD_TIMEOUT = 840


def _make(target: str, why: str) -> float:
    require_tool("go", why)
    started = time.monotonic()
    result = subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"make {target} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return time.monotonic() - started


@pytest.fixture(scope="session")
def helm() -> Path:
    """`.tools/bin/helm` at the Makefile's pinned version."""
    _make("helm-tools", "the pinned helm is built from its Go module (make helm-tools; install Go >= 1.26)")
    path = ROOT / ".tools" / "bin" / "helm"
    assert path.is_file(), f"make helm-tools did not produce {path}"
    return path


@pytest.fixture(scope="session")
def gateway_binary() -> Path:
    """`.tools/bin/meshplane-gateway`, what the gateway image's entrypoint is."""
    _make("gateway-build", "the REST gateway is a Go module (make gateway-build; install Go >= 1.26)")
    path = ROOT / ".tools" / "bin" / "meshplane-gateway"
    assert path.is_file(), f"make gateway-build did not produce {path}"
    return path
