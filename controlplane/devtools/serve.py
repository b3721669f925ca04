"""`python -m controlplane.devtools.serve`: one control plane from MESHPLANE_* env, for tests and benchmarks.

Prints `READY <grpc address> <metrics address>` once serving; drains and exits 0 on SIGTERM/SIGINT. Like
`meshplane up`, logs a warning (stderr) for each MESHPLANE_* variable nothing reads.
(`meshplane up` is the user-facing command; this runner has no CLI flags and a machine-readable line.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from controlplane.app import ControlPlane
from controlplane.runtime import run_event_loop, tune_interpreter
from controlplane.settings import Settings, warn_about_unknown_variables


async def serve() -> None:
    logging.basicConfig(level=os.environ.get("MESHPLANE_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    settings = Settings()
    warn_about_unknown_variables()  # a misspelled setting would leave a benchmark measuring the default
    plane = ControlPlane(settings)
    await plane.start()
    tune_interpreter()
    print(f"READY {plane.address} {plane.metrics.address or '-'}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await plane.drain(grace=5)
    await plane.stop()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    run_event_loop(serve())
