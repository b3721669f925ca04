"""Run a resolved container (tests.helm.kube.LocalContainer) as a local process, and probe it the way
the kubelet does: the rendered startup/readiness/liveness probes, executed literally."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helm.kube import LocalContainer, container_port


class LocalPod:
    """One container of a pod as a child process (its own process group); stderr goes to a log file."""

    def __init__(self, name: str, container: LocalContainer, log_dir: Path) -> None:
        self.name = name
        self.container = container
        self.log_path = log_dir / f"{name}.log"
        self.stdout_lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    async def start(self) -> LocalPod:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.container.argv,
            env=self.container.env,  # exactly the container's environment, nothing inherited
            cwd=self.container.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        self._reader = asyncio.ensure_future(self._read_stdout())
        return self

    async def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.stdout_lines.append(line.decode(errors="replace").rstrip("\n"))
            self._new_line.set()
        self._new_line.set()

    async def wait_for_line(self, prefix: str, timeout: float) -> str:
        """The first stdout line starting with `prefix`; fails if the process exits first."""
        assert self.process is not None
        async with asyncio.timeout(timeout):
            while True:
                for line in self.stdout_lines:
                    if line.startswith(prefix):
                        return line
                if self._reader is not None and self._reader.done():
                    code = await self.process.wait()
                    raise AssertionError(f"{self.name} exited with {code} before printing {prefix!r}:\n{self.logs()}")
                self._new_line.clear()
                await self._new_line.wait()

    async def run_to_completion(self, timeout: float) -> int:
        """For Job containers: start, wait for the exit code."""
        await self.start()
        assert self.process is not None
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
            if self._reader is not None:
                await self._reader
        self._close_log()
        return code

    def send_signal(self, sig: signal.Signals) -> None:
        """To the container's main process only, as the kubelet signals PID 1."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)

    async def terminate(self, within: float) -> int:
        """SIGTERM to the container's main process (as the kubelet sends it); its exit code within `within`
        seconds, else SIGKILL (as at the end of the grace period) and a failure."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within):
                code = await self.process.wait()
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"{self.name} did not exit within {within:g}s of SIGTERM:\n{self.logs()}") from None
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader, 5)
        self._close_log()
        return code

    async def kill(self) -> None:
        """SIGKILL the process group if the process still runs (test clean-up)."""
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def logs(self, tail: int = 6000) -> str:
        """The end of the process's stderr (its log)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:]

    # ------------------------------------------------------------ probes

    def probe(self, kind: str) -> dict[str, Any]:
        probe = self.container.spec.get(f"{kind}Probe")
        assert probe is not None, f"{self.name} has no {kind} probe"
        return dict(probe)

    async def run_probe(self, kind: str, host: str = "127.0.0.1") -> bool:
        """One execution of the rendered probe: True on success, as the kubelet counts it."""
        return await run_probe(self.probe(kind), self.container.spec, host)


_UNVERIFIED = ssl.create_default_context()
_UNVERIFIED.check_hostname = False
_UNVERIFIED.verify_mode = ssl.CERT_NONE


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def run_probe(probe: dict[str, Any], spec: dict[str, Any], host: str = "127.0.0.1") -> bool:
    timeout = float(probe.get("timeoutSeconds", 1))
    if "grpc" in probe:
        port = int(probe["grpc"]["port"])
        async with grpc.aio.insecure_channel(host_port(host, port)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                response = await stub.Check(
                    health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=timeout
                )
            except grpc.aio.AioRpcError:
                return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
    if "httpGet" in probe:
        get = probe["httpGet"]
        scheme = get.get("scheme", "HTTP")
        if scheme not in ("HTTP", "HTTPS"):
            raise AssertionError(f"probe scheme {scheme} is not emulated")
        port = container_port(spec, get["port"])
        url = f"{scheme.lower()}://{host_port(get.get('host', host), port)}{get.get('path', '/')}"
        # The kubelet's HTTPS probes do not verify the certificate.
        return 200 <= await http_status(url, timeout=timeout, tls=_UNVERIFIED) < 400
    if "tcpSocket" in probe:
        port = container_port(spec, probe["tcpSocket"]["port"])
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True
    raise AssertionError(f"probe {sorted(probe)} is not emulated")


async def http_status(
    url: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None, tls: ssl.SSLContext | None = None
) -> int:
    """The status of a GET (0 when nothing answers); `tls` checks an https URL's certificate."""

    def get() -> int:
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=tls) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (OSError, urllib.error.URLError):
            return 0

    return await asyncio.to_thread(get)


async def http_get(
    url: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None, tls: ssl.SSLContext | None = None
) -> tuple[int, bytes]:
    def get() -> tuple[int, bytes]:
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=tls) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    return await asyncio.to_thread(get)
