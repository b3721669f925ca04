"""The gateway (a Go binary: the REST bridge, and optionally a gRPC ingress) as a child process of ``meshplane up``
and ``meshplane bench``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

BINARY = "meshplane-gateway"
# The gateway's ready lines on stdout, one per listener: what it serves, and where.
_READY_LINES = {
    "rest": re.compile(r"listening on (\S+)"),
    "grpc": re.compile(r"serving gRPC on (\S+)"),
    "metrics": re.compile(r"serving metrics on (\S+)"),
}
_REPO_ROOT = Path(__file__).resolve().parents[2]


def ready_line(line: str) -> tuple[str, str] | None:
    """What a line of the gateway's stdout announces: ("rest", its URL), ("grpc", the ingress address) or
    ("metrics", their URL); None for any other line."""
    for listener, pattern in _READY_LINES.items():
        if match := pattern.search(line):
            return listener, match.group(1)
    return None


def find_gateway() -> Path | None:
    """``MESHPLANE_GATEWAY_BIN``, else the repo's ``.tools/bin``, else ``PATH``."""
    return find_go_binary(BINARY, "MESHPLANE_GATEWAY_BIN")


def find_go_binary(name: str, variable: str) -> Path | None:
    """One of our Go binaries: the path in ``variable``, else ``.tools/bin`` (``make gateway-build``), else ``PATH``."""
    configured = os.environ.get(variable)
    if configured:
        path = Path(configured)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    for directory in (_REPO_ROOT / ".tools" / "bin", Path.cwd() / ".tools" / "bin"):
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def _die_with_parent(args: list[str]) -> list[str]:
    """SIGTERM the child when this process dies, even by SIGKILL (util-linux `setpriv`; no preexec_fn)."""
    setpriv = shutil.which("setpriv")
    if setpriv and sys.platform.startswith("linux"):
        return [setpriv, "--pdeathsig", "TERM", "--", *args]
    return args


class Gateway:
    """Starts the gateway, waits for its ready line(s), and stops it.

    With ``grpc_listen`` it also serves the plane's gRPC API there (its gRPC ingress, which sends concurrent
    submits to the plane in batches); ``grpc_address`` is then the address it bound. With ``metrics_listen``
    it serves Prometheus metrics there; ``metrics_url`` is then their URL.
    """

    def __init__(
        self,
        binary: Path,
        *,
        listen: str,
        upstream: str,
        grpc_listen: str = "",
        metrics_listen: str = "",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.extra_args = tuple(extra_args)
        self.listen = listen
        self.upstream = upstream
        self.grpc_listen = grpc_listen
        self.metrics_listen = metrics_listen
        self.url = ""
        self.grpc_address = ""
        self.metrics_url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe: asyncio.ReadTransport | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 20.0) -> None:
        """Raises RuntimeError when it exits or stays silent instead of getting ready."""
        # Spawned by `subprocess`, not by the event loop: uvloop's spawner runs the interpreter's at-fork
        # handlers (gRPC's among them) in the child while the plane's gRPC threads are busy, and the
        # child died of SIGSEGV before it could exec. Its own session: a terminal's Ctrl-C reaches
        # `meshplane up` only, which stops the gateway in order.
        self._process = await asyncio.to_thread(
            subprocess.Popen,
            _die_with_parent(self._command()),
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        stdout = asyncio.StreamReader()
        self._pipe, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stdout), self._process.stdout
        )
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = (await stdout.readline()).decode(errors="replace")
                    if not line:
                        code = await asyncio.to_thread(self._process.wait)
                        raise RuntimeError(f"{self.binary.name} exited with code {code} before it was ready")
                    match ready_line(line):
                        case ("rest", url):
                            self.url = url
                        case ("grpc", address):
                            self.grpc_address = address
                        case ("metrics", url):
                            self.metrics_url = url
                    if (
                        self.url
                        and (self.grpc_address or not self.grpc_listen)
                        and (self.metrics_url or not self.metrics_listen)
                    ):
                        break
        except TimeoutError as exc:
            await self.stop()
            raise RuntimeError(f"{self.binary.name} did not get ready within {timeout:g}s") from exc
        self._reader = asyncio.ensure_future(self._drain_stdout(stdout))

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _command(self) -> list[str]:
        command = [str(self.binary), "--listen", self.listen, "--upstream", self.upstream, *self.extra_args]
        if self.grpc_listen:
            command += ["--grpc-listen", self.grpc_listen]
        if self.metrics_listen:
            command += ["--metrics-listen", self.metrics_listen]
        return command

    async def _drain_stdout(self, stdout: asyncio.StreamReader) -> None:
        """Keep reading its stdout so a chatty gateway never blocks on a full pipe."""
        while line := await stdout.readline():
            logger.info("gateway: %s", line.decode(errors="replace").rstrip())

    async def stop(self, grace: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.to_thread(process.wait, grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await asyncio.to_thread(process.wait)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
