"""Property-based API fuzzing: schemathesis, driven by the gateway's own /openapi.json, against a real mesh.

Every unary operation gets generated requests, valid and invalid (the coverage, fuzzing and stateful
phases). The checks: no 5xx, and every response conforms to the spec (status code, content type,
headers, body schema), plus 405 with a correct Allow header for methods a path does not have.

Bounded and reproducible: a fixed number of examples per operation, deterministic generation (no random
seed, no example database carried between runs), one worker, and a hard time limit. The streaming
operations (`:watch`, `:subscribe`) are left out: they hold the connection open until the task ends or the
client leaves, which a request/response fuzzer cannot judge; tests/gateway/test_rest_e2e.py covers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from agent_runtime import Agent, NonRetryableError, TaskContext
from tests.gateway.rest_mesh import Mesh, running_mesh
from tests.support.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]

# CI's budget. A deeper local run, random but seeded: MESHPLANE_FUZZ_MAX_EXAMPLES=300 MESHPLANE_FUZZ_SEED=7
# MESHPLANE_FUZZ_HARD_LIMIT=900 .venv/bin/pytest tests/gateway/test_rest_fuzz.py
MAX_EXAMPLES = int(os.environ.get("MESHPLANE_FUZZ_MAX_EXAMPLES", "20"))
SEED = os.environ.get("MESHPLANE_FUZZ_SEED", "")
HARD_LIMIT_SECONDS = float(os.environ.get("MESHPLANE_FUZZ_HARD_LIMIT", "240"))
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "unsupported_method",
    "allow_header_conformance",
]
STREAMING = r":(watch|subscribe)$"


class Order(BaseModel):
    item: str
    quantity: int = Field(ge=1, le=100)


class Refused(NonRetryableError):
    """A task failing for good, so listed tasks carry an error."""


def fuzz_agent() -> Agent:
    agent = Agent("fuzz", version="1.0.0", max_concurrency=8, labels={"suite": "fuzz"}, description="fuzz target")

    @agent.task("fuzz.echo", description="returns its input")
    async def echo(ctx: TaskContext, data: Any) -> Any:
        await ctx.progress(0.5, "half way")
        return data

    @agent.task("fuzz.order")
    async def order(ctx: TaskContext, data: Order) -> dict[str, Any]:
        """Typed input: its JSON Schema is registered with the capability."""
        return {"total": data.quantity * 2}

    @agent.task("fuzz.fail")
    async def fail(ctx: TaskContext, data: Any) -> None:
        raise Refused("no, never", details={"why": "by design"})

    @agent.task("fuzz.block")
    async def block(ctx: TaskContext, data: Any) -> None:
        await ctx.cancelled.wait()

    return agent


async def seed(mesh: Mesh) -> None:
    """Data in every resource, with optional fields set, so that responses have something to conform."""
    http = mesh.http

    async def submit(capability: str, value: Any, **fields: Any) -> str:
        body = {"target": {"capability": capability}, "input": {"json": value}, **fields}
        response = await http.post("/v1/tasks", json=body)
        assert response.status_code == 200, response.text
        task_id: str = response.json()["task"]["id"]
        return task_id

    async def state_in(task_id: str, *states: str) -> bool:
        return (await http.get(f"/v1/tasks/{task_id}")).json()["task"]["state"] in states

    done = [
        await submit("fuzz.echo", {"text": "hi"}, correlationId="c-1", metadata={"k": "v"}, idempotencyKey="k-1"),
        await submit("fuzz.order", {"item": "tea", "quantity": 2}, priority=5),
        await submit("fuzz.order", {"item": "tea", "quantity": 0}),  # fails input validation
        await submit("fuzz.fail", None, retryPolicy={"maxAttempts": 1}),
    ]
    ended = ("TASK_STATE_SUCCEEDED", "TASK_STATE_FAILED", "TASK_STATE_DEAD_LETTER")
    for task_id in done:
        await eventually(lambda t=task_id: state_in(t, *ended), timeout=15)
    cancelled = await submit("fuzz.block", {})
    await eventually(lambda: state_in(cancelled, "TASK_STATE_RUNNING"), timeout=15)
    assert (await http.post(f"/v1/tasks/{cancelled}:cancel", json={"reason": "seed"})).status_code == 200
    await submit("fuzz.nobody", {"queued": True})  # no agent has it: stays QUEUED
    await submit("fuzz.block", {})  # stays RUNNING
    for key, body in [
        ("plain", {"value": {"json": {"n": 1}}}),
        ("ttl", {"value": {"json": [1, 2]}, "ttl": "3600s"}),
        ("bytes", {"value": {"data": "aGVsbG8=", "contentType": "text/plain"}}),
    ]:
        assert (await http.put(f"/v1/namespaces/fuzz/states/{key}", json=body)).status_code == 200
    published = await http.post("/v1/channels/fuzz-news:publish", json={"payload": {"json": "hello"}})
    assert published.status_code == 200


def unary_operations() -> int:
    """How many operations the spec has, streaming ones left out."""
    spec = json.loads((ROOT / "generated/openapi/meshplane.swagger.json").read_text())
    return sum(len(ops) for path, ops in spec["paths"].items() if not re.search(STREAMING, path))


async def run_schemathesis(*args: str, cwd: Path, output: Path, limit: float) -> int:
    """The schemathesis CLI with its output in ``output``; killed (a test failure) past ``limit`` seconds."""
    with output.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schemathesis.cli",
            *args,
            cwd=cwd,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "NO_COLOR": "1", "COLUMNS": "120"},
        )
        try:
            return await asyncio.wait_for(process.wait(), limit)
        except TimeoutError:
            tail = output.read_text(errors="replace")[-10000:]
            pytest.fail(f"schemathesis ran over its hard limit of {limit:g}s; its output so far:\n{tail}")
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


@pytest.mark.timeout(HARD_LIMIT_SECONDS + 60)
async def test_schemathesis_finds_no_server_error_and_no_response_off_the_spec(
    gateway_binary: Path, tmp_path: Path
) -> None:
    async with running_mesh(gateway_binary, tmp_path, fuzz_agent()) as mesh:
        await seed(mesh)
        url = mesh.gateway.url
        args = [
            "run",
            f"{url}/openapi.json",
            "--url",
            url,
            "--exclude-path-regex",
            STREAMING,
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(MAX_EXAMPLES),
            *(["--seed", SEED] if SEED else ["--generation-deterministic"]),  # deterministic: no example database
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--continue-on-failure",
            "--no-color",
        ]
        report = tmp_path / "schemathesis.txt"
        code = await run_schemathesis(*args, cwd=tmp_path, output=report, limit=HARD_LIMIT_SECONDS)
        text = report.read_text(errors="replace")
        gateway_log = mesh.gateway.log()
    assert code == 0, f"schemathesis found problems:\n{text[-20000:]}\n--- gateway log (tail) ---\n{gateway_log}"
    # It really exercised the API: every unary operation, and every generated case passed.
    assert f"Tested: {unary_operations()}" in text, text[-5000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", text)
    assert counts and counts.group(1) == counts.group(2) and int(counts.group(1)) > 0, text[-5000:]
