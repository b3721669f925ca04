"""CLI tests run the real console script as a subprocess, against a real `meshplane up --demo` subprocess."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

MESHPLANE = str(Path(sys.executable).with_name("meshplane"))
REPO = Path(__file__).resolve().parents[2]
READY_PREFIX = "meshplane ready: grpc "


def cli_env(target: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHPLANE_")}
    if target is not None:
        env["MESHPLANE_TARGET"] = target
    env.update(extra)
    return env


def run_cli(
    *args: str, target: str | None, stdin: str | None = None, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MESHPLANE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or cli_env(target),
        cwd=REPO,
        check=False,
    )


def read_line(process: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    """The first stdout line of `process` starting with `prefix` (others are skipped)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"process exited ({process.wait()}) before printing {prefix!r}")
        if line.startswith(prefix):
            return line.rstrip("\n")
    raise AssertionError(f"no {prefix!r} line within {timeout}s")


@dataclass
class Mesh:
    """A running `meshplane up` process."""

    process: subprocess.Popen[str]
    ready_line: str
    address: str
    log: Path

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, target=self.address, stdin=stdin, timeout=timeout)

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()


def start_mesh(data_dir: Path, *extra: str, env: dict[str, str] | None = None, demo: bool = True) -> Mesh:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "meshplane-up.log"
    args = [MESHPLANE, "up", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*args, *(["--demo"] if demo else []), *extra],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env or cli_env(MESHPLANE_GATEWAY_BIN=str(data_dir / "no-gateway")),
            cwd=REPO,
        )
    try:
        ready = read_line(process, READY_PREFIX, timeout=60)
    except AssertionError as exc:
        process.kill()
        process.wait()
        raise AssertionError(f"{exc}\n--- meshplane up log ---\n{log.read_text()[-4000:]}") from exc
    address = ready.removeprefix(READY_PREFIX).split()[0]
    return Mesh(process, ready, address, log)


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """One `meshplane up --demo` for the CLI tests that only need some mesh to talk to."""
    started = start_mesh(tmp_path_factory.mktemp("mesh"))
    try:
        yield started
    finally:
        started.stop()


def lines(text: str) -> Sequence[str]:
    return [line for line in text.splitlines() if line.strip()]


def task_fields(text: str) -> dict[str, str]:
    """The `name: value` lines of `meshplane task get` (their alignment follows the longest name shown)."""
    pairs = (line.split(":", 1) for line in text.splitlines() if line.strip() and not line.startswith(" "))
    return {name: value.strip() for name, value in pairs}
