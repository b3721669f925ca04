"""Child processes started in their own session (process group) by tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_process_group(process: subprocess.Popen[str], *, grace: float) -> None:
    """SIGTERM the process's group (its children too, even if the leader has exited), SIGKILL it if the
    leader is still there after `grace` seconds; close its stdout."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()
