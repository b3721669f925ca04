"""The Go SDK's conformance agent: sdk/go/cmd/meshplane-conformance, built once per session."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conformance.launchers import agent_flags
from tests.support.toolchain import require_tool

LANGUAGE = "go"

ROOT = Path(__file__).resolve().parents[3]
MODULE = ROOT / "sdk" / "go"
BUILD_TIMEOUT_S = 600

_built: dict[str, Path] = {}  # "binary" once build() ran


def build() -> None:
    go = require_tool("go", "the Go conformance agent is built with the Go toolchain (install Go >= 1.26)")
    out_dir = Path(tempfile.mkdtemp(prefix="meshplane-conformance-go-"))
    atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    binary = out_dir / "meshplane-conformance"
    env = dict(os.environ)
    env["GOFLAGS"] = f"{env.get('GOFLAGS', '')} -buildvcs=false".strip()
    env["GOWORK"] = "off"
    result = subprocess.run(
        [go, "build", "-o", str(binary), "./cmd/meshplane-conformance"],
        cwd=MODULE,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise RuntimeError(f"go build of the Go conformance agent failed:\n{result.stdout}\n{result.stderr}")
    _built["binary"] = binary


def command(target: str, name: str, instance_id: str, max_concurrency: int, token: str | None = None) -> list[str]:
    if "binary" not in _built:
        raise RuntimeError("build() has not run")
    return [str(_built["binary"]), *agent_flags(target, name, instance_id, max_concurrency, token)]
