"""The conformance driver's machinery: launchers, agent processes, and a raw-gRPC view of the mesh.

Scenarios (``test_conformance.py``) run once per language of :data:`LANGUAGES`. Each language's
conformance agent (tests/conformance/CONTRACT.md) is built once per session by its launcher
(``launchers/<language>.py``) and started as a subprocess per scenario; the driver talks to the
control plane with the generated Python stubs only, so nothing here depends on any SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, cast

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from meshplane.v1 import (
    agent_pb2,
    agent_service_pb2,
    agent_service_pb2_grpc,
    channel_pb2,
    channel_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
)
from tests.support.eventually import eventually
from tests.support.link_agent import json_payload, payload_value
from tests.support.toolchain import toolchain_missing

LANGUAGES = ("python", "go", "typescript")
CAPABILITIES = frozenset(  # what every conformance agent registers (CONTRACT.md, "Capabilities")
    {
        "conf.echo",
        "conf.progress",
        "conf.flaky",
        "conf.fatal",
        "conf.sleep",
        "conf.sleep_first",
        "conf.await_cancel",
        "conf.concurrency",
        "conf.publish",
        "conf.publish_large",
        "conf.publish_nested",
        "conf.output_large",
        "conf.state_cas",
        "conf.whoami",
    }
)

READY_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 30.0
TERMINAL_STATES = frozenset(
    {
        task_pb2.TASK_STATE_SUCCEEDED,
        task_pb2.TASK_STATE_FAILED,
        task_pb2.TASK_STATE_CANCELLED,
        task_pb2.TASK_STATE_TIMED_OUT,
        task_pb2.TASK_STATE_DEAD_LETTER,
    }
)


# ---------------------------------------------------------------------------- launchers


class Launcher(Protocol):
    LANGUAGE: str

    def build(self) -> None: ...

    def command(
        self, target: str, name: str, instance_id: str, max_concurrency: int, token: str | None = None
    ) -> list[str]: ...


@dataclass
class _Prepared:
    launcher: Launcher | None = None
    missing: str = ""  # no launcher module: skipped locally, failed under CI
    skip: str = ""  # build() skipped (e.g. require_tool outside CI)
    fail: str = ""  # build() failed (or require_tool under CI)
    seconds: float = 0.0


_prepared: dict[str, _Prepared] = {}


def prepare(language: str) -> _Prepared:
    """Import and build a language's launcher, once per session (the outcome is remembered)."""
    if language in _prepared:
        return _prepared[language]
    prepared = _Prepared()
    _prepared[language] = prepared
    module_name = f"tests.conformance.launchers.{language}"
    try:
        module: ModuleType = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        prepared.missing = f"no conformance agent for {language} yet (tests/conformance/launchers/{language}.py)"
        return prepared
    started = time.monotonic()
    try:
        module.build()
    except pytest.skip.Exception as exc:
        prepared.skip = str(exc.msg)
    except pytest.fail.Exception as exc:
        prepared.fail = str(exc.msg)
    except Exception as exc:
        prepared.fail = f"building the {language} conformance agent failed: {exc}"
    else:
        prepared.launcher = cast(Launcher, module)
    prepared.seconds = time.monotonic() - started
    return prepared


def launcher(language: str) -> Launcher:
    """The built launcher of ``language``, or skip/fail the calling test as its preparation did."""
    __tracebackhide__ = True
    prepared = prepare(language)
    if prepared.missing:
        toolchain_missing(prepared.missing)
    if prepared.skip:
        pytest.skip(prepared.skip)
    if prepared.fail:
        pytest.fail(prepared.fail, pytrace=False)
    assert prepared.launcher is not None
    return prepared.launcher


# ---------------------------------------------------------------------------- agent processes


class AgentProcess:
    """One conformance agent subprocess (own process group; killed by :meth:`kill`).

    It inherits the test's environment, with ``env`` (if given) set on top.
    """

    def __init__(
        self,
        language: str,
        argv: list[str],
        name: str,
        instance_id: str,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.language = language
        self.argv = argv
        self.name = name
        self.instance_id = instance_id
        self.env = dict(env or {})
        self.stdout_lines: list[str] = []
        self.stderr_path = _stderr_path(log_dir, instance_id)
        self.proc: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with self.stderr_path.open("wb") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
                env={**os.environ, **self.env},
            )
        self._reader = asyncio.ensure_future(self._read_stdout())

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace").rstrip("\r\n")
            self.stdout_lines.append(text)
            if text.startswith("READY"):
                self._ready.set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def stderr_tail(self, limit: int = 6000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def describe(self) -> str:
        return (
            f"{self.language} agent {self.name}/{self.instance_id} (exit {self.returncode}); "
            f"stdout: {self.stdout_lines!r}\nstderr (tail):\n{self.stderr_tail()}"
        )

    async def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        assert self.proc is not None
        exited = asyncio.ensure_future(self.proc.wait())
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({exited, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            ready.cancel()
        if not self._ready.is_set():
            raise AssertionError(f"no READY line within {timeout}s: {self.describe()}")
        ready_lines = [line for line in self.stdout_lines if line.startswith("READY")]
        assert ready_lines == [f"READY {self.instance_id}"], f"bad READY line(s): {self.describe()}"

    def terminate(self) -> None:
        """SIGTERM to the agent process itself (a graceful shutdown)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float = EXIT_TIMEOUT_S) -> int:
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"the agent did not exit within {timeout}s: {self.describe()}") from None
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader, 5)
        return code

    async def stop(self, grace: float = 5.0) -> None:
        """End the agent: SIGTERM (it leaves its session cleanly), SIGKILL if it is still there after ``grace``."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), grace)
        await self.kill()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


def _stderr_path(log_dir: Path, instance_id: str) -> Path:
    """A file of its own for an agent's stderr: two agents may be given one instance id (test_instance_id.py)."""
    path = log_dir / f"{instance_id}.stderr"
    copy = 1
    while path.exists():
        copy += 1
        path = log_dir / f"{instance_id}-{copy}.stderr"
    return path


class Agents:
    """Starts conformance agents of one language for one test; kills them all at the end."""

    def __init__(self, launcher: Launcher, language: str, log_dir: Path) -> None:
        self.launcher = launcher
        self.language = language
        self.log_dir = log_dir
        self.started: list[AgentProcess] = []

    async def start(
        self,
        target: str,
        *,
        max_concurrency: int = 4,
        name: str | None = None,
        instance_id: str | None = None,
        token: str | None = None,
        env: Mapping[str, str] | None = None,
        flags: Sequence[str] = (),
        wait_ready: bool = True,
    ) -> AgentProcess:
        """Launch an agent (``env``: variables set on top of the test's environment; ``flags``: the contract's
        optional flags, e.g. ``["--drain-timeout", "1"]``) and, unless ``wait_ready`` is false, wait for its READY
        line."""
        name = name or f"conf-{self.language}-{uuid.uuid4().hex[:8]}"
        instance_id = instance_id or f"{name}-i{len(self.started) + 1}"
        argv = [*self.launcher.command(target, name, instance_id, max_concurrency, token), *flags]
        agent = AgentProcess(self.language, argv, name, instance_id, self.log_dir, env)
        self.started.append(agent)
        await agent.start()
        if wait_ready:
            await agent.wait_ready()
        return agent

    async def close(self) -> None:
        """Stop every agent still running (idempotent).

        Gracefully, so that the plane ends each session itself: an agent that vanishes abruptly can
        leave the plane's session clean-up half done (see Mesh.wait_all_disconnected).
        """
        await asyncio.gather(*(agent.stop() for agent in self.started))

    def report(self) -> str:
        return "\n\n".join(agent.describe() for agent in self.started)


# ---------------------------------------------------------------------------- the mesh, over raw gRPC


@dataclass
class Subscription:
    """Messages received on a channel (ChannelService.Subscribe) while it is open."""

    channel: str
    messages: list[channel_pb2.ChannelMessage] = field(default_factory=list)

    def values(self) -> list[Any]:
        return [payload_value(m.payload) for m in self.messages]


class Mesh:
    """A client of one control plane through the generated stubs.

    Plaintext, or TLS with ``credentials`` (e.g. :func:`tls_credentials`) for a plane that serves TLS.
    """

    def __init__(self, address: str, *, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.address = address
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(address)
        else:
            self.channel = grpc.aio.secure_channel(address, credentials)
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self.channel)
        self.agents = agent_service_pb2_grpc.AgentServiceStub(self.channel)
        self.channels = channel_pb2_grpc.ChannelServiceStub(self.channel)
        self.state = state_pb2_grpc.StateServiceStub(self.channel)

    async def __aenter__(self) -> Mesh:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    # -- tasks

    async def submit(self, capability: str, data: Any, *, max_attempts: int = 0, **fields: Any) -> task_pb2.Task:
        request = task_service_pb2.SubmitTaskRequest(
            target=task_pb2.TaskTarget(capability=capability), input=json_payload(data), **fields
        )
        if max_attempts:
            request.retry_policy.max_attempts = max_attempts
        return (await self.tasks.SubmitTask(request)).task

    async def get(self, task_id: str) -> task_pb2.Task:
        return (await self.tasks.GetTask(task_service_pb2.GetTaskRequest(task_id=task_id))).task

    async def events(self, task_id: str, *, timeout: float = 30.0) -> list[task_pb2.TaskEvent]:
        """A task's whole history, following it live until its terminal event."""

        async def collect() -> list[task_pb2.TaskEvent]:
            events: list[task_pb2.TaskEvent] = []
            call = self.tasks.WatchTask(task_service_pb2.WatchTaskRequest(task_id=task_id))
            async for response in call:
                events.append(response.event)
                if response.event.state in TERMINAL_STATES:
                    call.cancel()
                    break
            return events

        try:
            return await asyncio.wait_for(collect(), timeout)
        except TimeoutError:
            task = await self.get(task_id)
            raise AssertionError(
                f"task {task_id} did not end within {timeout}s; it is {task_pb2.TaskState.Name(task.state)}"
            ) from None

    async def wait_terminal(self, task_id: str, *, timeout: float = 30.0) -> task_pb2.Task:
        await self.events(task_id, timeout=timeout)
        return await self.get(task_id)

    async def run(self, capability: str, data: Any, *, timeout: float = 30.0, **fields: Any) -> task_pb2.Task:
        task = await self.submit(capability, data, **fields)
        return await self.wait_terminal(task.id, timeout=timeout)

    async def state_of(self, task_id: str) -> int:
        return (await self.get(task_id)).state

    async def cancel(self, task_id: str, reason: str = "conformance test") -> task_pb2.Task:
        request = task_service_pb2.CancelTaskRequest(task_id=task_id, reason=reason)
        return (await self.tasks.CancelTask(request)).task

    # -- agents

    async def instance(self, agent_name: str, instance_id: str) -> agent_pb2.AgentInstance | None:
        request = agent_service_pb2.ListAgentInstancesRequest(agent_name=agent_name, include_disconnected=True)
        response = await self.agents.ListAgentInstances(request)
        return next((i for i in response.instances if i.instance_id == instance_id), None)

    async def wait_all_disconnected(self, timeout: float = 5.0) -> None:
        """Wait until the plane has recorded every agent session as ended (best effort).

        Stopping a control plane while it is still cleaning up after a session that just ended can
        leave that session's ``Connect`` handler task pending forever, which hangs the event loop's
        shutdown; so scenarios stop their agents, wait for this, and only then stop the plane.
        (When a client vanishes abruptly, gRPC cancels the handler in the middle of that clean-up and
        the instance may stay CONNECTED for good: hence "best effort".)
        """

        async def all_disconnected() -> bool:
            request = agent_service_pb2.ListAgentInstancesRequest(
                agent_name="-", include_disconnected=True, page_size=1000
            )
            response = await self.agents.ListAgentInstances(request)
            return all(i.status == agent_pb2.AGENT_INSTANCE_STATUS_DISCONNECTED for i in response.instances)

        with contextlib.suppress(AssertionError):
            await eventually(all_disconnected, timeout=timeout, interval=0.05)

    async def drain(self, agent_name: str, instance_id: str, *, timeout: float, reason: str = "conformance") -> None:
        request = agent_service_pb2.DrainAgentInstanceRequest(
            agent_name=agent_name, instance_id=instance_id, reason=reason, timeout=Duration(seconds=int(timeout))
        )
        await self.agents.DrainAgentInstance(request)

    # -- channels and state

    async def publish(self, channel: str, data: Any) -> None:
        await self.channels.Publish(channel_pb2.PublishRequest(channel=channel, payload=json_payload(data)))

    @contextlib.asynccontextmanager
    async def subscription(self, channel: str) -> AsyncIterator[Subscription]:
        """Subscribe (live once the stream confirmed it), collect messages in the background."""
        subscription = Subscription(channel)
        call = self.channels.Subscribe(channel_pb2.SubscribeRequest(channel=channel))
        started = asyncio.Event()

        async def read() -> None:
            async for response in call:
                if response.WhichOneof("event") == "started":
                    started.set()
                else:
                    subscription.messages.append(response.message)

        reader = asyncio.ensure_future(read())
        try:
            waiter = asyncio.ensure_future(started.wait())
            await asyncio.wait({reader, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if reader.done():
                reader.result()  # raises what ended the stream
            assert started.is_set(), f"subscription to {channel} not confirmed within 10s"
            yield subscription
        finally:
            call.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader

    async def get_state(self, namespace: str, key: str) -> state_pb2.StateEntry:
        return (await self.state.GetState(state_pb2.GetStateRequest(namespace=namespace, key=key))).entry


def tls_credentials(
    ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """Channel credentials for :class:`Mesh`: trust ``ca_file``; show ``cert_file``/``key_file`` if given (mTLS)."""
    key = key_file.read_bytes() if key_file is not None else None
    chain = cert_file.read_bytes() if cert_file is not None else None
    return grpc.ssl_channel_credentials(ca_file.read_bytes(), key, chain)


def output(task: task_pb2.Task) -> Any:
    """A task's output as a Python value."""
    return payload_value(task.output)


def state_name(state: int) -> str:
    return task_pb2.TaskState.Name(state)


def describe(task: task_pb2.Task) -> str:
    """A task, briefly, for assertion messages."""
    attempts = [
        (
            a.attempt,
            task_pb2.AttemptOutcome.Name(a.outcome),
            a.error.code,
            a.error.message,
        )
        for a in task.attempts
    ]
    out = json.dumps(output(task)) if task.HasField("output") else "-"
    return (
        f"task {task.id} {state_name(task.state)} attempt {task.attempt} error "
        f"{task.error.code!r}:{task.error.message!r} output {out} attempts {attempts}"
    )
