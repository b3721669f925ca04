"""The contracts work from three languages: Python, TypeScript (Node) and Go.

A small scripted ``AgentLinkService`` servicer (test scaffolding, not the control plane) runs on
grpc.aio on an ephemeral port. For each language a real client program — built from the code
committed under ``generated/`` — connects and plays one agent session:

    client                                   servicer (checks every frame it receives)
    register {name, instance, capabilities,
              max_concurrency, sdk, pid}  ─▶
                                          ◀─ registered {session_id, heartbeat_interval, ...}
    heartbeat {load, memory_bytes}        ─▶
                                          ◀─ assignments [{task_id, attempt=2, input=JSON bytes}]
    task_results [{task_id, attempt,
                   output=JSON bytes}]    ─▶
                                          ◀─ result_acks [{task_id, attempt}]
    half-close                            ─▶
                                          ◀─ status OK

The task output echoes the decoded input plus the values the client received (session id,
heartbeat interval, an int64 above 2**32, trace parent, metadata), so a decoding slip in any
language shows up as a mismatch. The servicer rejects a bad frame with a fatal ``error`` frame and
INVALID_ARGUMENT; the clients exit non-zero on any surprise and the test shows their stderr.

Clients: ``python/client.py``, ``node/client.ts`` (compiled with the repo's ``tsc`` into a
temporary directory) and ``go/main.go`` (its own module; ``go build`` into a temporary directory).
A missing Node or Go toolchain skips that case — or fails it under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from meshplane.v1 import agent_link_pb2, agent_link_pb2_grpc, common_pb2
from tests.support.toolchain import require_tool, toolchain_missing

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

CAPABILITY = "interop.echo"
INPUT_SCHEMA = {"type": "object", "required": ["text"]}
MAX_CONCURRENCY = 4
ATTEMPT = 2  # not 1, so a client that hard-codes the first attempt is caught
HEARTBEAT_INTERVAL_S = 5
MAX_PAYLOAD_BYTES = 8 * 1024**3  # above 2**32: checks int64 handling in every language
HEARTBEAT_MEMORY_BYTES = 5_000_000_000  # what every client reports, also above 2**32
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

CLIENT_TIMEOUT_S = 60.0
BUILD_TIMEOUT_S = 240.0


# ---------------------------------------------------------------------------- the servicer


class Reject(Exception):
    """A frame broke the script; the servicer answers with a fatal error frame."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass
class Exchange:
    """What the servicer saw and sent during the one expected session."""

    language: str
    stage: str = "waiting for a connection"
    connections: int = 0
    register: agent_link_pb2.Register | None = None
    registered: agent_link_pb2.Registered | None = None
    heartbeat: agent_link_pb2.Heartbeat | None = None
    assignment: agent_link_pb2.Assignment | None = None
    task_input: dict[str, Any] = field(default_factory=dict)
    result: agent_link_pb2.TaskResult | None = None
    output: Any = None
    completed: bool = False
    problems: list[str] = field(default_factory=list)

    def expected_output(self) -> dict[str, Any]:
        assert self.registered is not None and self.assignment is not None
        return {
            "echo": self.task_input,
            "language": self.language,
            "session_id": self.registered.session_id,
            "heartbeat_interval_seconds": HEARTBEAT_INTERVAL_S,
            "max_payload_bytes": MAX_PAYLOAD_BYTES,
            "traceparent": self.assignment.traceparent,
            "metadata": dict(self.assignment.metadata),
        }


def register_problems(reg: agent_link_pb2.Register, language: str) -> list[tuple[str, str]]:
    """(field, problem) pairs for a register frame that does not follow the script."""
    problems: list[tuple[str, str]] = []

    def check(ok: bool, field_name: str, message: str) -> None:
        if not ok:
            problems.append((f"register.{field_name}", message))

    check(
        reg.agent_name == f"interop-{language}" and bool(NAME_RE.match(reg.agent_name)),
        "agent_name",
        f"expected 'interop-{language}', got {reg.agent_name!r}",
    )
    check(bool(reg.agent_version), "agent_version", "is empty")
    check(
        bool(NAME_RE.match(reg.instance_id)) and reg.instance_id.startswith(f"{language}-"),
        "instance_id",
        f"expected '{language}-<unique id>' of [A-Za-z0-9._-], got {reg.instance_id!r}",
    )
    names = [c.name for c in reg.capabilities]
    check(names == [CAPABILITY], "capabilities", f"expected [{CAPABILITY!r}], got {names}")
    if names == [CAPABILITY]:
        schema = json_format.MessageToDict(reg.capabilities[0].input_schema)
        check(schema == INPUT_SCHEMA, "capabilities[0].input_schema", f"expected {INPUT_SCHEMA}, got {schema}")
    check(dict(reg.labels) == {"language": language}, "labels", f"got {dict(reg.labels)}")
    check(reg.max_concurrency == MAX_CONCURRENCY, "max_concurrency", f"got {reg.max_concurrency}")
    check(reg.sdk.language == language, "sdk.language", f"expected {language!r}, got {reg.sdk.language!r}")
    check(bool(reg.sdk.version), "sdk.version", "is empty")
    check(not reg.held_tasks, "held_tasks", "a fresh agent holds no tasks")
    check(reg.pid > 0, "pid", f"got {reg.pid}")
    return problems


class ScriptedAgentLink(agent_link_pb2_grpc.AgentLinkServiceServicer):
    """Plays the control plane's side of one scripted agent session and records it."""

    def __init__(self, language: str) -> None:
        self.exchange = Exchange(language=language)

    async def Connect(
        self,
        request_iterator: AsyncIterator[agent_link_pb2.ConnectRequest],
        context: grpc.aio.ServicerContext[agent_link_pb2.ConnectRequest, agent_link_pb2.ConnectResponse],
    ) -> AsyncIterator[agent_link_pb2.ConnectResponse]:
        ex = self.exchange
        ex.connections += 1
        try:
            if ex.connections > 1:
                raise Reject("only one session is expected in this test")
            async for response in self._script(aiter(request_iterator)):
                yield response
        except Reject as exc:
            ex.problems.append(f"{ex.stage}: {exc.message}" + (f" ({exc.field})" if exc.field else ""))
            yield agent_link_pb2.ConnectResponse(
                error=agent_link_pb2.LinkError(code=3, message=exc.message, field=exc.field, fatal=True)
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)

    async def _expect(
        self, frames: AsyncIterator[agent_link_pb2.ConnectRequest], case: str
    ) -> agent_link_pb2.ConnectRequest:
        self.exchange.stage = f"waiting for {case}"
        frame = await anext(frames, None)
        if frame is None:
            raise Reject(f"the agent closed its side before sending {case}")
        got = frame.WhichOneof("frame")
        if got != case:
            raise Reject(f"expected a {case} frame, got {got}")
        self.exchange.stage = f"checking {case}"
        return frame

    async def _script(
        self, frames: AsyncIterator[agent_link_pb2.ConnectRequest]
    ) -> AsyncIterator[agent_link_pb2.ConnectResponse]:
        ex = self.exchange

        reg = (await self._expect(frames, "register")).register
        ex.register = reg
        problems = register_problems(reg, ex.language)
        if problems:
            raise Reject("; ".join(f"{f}: {m}" for f, m in problems), problems[0][0])
        ex.registered = agent_link_pb2.Registered(
            session_id=f"session-{uuid.uuid4().hex}",
            heartbeat_interval=Duration(seconds=HEARTBEAT_INTERVAL_S),
            lease_timeout=Duration(seconds=3 * HEARTBEAT_INTERVAL_S),
            replica_id="interop-servicer",
            max_payload_bytes=MAX_PAYLOAD_BYTES,
        )
        yield agent_link_pb2.ConnectResponse(registered=ex.registered)

        hb = (await self._expect(frames, "heartbeat")).heartbeat
        ex.heartbeat = hb
        if (hb.in_flight, hb.load, hb.memory_bytes) != (0, 0.25, HEARTBEAT_MEMORY_BYTES):
            raise Reject(f"heartbeat values are off: {json_format.MessageToDict(hb)}", "heartbeat")

        # Non-ASCII text (a 4-byte emoji too), floats, booleans, null and nesting: the JSON must
        # come through every client's bytes → JSON → bytes round trip unchanged.
        ex.task_input = {
            "text": "héllo wörld ✓ 😀",
            "n": 42,
            "ratio": 2.5,
            "flags": [True, False, None],
            "nested": {"list": [1, "two", {"three": 3}]},
            "nonce": uuid.uuid4().hex,
        }
        deadline = Timestamp()
        deadline.FromDatetime(datetime.now(UTC) + timedelta(minutes=1))
        ex.assignment = agent_link_pb2.Assignment(
            task_id=f"task-{uuid.uuid4().hex}",
            attempt=ATTEMPT,
            capability=CAPABILITY,
            input=common_pb2.Payload(
                data=json.dumps(ex.task_input, ensure_ascii=False).encode(), content_type="application/json"
            ),
            priority=7,
            correlation_id=f"corr-{ex.language}",
            metadata={"origin": "interop-test", "language": ex.language},
            deadline=deadline,
            heartbeat_timeout=Duration(seconds=10),
            max_attempts=3,
            traceparent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
        )
        yield agent_link_pb2.ConnectResponse(assignments=agent_link_pb2.Assignments(assignments=[ex.assignment]))

        results = (await self._expect(frames, "task_results")).task_results.results
        if len(results) != 1:
            raise Reject(f"expected one result, got {len(results)}", "task_results.results")
        result = ex.result = results[0]
        if (result.task_id, result.attempt) != (ex.assignment.task_id, ex.assignment.attempt):
            raise Reject(
                f"result for ({result.task_id!r}, {result.attempt}) does not echo the assignment "
                f"({ex.assignment.task_id!r}, {ex.assignment.attempt})",
                "task_results.results[0].task_id",
            )
        if result.WhichOneof("outcome") != "output":
            raise Reject(f"expected an output, got {json_format.MessageToDict(result)}", "task_results.results[0]")
        out = result.output
        if out.WhichOneof("kind") != "data" or out.content_type != "application/json":
            raise Reject("output must be JSON bytes with content_type application/json", "task_results.results[0]")
        try:
            ex.output = json.loads(out.data)
        except ValueError as exc:
            raise Reject(f"output is not JSON: {exc}", "task_results.results[0].output.data") from exc
        expected = ex.expected_output()
        if ex.output != expected:
            got = ex.output if isinstance(ex.output, dict) else {}
            diff = {
                k: {"got": got.get(k), "want": expected.get(k)}
                for k in {*got, *expected}
                if got.get(k) != expected.get(k)
            }
            raise Reject(f"output does not echo what was sent: {diff or ex.output!r}", "task_results.results[0].output")
        yield agent_link_pb2.ConnectResponse(
            result_acks=agent_link_pb2.ResultAcks(
                tasks=[agent_link_pb2.TaskRef(task_id=result.task_id, attempt=result.attempt)]
            )
        )

        ex.stage = "waiting for the agent to close its side"
        extra = await anext(frames, None)
        if extra is not None:
            raise Reject(f"expected the agent to half-close, got a {extra.WhichOneof('frame')} frame")
        ex.stage = "done"
        ex.completed = True


# ---------------------------------------------------------------------------- processes


async def kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill a child started with start_new_session=True, with everything it spawned."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def run_build(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    """Run a build step; fail the test with its output if it fails or hangs."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), BUILD_TIMEOUT_S)
    except TimeoutError:
        pytest.fail(f"{what} did not finish within {BUILD_TIMEOUT_S}s: {' '.join(argv)}", pytrace=False)
    finally:
        await kill_group(proc)
    if proc.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{output.decode(errors='replace')}",
            pytrace=False,
        )


@dataclass(frozen=True)
class ClientProgram:
    argv: list[str]
    env: dict[str, str]


async def python_client(tmp: Path) -> ClientProgram:
    env = dict(os.environ)
    # Test the committed generated code itself, whatever else is installed.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "generated" / "python"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return ClientProgram([sys.executable, str(HERE / "python" / "client.py")], env)


async def typescript_client(tmp: Path) -> ClientProgram:
    node = require_tool("node", "the TypeScript interop client runs on Node.js (install Node.js >= 18)")
    tsc = ROOT / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        toolchain_missing(f"{tsc.relative_to(ROOT)} not found: run `make node` (npm install at the repo root)")
    out = tmp / "node-build"
    env = dict(os.environ)
    await run_build(
        [node, str(tsc), "-p", str(HERE / "node" / "tsconfig.json"), "--outDir", str(out)],
        ROOT,
        env,
        "compiling the TypeScript client",
    )
    # The build lives outside the repo, so point Node at the repo root's node_modules.
    env["NODE_PATH"] = str(ROOT / "node_modules")
    return ClientProgram([node, str(out / "tests" / "interop" / "node" / "client.js")], env)


async def go_client(tmp: Path) -> ClientProgram:
    go = require_tool("go", "the Go interop client is built with the Go toolchain (install Go >= 1.26)")
    binary = tmp / "go-client"
    env = dict(os.environ)
    env["GOFLAGS"] = f"{env.get('GOFLAGS', '')} -buildvcs=false".strip()
    env["GOWORK"] = "off"
    await run_build([go, "build", "-o", str(binary), "."], HERE / "go", env, "building the Go client")
    return ClientProgram([str(binary)], env)


CLIENTS: dict[str, Callable[[Path], Awaitable[ClientProgram]]] = {
    "python": python_client,
    "typescript": typescript_client,
    "go": go_client,
}


@dataclass(frozen=True)
class ClientRun:
    pid: int
    returncode: int | None  # None: killed after CLIENT_TIMEOUT_S
    stdout: str
    stderr: str


async def run_client(program: ClientProgram, address: str, tmp: Path) -> ClientRun:
    """Run a client to completion (or kill it after CLIENT_TIMEOUT_S), capturing its output in files."""
    out_path, err_path = tmp / "client.stdout", tmp / "client.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *program.argv,
            address,
            env=program.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        returncode: int | None
        try:
            returncode = await asyncio.wait_for(proc.wait(), CLIENT_TIMEOUT_S)
        except TimeoutError:
            returncode = None
        finally:
            await kill_group(proc)
    return ClientRun(
        proc.pid,
        returncode,
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
    )


# ---------------------------------------------------------------------------- the test


LANGUAGES = [
    pytest.param("python", id="python"),
    pytest.param("typescript", id="typescript", marks=pytest.mark.timeout(300)),
    pytest.param("go", id="go", marks=pytest.mark.timeout(300)),
]


@pytest.mark.parametrize("language", LANGUAGES)
async def test_agent_link_exchange(language: str, tmp_path: Path) -> None:
    program = await CLIENTS[language](tmp_path)

    servicer = ScriptedAgentLink(language)
    server = grpc.aio.server()
    agent_link_pb2_grpc.add_AgentLinkServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        run = await run_client(program, f"127.0.0.1:{port}", tmp_path)
    finally:
        await server.stop(grace=None)

    ex = servicer.exchange
    if run.returncode != 0 or ex.problems or not ex.completed:
        exit_text = f"killed after {CLIENT_TIMEOUT_S}s" if run.returncode is None else f"exit {run.returncode}"
        pytest.fail(
            f"{language} exchange failed: client {exit_text}; servicer stage: {ex.stage}; "
            f"servicer problems: {ex.problems or 'none'}\n"
            f"--- client stderr ---\n{run.stderr}--- client stdout ---\n{run.stdout}",
            pytrace=False,
        )

    assert ex.connections == 1
    assert ex.register is not None and ex.assignment is not None and ex.result is not None
    assert ex.register.agent_name == f"interop-{language}"
    assert ex.register.sdk.language == language
    assert ex.register.pid == run.pid
    assert ex.register.max_concurrency == MAX_CONCURRENCY
    assert [c.name for c in ex.register.capabilities] == [CAPABILITY]
    assert (ex.result.task_id, ex.result.attempt) == (ex.assignment.task_id, ATTEMPT)
    assert ex.output["echo"] == ex.task_input
    assert ex.output == ex.expected_output()
    assert f"{language} client: ok" in run.stdout
