"""One control plane replica in its own process (controlplane.devtools.serve), for tests that kill it
(SIGKILL) or restart it. `PlaneProcess` starts it, waits for READY, and stops or kills it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from tests.support.plane import TEST_SETTINGS

ROOT = Path(__file__).resolve().parents[2]


class PlaneProcess:
    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self.data_dir = data_dir
        values = {**TEST_SETTINGS, "data_dir": data_dir, **settings}
        self.env = {**os.environ, **{f"MESHPLANE_{k.upper()}": _env_value(v) for k, v in values.items()}}
        self.env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{self.env.get('PYTHONPATH', '')}"
        self.process: subprocess.Popen[str] | None = None
        self.address = ""
        self._log: IO[str] | None = None

    def start(self, timeout: float = 30) -> PlaneProcess:
        data_dir = self.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log = (data_dir / "plane-stderr.log").open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controlplane.devtools.serve"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith("READY "):
                self.address = line.split()[1]
                return self
            if not line and self.process.poll() is not None:
                break
        self.kill()
        raise RuntimeError(f"control plane process did not start; see {data_dir / 'plane-stderr.log'}")

    def kill(self) -> None:
        """SIGKILL, as a crash does: no drain, no cleanup."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._close_log()

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM: graceful drain and stop. Returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _env_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)
