"""A mesh to test the REST gateway against: the real gateway binary as a child process, in front of a real
control plane (in-process, ephemeral ports, SQLite + embedded NATS), with an SDK agent connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent_runtime import Agent
from controlplane.app import ControlPlane
from controlplane.cli.gateway import ready_line
from tests.support.plane import running_plane
from tests.support.processes import stop_process_group

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_BINARY = ROOT / ".tools" / "bin" / "meshplane-gateway"


class GatewayProcess:
    """The gateway binary as a child process: `--listen 127.0.0.1:0`, the URL (and with `--grpc-listen`, the gRPC
    address) read from its ready lines."""

    def __init__(self, binary: Path, upstream: str, log_path: Path, *extra: str) -> None:
        self.binary = binary
        self.upstream = upstream
        self.log_path = log_path
        self.extra = extra
        self.url = ""
        self.grpc_address = ""  # with --grpc-listen: where it serves gRPC
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "--listen", "127.0.0.1:0", "--upstream", self.upstream, *self.extra],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    # The ready lines come together: once one is read, the next may already be buffered
                    # (where the selector does not see it), so they are read on directly.
                    while line := self.process.stdout.readline():
                        match ready_line(line):
                            case ("rest", url):
                                self.url = url
                            case ("grpc", address):
                                self.grpc_address = address
                        if self.url and (self.grpc_address or "--grpc-listen" not in self.extra):
                            return self
                        if not self.url:
                            break  # not a ready line: wait for the next with the selector
                    if not line:
                        break
        self.stop()
        raise AssertionError(f"the gateway did not get ready; its log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        stop_process_group(process, grace=10)


@contextlib.contextmanager
def running_gateway(binary: Path, upstream: str, log_path: Path, *extra: str) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(binary, upstream, log_path, *extra).start()
    try:
        yield gateway
    finally:
        gateway.stop()


@dataclass
class Mesh:
    """A control plane, the gateway in front of it, an SDK agent, and an HTTP client for the gateway."""

    plane: ControlPlane
    gateway: GatewayProcess
    agent: Agent
    http: httpx.AsyncClient
    seen: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def running_mesh(
    binary: Path, work_dir: Path, agent: Agent, *, token: str | None = None, **settings: Any
) -> AsyncIterator[Mesh]:
    """Everything on ephemeral ports; the agent is connected before this yields; all stopped on exit.

    Heartbeats and leases are relaxed from the plane tests' fast clocks: nothing here waits for a lease to
    expire, and on a loaded 2-core machine a 1.5 s lease can lapse and re-queue a task mid-test.
    """
    settings = {"heartbeat_interval": 0.5, "lease_timeout": 10, **settings}
    async with running_plane(work_dir / "plane", **settings) as plane:
        with running_gateway(binary, plane.address, work_dir / "gateway.log") as gateway:
            serving = asyncio.ensure_future(agent.serve(plane.address, token=token))
            try:
                await agent.wait_connected(timeout=15)
                async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as http:
                    yield Mesh(plane=plane, gateway=gateway, agent=agent, http=http)
            finally:
                await agent.stop()
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await serving
