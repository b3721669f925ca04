"""REST end to end: HTTP/JSON → the real gateway binary → a real control plane → an agent built with the SDK.

Everything runs on ephemeral ports: the plane in-process (SQLite + embedded NATS), the gateway as a child
process, the agent (``agent_runtime.Agent``) in-process. Requests are plain JSON over httpx.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime import Agent, ChannelContext, TaskContext
from tests.gateway.rest_mesh import Mesh, running_gateway, running_mesh
from tests.support.eventually import eventually
from tests.support.plane import running_plane

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "rest-e2e-token"

PRECONDITION_FAILURE = "type.googleapis.com/google.rpc.PreconditionFailure"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def e2e_agent(seen: dict[str, Any], *, token: str | None = None) -> Agent:
    """echo, steps (progress, then output), block (runs until cancelled), and a channel handler."""
    agent = Agent("rest-e2e", version="1.0.0", max_concurrency=8, token=token)
    seen.setdefault("channel", [])

    @agent.task("e2e.echo")
    async def echo(ctx: TaskContext, data: Any) -> Any:
        return data

    @agent.task("e2e.steps")
    async def steps(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
        count = int(data.get("steps", 3))
        for step in range(1, count + 1):
            await ctx.progress(step / count, f"step {step} of {count}")
        return {"steps": count}

    @agent.task("e2e.block")
    async def block(ctx: TaskContext, data: Any) -> dict[str, Any]:
        seen["block_started"] = ctx.task_id
        try:
            await ctx.cancelled.wait()
        finally:
            seen["block_cancelled"] = ctx.cancel_reason or "handler cancelled"
        return {"finished": True}  # too late: the task already ended CANCELLED

    @agent.on_channel("e2e-news")
    async def news(ctx: ChannelContext, data: Any) -> None:
        seen["channel"].append((ctx.message_id, data))

    return agent


@pytest.fixture
async def mesh(gateway_binary: Path, tmp_path: Path) -> AsyncIterator[Mesh]:
    seen: dict[str, Any] = {}
    async with running_mesh(gateway_binary, tmp_path, e2e_agent(seen)) as started:
        started.seen = seen
        yield started


def status_body(response: httpx.Response) -> dict[str, Any]:
    """The google.rpc.Status JSON body every error carries."""
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"code", "message", "details"}, body
    assert isinstance(body["code"], int) and body["message"] and isinstance(body["details"], list), body
    return body


def detail(body: dict[str, Any], type_url: str) -> dict[str, Any]:
    found = [d for d in body["details"] if d.get("@type") == type_url]
    assert found, f"no {type_url} in {body}"
    return found[0]


async def submit(http: httpx.AsyncClient, capability: str, value: Any, **fields: Any) -> dict[str, Any]:
    response = await http.post(
        "/v1/tasks", json={"target": {"capability": capability}, "input": {"json": value}, **fields}
    )
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()["task"]
    return task


async def task_in(http: httpx.AsyncClient, task_id: str, *states: str) -> dict[str, Any] | None:
    response = await http.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()["task"]
    return task if task["state"] in states else None


async def ndjson(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The objects of a streamed response, one JSON object per line."""
    async for line in response.aiter_lines():
        if line.strip():
            yield json.loads(line)


async def watch(http: httpx.AsyncClient, task_id: str, after: int = 0) -> list[dict[str, Any]]:
    """Every event of the watch stream, which ends after the terminal event."""
    params = {"afterSequence": str(after)} if after else None
    async with http.stream("GET", f"/v1/tasks/{task_id}:watch", params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        lines = [line async for line in ndjson(response)]
    assert all(set(line) == {"result"} for line in lines), lines
    return [line["result"]["event"] for line in lines]


@pytest.mark.timeout(60)
async def test_submit_plain_json_get_and_list_with_filter_and_paging(mesh: Mesh) -> None:
    http = mesh.http
    value = {"text": "hello", "numbers": [1, 2.5, None], "nested": {"ok": True}}
    submitted = await submit(http, "e2e.echo", value, priority=7)
    # Queued, or already placed by its submit when an agent had room and nothing waited.
    assert submitted["state"] in ("TASK_STATE_QUEUED", "TASK_STATE_ASSIGNED")
    assert submitted["target"]["capability"] == "e2e.echo" and submitted["priority"] == 7

    # The output comes back as the same plain JSON the agent returned.
    done = await eventually(lambda: task_in(http, submitted["id"], "TASK_STATE_SUCCEEDED"), timeout=15)
    assert done["output"]["json"] == value
    assert done["input"]["json"] == value
    assert done["attempt"] == 1 and done["attempts"][0]["agentInstanceId"] == mesh.agent.instance_id

    # List: a filter (correlation id + capability), pages of 2, opaque page tokens.
    correlation = f"corr-{uuid.uuid4().hex[:8]}"
    ids = [(await submit(http, "e2e.echo", {"i": i}, correlationId=correlation))["id"] for i in range(3)]
    await submit(http, "e2e.echo", {"other": True})  # not in the filtered list
    filters = {"correlationId": correlation, "capability": "e2e.echo", "pageSize": "2"}
    first = await http.get("/v1/tasks", params=filters)
    assert first.status_code == 200, first.text
    page1 = first.json()
    assert len(page1["tasks"]) == 2 and page1["nextPageToken"]
    second = await http.get("/v1/tasks", params={**filters, "pageToken": page1["nextPageToken"]})
    page2 = second.json()
    assert len(page2["tasks"]) == 1 and page2["nextPageToken"] == ""
    listed = [t["id"] for t in page1["tasks"] + page2["tasks"]]
    assert listed == list(reversed(ids)), "newest first, each task once"
    assert all(t["correlationId"] == correlation for t in page1["tasks"] + page2["tasks"])

    # A state filter: once all three succeeded, they are all listed as SUCCEEDED.
    async def all_succeeded() -> bool:
        response = await http.get("/v1/tasks", params={"correlationId": correlation, "state": "TASK_STATE_SUCCEEDED"})
        return len(response.json()["tasks"]) == 3

    await eventually(all_succeeded, timeout=15)
    # The same page token with other filters is refused, not silently misapplied.
    mismatched = await http.get("/v1/tasks", params={"pageToken": page1["nextPageToken"], "capability": "other"})
    assert mismatched.status_code == 400, mismatched.text
    assert status_body(mismatched)["code"] == 3


@pytest.mark.timeout(60)
async def test_request_id_is_the_correlation_id_of_the_task_and_the_audit_trail(mesh: Mesh) -> None:
    """A REST client's X-Request-Id is the id the plane records for the call, and a submit whose body names no
    correlation id takes it as the task's: the client finds its task, and the task's audited actions, by it."""
    http = mesh.http
    response = await http.post(
        "/v1/tasks", json={"target": {"capability": "e2e.echo"}, "input": {"json": 1}}, headers={"X-Request-Id": "abc"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "abc"
    task = response.json()["task"]
    assert task["correlationId"] == "abc"
    done = await eventually(lambda: task_in(http, task["id"], "TASK_STATE_SUCCEEDED"), timeout=15)
    assert done["correlationId"] == "abc"
    listed = await http.get("/v1/tasks", params={"correlationId": "abc"})
    assert [t["id"] for t in listed.json()["tasks"]] == [task["id"]]

    # The audit trail: a REST write is recorded under its request id, a task's resubmit under the task's id.
    put = await http.put("/v1/namespaces/e2e/states/seen", json={"value": {"json": 1}}, headers={"X-Request-Id": "abc"})
    assert put.status_code == 200, put.text
    resubmitted = await http.post(f"/v1/tasks/{task['id']}:resubmit", json={})
    assert resubmitted.status_code == 200, resubmitted.text
    assert resubmitted.json()["task"]["correlationId"] == "abc"
    trail = await http.get("/v1/audit-entries", params={"correlationId": "abc"})
    assert trail.status_code == 200, trail.text
    assert [(e["action"], e["resource"]) for e in trail.json()["entries"]] == [
        ("task.resubmit", f"tasks/{task['id']}"),
        ("state.put", "namespaces/e2e/states/seen"),
    ]

    # The body's own correlation id wins; without X-Request-Id, the id the gateway generated and answered with.
    own = await submit(http, "e2e.echo", 2, correlationId="mine")
    assert own["correlationId"] == "mine"
    generated = await http.post("/v1/tasks", json={"target": {"capability": "e2e.echo"}, "input": {"json": 3}})
    assert generated.status_code == 200, generated.text
    assert generated.json()["task"]["correlationId"] == generated.headers["x-request-id"] != ""
    batch = await http.post(
        "/v1/tasks:batchSubmit",
        json={
            "requests": [
                {"target": {"capability": "e2e.echo"}},
                {"target": {"capability": "e2e.echo"}, "correlationId": "mine"},
            ]
        },
        headers={"X-Request-Id": "batch-1"},
    )
    assert batch.status_code == 200, batch.text
    assert [t["correlationId"] for t in batch.json()["tasks"]] == ["batch-1", "mine"]


@pytest.mark.timeout(60)
async def test_watch_streams_to_completion_and_resumes_after_a_sequence(mesh: Mesh) -> None:
    task = await submit(mesh.http, "e2e.steps", {"steps": 3})
    events = await watch(mesh.http, task["id"])

    sequences = [int(e["sequence"]) for e in events]  # int64 travels as a JSON string
    assert all(isinstance(e["sequence"], str) for e in events)
    assert sequences == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types[0] == "TASK_EVENT_TYPE_CREATED" and events[0]["state"] == "TASK_STATE_QUEUED"
    assert "TASK_EVENT_TYPE_ASSIGNED" in types and "TASK_EVENT_TYPE_PROGRESS" in types
    assert types[-1] == "TASK_EVENT_TYPE_SUCCEEDED" and events[-1]["state"] == "TASK_STATE_SUCCEEDED"
    assert events[-1]["output"]["json"] == {"steps": 3}
    assert all(e["taskId"] == task["id"] for e in events)

    # Resume after a dropped connection: only what came after the last sequence seen.
    resumed = await watch(mesh.http, task["id"], after=2)
    assert resumed == events[2:]
    # After the terminal event there is nothing more: the stream ends at once.
    assert await watch(mesh.http, task["id"], after=sequences[-1]) == []


@pytest.mark.timeout(60)
async def test_cancel_a_running_task(mesh: Mesh) -> None:
    http = mesh.http
    task = await submit(http, "e2e.block", {})
    await eventually(lambda: task_in(http, task["id"], "TASK_STATE_RUNNING"), timeout=15)
    assert mesh.seen["block_started"] == task["id"]

    response = await http.post(f"/v1/tasks/{task['id']}:cancel", json={"reason": "changed my mind"})
    assert response.status_code == 200, response.text
    assert response.json()["task"]["state"] == "TASK_STATE_CANCELLED"

    # The cancellation reaches the agent on its stream; the task stays CANCELLED whatever it returns.
    await eventually(lambda: "block_cancelled" in mesh.seen, timeout=10)
    ended = await task_in(http, task["id"], "TASK_STATE_CANCELLED")
    assert ended is not None and ended["cancelReason"] == "changed my mind" and "output" not in ended
    assert (await watch(http, task["id"]))[-1]["type"] == "TASK_EVENT_TYPE_CANCELLED"

    # Cancelling an ended task is FAILED_PRECONDITION (without a version mismatch: plain 400).
    again = await http.post(f"/v1/tasks/{task['id']}:cancel", json={})
    assert again.status_code == 400, again.text
    assert status_body(again)["code"] == 9


@pytest.mark.timeout(60)
async def test_channel_subscribe_then_publish(mesh: Mesh) -> None:
    http = mesh.http
    async with http.stream("GET", "/v1/channels/e2e-news:subscribe") as stream:
        assert stream.status_code == 200
        lines = ndjson(stream)
        # The first line confirms the subscription is live: what is published from now on arrives.
        assert await asyncio.wait_for(anext(lines), 10) == {"result": {"started": {"channel": "e2e-news"}}}

        published = await http.post(
            "/v1/channels/e2e-news:publish", json={"payload": {"json": {"headline": "hi"}}, "headers": {"lang": "en"}}
        )
        assert published.status_code == 200, published.text
        message = published.json()["message"]
        assert message["channel"] == "e2e-news" and message["messageId"] and message["publisher"].startswith("client")

        received = (await asyncio.wait_for(anext(lines), 10))["result"]["message"]
        assert received["messageId"] == message["messageId"]
        assert received["payload"]["json"] == {"headline": "hi"}
        assert received["headers"] == {"lang": "en"}

    # The SDK agent subscribed to the same channel gets it too.
    await eventually(lambda: mesh.seen["channel"], timeout=10)
    assert mesh.seen["channel"] == [(message["messageId"], {"headline": "hi"})]

    channels = await http.get("/v1/channels")
    assert "e2e-news" in [c["name"] for c in channels.json()["channels"]]


@pytest.mark.timeout(60)
async def test_state_compare_and_set_conflict_is_412_with_the_status_body(mesh: Mesh) -> None:
    http = mesh.http
    url = "/v1/namespaces/e2e/states/counter"
    created = await http.put(url, json={"value": {"json": {"n": 1}}, "expectedVersion": "0"})
    assert created.status_code == 200, created.text
    assert created.json()["entry"]["version"] == "1"

    got = await http.get(url)
    assert got.status_code == 200
    assert got.json()["entry"]["value"]["json"] == {"n": 1} and got.json()["entry"]["version"] == "1"

    conflict = await http.put(url, json={"value": {"json": {"n": 2}}, "expectedVersion": "3"})
    assert conflict.status_code == 412, conflict.text
    body = status_body(conflict)
    assert body["code"] == 9  # FAILED_PRECONDITION
    assert "expected version 3" in body["message"]
    violations = detail(body, PRECONDITION_FAILURE)["violations"]
    assert [v["type"] for v in violations] == ["VERSION_MISMATCH"]
    assert "e2e" in violations[0]["subject"] and "counter" in violations[0]["subject"]
    assert (await http.get(url)).json()["entry"]["value"]["json"] == {"n": 1}, "a failed CAS changes nothing"

    # "Must not exist" on an existing key, and a stale delete, conflict the same way.
    exists = await http.put(url, json={"value": {"json": 0}, "expectedVersion": "0"})
    assert exists.status_code == 412 and status_body(exists)["code"] == 9
    stale_delete = await http.delete(url, params={"expectedVersion": "7"})
    assert stale_delete.status_code == 412, stale_delete.text

    updated = await http.put(url, json={"value": {"json": {"n": 2}}, "expectedVersion": "1"})
    assert updated.status_code == 200 and updated.json()["entry"]["version"] == "2"
    listed = await http.get("/v1/namespaces/e2e/states", params={"keyPrefix": "count"})
    assert [e["key"] for e in listed.json()["entries"]] == ["counter"]
    deleted = await http.delete(url, params={"expectedVersion": "2"})
    assert deleted.status_code == 200 and deleted.json() == {}
    assert (await http.get(url)).status_code == 404

    # The audit trail of those writes, newest first (refused writes recorded nothing).
    trail = await http.get("/v1/audit-entries", params={"resource": "namespaces/e2e/states/counter"})
    assert trail.status_code == 200, trail.text
    entries = trail.json()["entries"]
    assert [(e["action"], e["details"]) for e in entries] == [
        ("state.delete", {"version": 2}),
        ("state.put", {"version": 2}),
        ("state.put", {"version": 1}),
    ]
    assert all(e["correlationId"] and e["actor"] == "client/anonymous" for e in entries)  # the gateway's request ids
    page = await http.get("/v1/audit-entries", params={"action": "state.put", "pageSize": 1, "startTime": "x"})
    assert page.status_code == 400, page.text


@pytest.mark.timeout(60)
async def test_head_answers_every_get_route_as_get_without_a_body(mesh: Mesh) -> None:
    """Load balancers and monitors probe with HEAD: every GET route of the spec answers it with the GET's status
    and headers, streams included (a subscription, which a GET would hold open, is answered and closed)."""
    http = mesh.http
    task = await submit(http, "e2e.echo", "probe")
    await eventually(lambda: task_in(http, task["id"], "TASK_STATE_SUCCEEDED"), timeout=15)
    assert (await http.put("/v1/namespaces/e2e/states/probe", json={"value": {"json": 1}})).status_code == 200
    values = {
        "taskId": task["id"],
        "agentName": "rest-e2e",
        "namespace": "e2e",
        "key": "probe",
        "channel": "e2e-news",
    }
    spec = (await http.get("/openapi.json")).json()
    get_paths = [path for path, operations in spec["paths"].items() if "get" in operations]
    assert "/v1/channels/{channel}:subscribe" in get_paths and "/v1/tasks/{taskId}" in get_paths
    for template in get_paths:
        path = re.sub(r"\{(\w+)\}", lambda m: values[m[1]], template)
        head = await http.head(path)
        assert head.status_code == 200, (path, head.status_code)
        assert head.content == b"" and head.headers["content-type"] == "application/json", path
        assert head.headers["x-request-id"], path
        if not template.endswith(":subscribe"):  # a GET of a subscription never ends
            get = await http.get(path)
            assert get.status_code == 200 and head.headers.get("content-length") == get.headers.get("content-length")
    missing = await http.head("/v1/tasks/t-does-not-exist")
    assert missing.status_code == 404 and missing.content == b""
    # HEAD is listed with GET where a method is not allowed, and refused where GET is.
    assert (await http.delete(f"/v1/tasks/{task['id']}")).headers["allow"] == "GET, HEAD"
    cancel = await http.head(f"/v1/tasks/{task['id']}:cancel")
    assert cancel.status_code == 405 and cancel.headers["allow"] == "POST"


@pytest.mark.timeout(60)
async def test_unknown_ids_are_404_with_the_status_body(mesh: Mesh) -> None:
    for method, path in [
        ("GET", "/v1/tasks/t-does-not-exist"),
        ("POST", "/v1/tasks/t-does-not-exist:cancel"),
        ("GET", "/v1/namespaces/e2e/states/nothing-here"),
        ("GET", "/v1/agents/no-such-agent"),
    ]:
        response = await mesh.http.request(method, path, json={} if method == "POST" else None)
        assert response.status_code == 404, (path, response.text)
        body = status_body(response)
        assert body["code"] == 5, body
        assert "not found" in body["message"], body
    assert "t-does-not-exist" in status_body(await mesh.http.get("/v1/tasks/t-does-not-exist"))["message"]
    # A stream that fails before its first message: the mapped status, one {"error": status} line.
    async with mesh.http.stream("GET", "/v1/tasks/t-does-not-exist:watch") as stream:
        assert stream.status_code == 404
        lines = [line async for line in ndjson(stream)]
    assert len(lines) == 1 and lines[0]["error"]["code"] == 5


@pytest.mark.timeout(60)
async def test_invalid_fields_are_400_naming_the_field(mesh: Mesh) -> None:
    http = mesh.http
    for request, field in [
        ({"target": {}}, "target.capability"),
        ({"target": {"capability": "e2e.echo"}, "priority": 5000}, "priority"),
    ]:
        response = await http.post("/v1/tasks", json=request)
        assert response.status_code == 400, response.text
        body = status_body(response)
        assert body["code"] == 3 and field in body["message"], body
        assert [v["field"] for v in detail(body, BAD_REQUEST)["fieldViolations"]] == [field]

    bad_namespace = await http.put("/v1/namespaces/bad ns/states/k", json={"value": {"json": 1}})
    assert bad_namespace.status_code == 400
    assert detail(status_body(bad_namespace), BAD_REQUEST)["fieldViolations"][0]["field"] == "namespace"
    negative = await http.get("/v1/tasks", params={"pageSize": "-1"})
    assert negative.status_code == 400
    assert detail(status_body(negative), BAD_REQUEST)["fieldViolations"][0]["field"] == "pageSize"

    # Refused by the gateway itself, before any gRPC call: the same status shape, code 3.
    malformed = await http.post("/v1/tasks", content=b'{"target":', headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and status_body(malformed)["code"] == 3
    wrong_type = await http.post("/v1/tasks", json={"target": {"capability": "x"}, "priority": "high"})
    assert wrong_type.status_code == 400 and "priority" in status_body(wrong_type)["message"]
    # A known path with a method it does not have: 405 with Allow (not grpc-gateway's default 501).
    wrong_method = await http.delete("/v1/tasks")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET, HEAD, POST"
    assert status_body(wrong_method)["code"] == 12


@pytest.mark.timeout(60)
async def test_authorization_passes_through_to_the_plane(gateway_binary: Path, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    agent = e2e_agent(seen, token=TOKEN)
    async with running_mesh(gateway_binary, tmp_path, agent, token=TOKEN, auth_tokens=[TOKEN]) as mesh:
        http = mesh.http
        missing = await http.get("/v1/tasks")
        assert missing.status_code == 401, missing.text
        assert status_body(missing)["code"] == 16
        wrong = await http.get("/v1/tasks", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401

        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/v1/tasks", headers=auth)).status_code == 200
        response = await http.post(
            "/v1/tasks", headers=auth, json={"target": {"capability": "e2e.echo"}, "input": {"json": [1, 2]}}
        )
        assert response.status_code == 200, response.text
        task_id = response.json()["task"]["id"]
        # Streams carry it too.
        async with http.stream("GET", f"/v1/tasks/{task_id}:watch", headers=auth) as stream:
            assert stream.status_code == 200
            events = [line["result"]["event"] async for line in ndjson(stream)]
        assert events[-1]["output"]["json"] == [1, 2]
        async with http.stream("GET", f"/v1/tasks/{task_id}:watch") as stream:
            assert stream.status_code == 401
        # Probes stay open without a token.
        assert (await http.get("/readyz")).status_code == 200


@pytest.mark.timeout(60)
async def test_health_readiness_openapi_and_docs(gateway_binary: Path, tmp_path: Path) -> None:
    async with running_plane(tmp_path / "plane") as plane:
        with running_gateway(gateway_binary, plane.address, tmp_path / "gateway.log") as gateway:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
                healthz = await http.get("/healthz")
                assert healthz.status_code == 200 and healthz.json() == {"status": "ok"}
                ready = await http.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json() == {"status": "ok", "upstream": plane.address}

                spec = await http.get("/openapi.json")
                assert spec.status_code == 200 and spec.headers["content-type"].startswith("application/json")
                generated = json.loads((ROOT / "generated/openapi/meshplane.swagger.json").read_text())
                assert spec.json() == generated
                assert "/v1/tasks/{taskId}:watch" in spec.json()["paths"]
                # How to authenticate, for tools reading the spec (Swagger UI's Authorize button): a bearer token
                # in the Authorization header, or none when the plane has no tokens.
                bearer = spec.json()["securityDefinitions"]["bearer"]
                assert (bearer["type"], bearer["in"], bearer["name"]) == ("apiKey", "header", "Authorization")
                assert spec.json()["security"] == [{"bearer": []}, {}]

                docs = await http.get("/docs", follow_redirects=True)
                assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
                assert "swagger" in docs.text.lower()

                await plane.stop()  # the upstream goes away; the gateway stays up
                down = await eventually(lambda: _status_is(http, "/readyz", 503), timeout=10)
                assert down.json()["status"] == "unavailable" and down.json()["upstream"] == plane.address
                assert (await http.get("/healthz")).status_code == 200
                unreachable = await http.get("/v1/tasks")
                assert unreachable.status_code == 503 and status_body(unreachable)["code"] == 14


async def _status_is(http: httpx.AsyncClient, path: str, code: int) -> httpx.Response | None:
    response = await http.get(path)
    return response if response.status_code == code else None
