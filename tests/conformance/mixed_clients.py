"""The mixed-language conformance clients (tests/conformance/CONTRACT.md, "Mixed-language clients").

One small client program per SDK, built with that SDK's public client API only:

- python: ``clients/python/client.py``, run with this interpreter (nothing to build);
- go: ``sdk/go/cmd/meshplane-conformance-client``, built with ``go build`` in the SDK's module
  (like the Go conformance agent, see ``launchers/go.py``);
- typescript: ``clients/typescript/client.ts``, built with the repo's ``tsc -b`` (which builds the
  SDK first, a project reference), like the TypeScript conformance agent (``launchers/typescript.py``).

:func:`prepare` builds a language's client once per session and remembers the outcome (a missing
toolchain skips locally and fails under ``CI=true``, as for the agents); :func:`client` hands the
argv prefix to a test or skips/fails it; :func:`run` runs one client command to its end.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.launchers import go as go_launcher
from tests.conformance.launchers import typescript as ts_launcher
from tests.support.toolchain import require_tool, toolchain_missing

CLIENTS = Path(__file__).resolve().parent / "clients"
PYTHON_CLIENT = CLIENTS / "python" / "client.py"
TS_CLIENT_DIR = CLIENTS / "typescript"
GO_CLIENT_PACKAGE = "./cmd/meshplane-conformance-client"

RUN_TIMEOUT_S = 40.0  # below the tests' 60 s timeout, so a hung client is killed here, not by pytest-timeout


@dataclass
class _Built:
    argv: list[str] = field(default_factory=list)
    skip: str = ""
    fail: str = ""
    seconds: float = 0.0


_built: dict[str, _Built] = {}


def _build_python() -> list[str]:
    return [sys.executable, str(PYTHON_CLIENT)]


def _build_go() -> list[str]:
    go = require_tool("go", "the Go conformance client is built with the Go toolchain (install Go >= 1.26)")
    out_dir = Path(tempfile.mkdtemp(prefix="meshplane-conformance-go-client-"))
    atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    binary = out_dir / "meshplane-conformance-client"
    env = dict(os.environ)
    env["GOFLAGS"] = f"{env.get('GOFLAGS', '')} -buildvcs=false".strip()
    env["GOWORK"] = "off"
    result = subprocess.run(
        [go, "build", "-o", str(binary), GO_CLIENT_PACKAGE],
        cwd=go_launcher.MODULE,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=go_launcher.BUILD_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise RuntimeError(f"go build of the Go conformance client failed:\n{result.stdout}\n{result.stderr}")
    return [str(binary)]


def _build_typescript() -> list[str]:
    node = require_tool("node", "the TypeScript conformance client runs on Node.js (install Node.js >= 18)")
    if not ts_launcher.TSC.exists() or not ts_launcher.SDK_LINK.exists():
        toolchain_missing(
            "the npm workspace is not installed (node_modules/typescript, node_modules/@meshplane/sdk): "
            "run `make node` (npm install at the repo root)"
        )
    result = subprocess.run(
        [node, str(ts_launcher.TSC), "-b", str(TS_CLIENT_DIR)],
        cwd=ts_launcher.ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=ts_launcher.BUILD_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise RuntimeError(f"tsc -b of the TypeScript conformance client failed:\n{result.stdout}\n{result.stderr}")
    return [node, str(TS_CLIENT_DIR / "dist" / "client.js")]


_BUILDERS = {"python": _build_python, "go": _build_go, "typescript": _build_typescript}


def prepare(language: str) -> None:
    """Build a language's client, once per session (the outcome is remembered; nothing raised)."""
    if language in _built:
        return
    built = _Built()
    _built[language] = built
    started = time.monotonic()
    try:
        built.argv = _BUILDERS[language]()
    except pytest.skip.Exception as exc:
        built.skip = str(exc.msg)
    except pytest.fail.Exception as exc:
        built.fail = str(exc.msg)
    except Exception as exc:
        built.fail = f"building the {language} conformance client failed: {exc}"
    built.seconds = time.monotonic() - started


def client(language: str) -> list[str]:
    """The argv prefix of ``language``'s built client, or skip/fail the calling test as its build did."""
    __tracebackhide__ = True
    prepare(language)
    built = _built[language]
    if built.skip:
        pytest.skip(built.skip)
    if built.fail:
        pytest.fail(built.fail, pytrace=False)
    return list(built.argv)


@dataclass
class ClientRun:
    """One finished client command."""

    language: str
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def lines(self) -> list[Any]:
        """stdout as JSON lines."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def describe(self) -> str:
        return (
            f"{self.language} client {self.argv[-8:]!r} (exit {self.returncode}, {self.seconds:.1f}s)\n"
            f"stdout:\n{self.stdout[-4000:]}\nstderr:\n{self.stderr[-4000:]}"
        )


async def _spawn(argv: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        env=dict(os.environ),
    )


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def run(language: str, argv: list[str], *, timeout: float = RUN_TIMEOUT_S) -> ClientRun:
    """Run a client command to its end (own process group; killed if it outlives ``timeout``)."""
    started = time.monotonic()
    proc = await _spawn(argv)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        raise AssertionError(f"the {language} client did not exit within {timeout}s: {argv!r}") from None
    finally:
        await _kill(proc)
    assert proc.returncode is not None
    return ClientRun(
        language,
        argv,
        proc.returncode,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        time.monotonic() - started,
    )


class RunningClient:
    """A client command running in the background (``subscribe``): its first stdout line can be awaited while
    it runs, and :meth:`finish` collects the rest once it exits."""

    def __init__(self, language: str, argv: list[str], proc: asyncio.subprocess.Process) -> None:
        self.language = language
        self.argv = argv
        self._proc = proc
        self._first = b""
        self._started = time.monotonic()

    async def first_line(self, timeout: float = RUN_TIMEOUT_S) -> Any:
        """The first stdout line, as JSON (an AssertionError if none comes within ``timeout``)."""
        assert self._proc.stdout is not None
        try:
            self._first = await asyncio.wait_for(self._proc.stdout.readline(), timeout)
        except TimeoutError:
            raise AssertionError(f"the {self.language} client printed nothing within {timeout}s") from None
        if not self._first:
            raise AssertionError(f"the {self.language} client ended without a line: {(await self.finish()).describe()}")
        return json.loads(self._first)

    async def finish(self, timeout: float = RUN_TIMEOUT_S) -> ClientRun:
        """Wait for the command to exit: its whole stdout (the first line included)."""
        try:
            out, err = await asyncio.wait_for(self._proc.communicate(), timeout)
        except TimeoutError:
            await _kill(self._proc)
            raise AssertionError(f"the {self.language} client did not exit within {timeout}s: {self.argv!r}") from None
        assert self._proc.returncode is not None
        return ClientRun(
            self.language,
            self.argv,
            self._proc.returncode,
            (self._first + out).decode(errors="replace"),
            err.decode(errors="replace"),
            time.monotonic() - self._started,
        )


@contextlib.asynccontextmanager
async def background(language: str, argv: list[str]) -> AsyncIterator[RunningClient]:
    """Start a client command; it is killed on the way out if it is still running."""
    proc = await _spawn(argv)
    try:
        yield RunningClient(language, argv, proc)
    finally:
        await _kill(proc)
