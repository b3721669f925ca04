"""The mixed-language mesh (issue 6): one control plane, a conformance agent of every SDK language, and the
mixed-language clients of tests/conformance/CONTRACT.md.

- A client in each language submits tasks that must run on the agents of the two other languages (label
  selector ``lang=<other>``); every result must come from an agent of the right language.
- A client in each language re-submits a task it ran (a new task with the same spec, run by the same agent)
  and is refused for a task still running.
- A client in each language submits a batch in one call, lists it back page by page, and lists the agents and
  an agent's instances.
- A client in each language subscribes to a channel and receives what the clients of all three publish on it.
- A client in each language lists the channels in use and the audit trail of a state key and of a channel (written
  by the test over raw gRPC): every language prints the same lines, numbers of the same JSON type.
- A client in each language publishes on ``conf.broadcast``; every message must reach the agents of all
  three languages (each echoes what it receives on ``conf.received``, which the test subscribes to over
  the raw gRPC ChannelService).

Every language's agent and client is needed: a missing toolchain skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from controlplane.app import ControlPlane
from meshplane.v1 import channel_pb2, state_pb2, task_pb2, task_service_pb2
from tests.conformance import driver, mixed_clients
from tests.conformance.driver import CAPABILITIES, LANGUAGES, AgentProcess, Agents, Mesh, describe, output
from tests.conformance.mixed_clients import ClientRun, RunningClient
from tests.gateway.rest_mesh import running_gateway
from tests.support.eventually import eventually
from tests.support.link_agent import json_payload, payload_value
from tests.support.plane import running_plane

WHOAMI_COUNT = 3
PAYLOAD = {"text": "héllo ✓", "n": 42, "x": 1.5, "list": [1, "two", None, True], "nested": {"a": {"b": []}}}


def prepare_conformance() -> None:
    """Called by conftest.py before any test runs (outside per-test timeouts): build every agent and client."""
    for language in LANGUAGES:
        driver.prepare(language)
        mixed_clients.prepare(language)


@dataclass
class Polyglot:
    plane: ControlPlane
    mesh: Mesh
    agents: dict[str, AgentProcess]  # by language
    clients: dict[str, list[str]]  # argv prefix, by language
    client_target: str = ""  # where the clients connect: the plane unless set

    async def client(self, language: str, *args: str) -> ClientRun:
        argv = [*self.clients[language], "--target", self.client_target or self.plane.address, *args]
        return await mixed_clients.run(language, argv)

    def background(self, language: str, *args: str) -> contextlib.AbstractAsyncContextManager[RunningClient]:
        argv = [*self.clients[language], "--target", self.client_target or self.plane.address, *args]
        return mixed_clients.background(language, argv)


@pytest.fixture
async def polyglot(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Polyglot]:
    """A plane with one conformance agent per language; on the way out the agents are stopped, then the plane
    once it recorded their disconnection (as conftest's ``plane`` fixture does)."""
    launchers = {language: driver.launcher(language) for language in LANGUAGES}  # skip/fail before any start
    clients = {language: mixed_clients.client(language) for language in LANGUAGES}
    groups = {language: Agents(launchers[language], language, tmp_path) for language in LANGUAGES}
    async with running_plane(tmp_path / "plane") as plane:
        try:
            started = await asyncio.gather(
                *(groups[language].start(plane.address) for language in LANGUAGES), return_exceptions=True
            )
            agents: dict[str, AgentProcess] = {}
            for language, outcome in zip(LANGUAGES, started, strict=True):
                if isinstance(outcome, BaseException):
                    raise outcome
                agents[language] = outcome
            async with Mesh(plane.address) as mesh:
                yield Polyglot(plane, mesh, agents, clients)
        finally:
            await asyncio.gather(*(group.close() for group in groups.values()))
            async with Mesh(plane.address) as mesh:
                await mesh.wait_all_disconnected()
            if getattr(request.node, "conformance_call_failed", False) or getattr(
                request.node, "conformance_setup_failed", False
            ):
                print("---- conformance agents ----\n" + "\n\n".join(g.report() for g in groups.values()))


async def check_submission(
    polyglot: Polyglot, run: ClientRun, agent_language: str, capability: str, count: int
) -> list[str]:
    """What is wrong with a client's submit run whose tasks had to run on ``agent_language``'s agent."""
    what = f"{run.language} client -> {agent_language} agent, {capability}"
    if run.returncode != 0:
        return [f"{what}: {run.describe()}"]
    lines = run.lines()
    if len(lines) != count:
        return [f"{what}: {count} lines expected: {run.describe()}"]
    agent = polyglot.agents[agent_language]
    problems: list[str] = []
    for line in lines:
        task = await polyglot.mesh.get(line["task_id"])
        if capability == "conf.whoami":
            expected = {"language": agent_language, "instance_id": agent.instance_id, "attempt": 1, "task_id": task.id}
        else:
            expected = PAYLOAD
        if line != {"task_id": task.id, "state": "SUCCEEDED", "output": expected}:
            problems.append(f"{what}: printed {line!r}, expected output {expected!r}")
        if task.state != task_pb2.TASK_STATE_SUCCEEDED or output(task) != expected:
            problems.append(f"{what}: {describe(task)}")
        if dict(task.target.label_selector) != {"lang": agent_language}:
            problems.append(f"{what}: submitted with label selector {dict(task.target.label_selector)!r}")
        if [a.agent_instance_id for a in task.attempts] != [agent.instance_id]:
            problems.append(f"{what}: ran on {[a.agent_instance_id for a in task.attempts]!r}: {describe(task)}")
    return problems


async def run_tasks_across_languages(polyglot: Polyglot) -> None:
    """A client in each language submits tasks that must run on the agents of the other two."""
    plan = [
        (client_language, agent_language, capability, data, count)
        for client_language in LANGUAGES
        for agent_language in LANGUAGES
        if agent_language != client_language
        for capability, data, count in (("conf.whoami", {}, WHOAMI_COUNT), ("conf.echo", PAYLOAD, 1))
    ]
    runs = await asyncio.gather(
        *(
            polyglot.client(
                client_language,
                "submit",
                "--capability",
                capability,
                "--input",
                json.dumps(data),
                "--count",
                str(count),
                "--label-selector",
                f"lang={agent_language}",
                "--timeout",
                "30",
            )
            for client_language, agent_language, capability, data, count in plan
        )
    )
    problems: list[str] = []
    for (_, agent_language, capability, _, count), run in zip(plan, runs, strict=True):
        problems += await check_submission(polyglot, run, agent_language, capability, count)
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(60)
async def test_a_client_in_each_language_runs_tasks_on_agents_of_the_other_two(polyglot: Polyglot) -> None:
    await run_tasks_across_languages(polyglot)


@pytest.mark.timeout(60)
async def test_the_clients_of_every_language_work_through_the_gateway_grpc_ingress(
    polyglot: Polyglot, gateway_binary: Path, tmp_path: Path
) -> None:
    """The same submits and waits with the clients connected to the gateway's ingress (their concurrent
    submits may leave in batches): each client's SDK talks to a Go gRPC server in front of the plane."""
    with running_gateway(
        gateway_binary, polyglot.plane.address, tmp_path / "gateway.log", "--grpc-listen", "127.0.0.1:0"
    ) as gateway:
        await run_tasks_across_languages(replace(polyglot, client_target=gateway.grpc_address))


def echoed_by(received: driver.Subscription, message: Any) -> dict[str, str]:
    """The agents (language -> publisher) that echoed ``message`` on conf.received so far."""
    return {
        payload["language"]: m.publisher
        for m in received.messages
        if isinstance(payload := payload_value(m.payload), dict) and payload.get("message") == message
    }


@pytest.mark.timeout(60)
async def test_a_broadcast_from_each_language_reaches_agents_of_all_three(polyglot: Polyglot) -> None:
    mesh = polyglot.mesh
    everyone = {language: f"agent/{agent.name}/{agent.instance_id}" for language, agent in polyglot.agents.items()}
    async with mesh.subscription("conf.received") as received:
        # Every agent's conf.broadcast subscription is live (delivery is at-most-once: republish until it is).
        warm_up = {"warm_up": uuid.uuid4().hex}

        async def all_listening() -> bool:
            if echoed_by(received, warm_up) == everyone:
                return True
            await mesh.publish("conf.broadcast", warm_up)
            return False

        await eventually(all_listening, timeout=20, interval=0.3, message="every agent echoes conf.broadcast")

        # Then each language's client publishes once; each message must reach all three agents.
        messages = {language: {"from": language, "nonce": uuid.uuid4().hex, "data": PAYLOAD} for language in LANGUAGES}
        runs = await asyncio.gather(
            *(
                polyglot.client(language, "publish", "--channel", "conf.broadcast", "--data", json.dumps(message))
                for language, message in messages.items()
            )
        )
        for run in runs:
            assert run.returncode == 0, run.describe()
            assert run.lines() == [{"published": "conf.broadcast"}], run.describe()

        def everywhere() -> bool:
            return all(echoed_by(received, message) == everyone for message in messages.values())

        try:
            await eventually(everywhere, timeout=15, message="every broadcast echoed by every agent")
        except AssertionError:
            reached = {language: echoed_by(received, message) for language, message in messages.items()}
            raise AssertionError(
                f"broadcast (by client language) -> echoed by {reached!r}; expected {everyone!r}"
            ) from None


@pytest.mark.timeout(60)
async def test_a_client_in_each_language_resubmits_an_ended_task_and_only_an_ended_one(polyglot: Polyglot) -> None:
    mesh = polyglot.mesh
    running = await mesh.submit("conf.sleep", {"seconds": 30})

    async def check(language: str) -> list[str]:
        what = f"{language} client"
        submit = ["submit", "--capability", "conf.echo", "--input", json.dumps(PAYLOAD)]
        first = await polyglot.client(language, *submit, "--label-selector", f"lang={language}")
        if first.returncode != 0:
            return [f"{what}, submit: {first.describe()}"]
        [original] = first.lines()
        again = await polyglot.client(language, "resubmit", "--task-id", original["task_id"])
        if again.returncode != 0 or len(again.lines()) != 1:
            return [f"{what}, resubmit: {again.describe()}"]
        [line] = again.lines()
        problems: list[str] = []
        expected = {"task_id": line["task_id"], "state": "SUCCEEDED", "output": PAYLOAD}
        if line != {**expected, "resubmitted_from": original["task_id"]} or line["task_id"] == original["task_id"]:
            problems.append(f"{what}: resubmit printed {line!r} for {original['task_id']}")
        copy = await mesh.get(line["task_id"])
        if copy.resubmitted_from != original["task_id"] or dict(copy.target.label_selector) != {"lang": language}:
            problems.append(f"{what}: the copy is not the original's spec: {describe(copy)}")
        if [a.agent_instance_id for a in copy.attempts] != [polyglot.agents[language].instance_id]:
            problems.append(f"{what}: the copy ran on {[a.agent_instance_id for a in copy.attempts]!r}")
        refused = await polyglot.client(language, "resubmit", "--task-id", running.id)
        if refused.returncode != 1 or refused.stdout.strip():
            problems.append(f"{what}: re-submitting a running task was not refused: {refused.describe()}")
        return problems

    try:
        results = await asyncio.gather(*(check(language) for language in LANGUAGES))
    finally:
        await mesh.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=running.id))
    problems = [problem for result in results for problem in result]
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(60)
async def test_a_client_in_each_language_batch_submits_and_lists_tasks_agents_and_instances(
    polyglot: Polyglot,
) -> None:
    """Each language's client sends a batch (one BatchSubmitTasks call) to the next language's agent, lists the
    batch back by its correlation id a page of two at a time, and lists the agents and that agent's instance."""

    async def check(language: str, agent_language: str) -> list[str]:
        what = f"{language} client -> {agent_language} agent"
        correlation_id = f"batch-{language}-{uuid.uuid4().hex[:8]}"
        batch = await polyglot.client(
            language,
            "submit",
            "--capability",
            "conf.echo",
            "--input",
            json.dumps(PAYLOAD),
            "--count",
            "3",
            "--batch",
            "--correlation-id",
            correlation_id,
            "--label-selector",
            f"lang={agent_language}",
        )
        problems = await check_submission(polyglot, batch, agent_language, "conf.echo", 3)
        if problems:
            return problems
        ids = [line["task_id"] for line in batch.lines()]
        tasks = [await polyglot.mesh.get(task_id) for task_id in ids]
        if {task.correlation_id for task in tasks} != {correlation_id}:
            problems.append(f"{what}: correlation ids {[t.correlation_id for t in tasks]!r}, not {correlation_id!r}")
        if len({task.create_time.ToNanoseconds() for task in tasks}) != 1:  # one call, one transaction, one time
            problems.append(f"{what}: the batch's tasks were not created together: {[describe(t) for t in tasks]}")

        listing = ["list-tasks", "--correlation-id", correlation_id, "--page-size", "2"]  # 3 tasks: two pages
        expected = [
            {"task_id": task_id, "state": "SUCCEEDED", "capability": "conf.echo", "correlation_id": correlation_id}
            for task_id in sorted(ids, reverse=True)  # newest first
        ]
        listed = await polyglot.client(language, *listing)
        if listed.returncode != 0 or listed.lines() != expected:
            problems.append(f"{what}: list-tasks expected {expected!r}: {listed.describe()}")
        failed = await polyglot.client(language, *listing, "--state", "FAILED")
        if failed.returncode != 0 or failed.lines():
            problems.append(f"{what}: list-tasks --state FAILED listed tasks: {failed.describe()}")

        agent = polyglot.agents[agent_language]
        agents = await polyglot.client(language, "list-agents", "--capability", "conf.whoami")
        names = sorted(a.name for a in polyglot.agents.values())
        if agents.returncode != 0 or [line.get("name") for line in agents.lines()] != names:
            problems.append(f"{what}: list-agents expected {names!r}: {agents.describe()}")
        else:
            for line in agents.lines():
                if line["status"] != "ONLINE" or line["connected_instances"] != 1:
                    problems.append(f"{what}: list-agents printed {line!r}")
                if set(line["capabilities"]) != CAPABILITIES:
                    problems.append(f"{what}: list-agents capabilities {line['capabilities']!r}")
        instances = await polyglot.client(language, "list-instances", "--agent", agent.name)
        expected_instance = {
            "instance_id": agent.instance_id,
            "agent_name": agent.name,
            "status": "CONNECTED",
            "labels": {"lang": agent_language},
        }
        if instances.returncode != 0 or instances.lines() != [expected_instance]:
            problems.append(f"{what}: list-instances expected {[expected_instance]!r}: {instances.describe()}")
        return problems

    others = {language: LANGUAGES[(index + 1) % len(LANGUAGES)] for index, language in enumerate(LANGUAGES)}
    results = await asyncio.gather(*(check(language, agent_language) for language, agent_language in others.items()))
    problems = [problem for result in results for problem in result]
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(60)
async def test_a_client_in_each_language_receives_what_the_clients_of_all_three_publish(polyglot: Polyglot) -> None:
    channel = f"mixed.fanout.{uuid.uuid4().hex[:8]}"
    messages = {language: {"from": language, "nonce": uuid.uuid4().hex, "data": PAYLOAD} for language in LANGUAGES}
    listen = ["subscribe", "--channel", channel, "--count", str(len(messages)), "--timeout", "30"]
    async with contextlib.AsyncExitStack() as stack:
        subscribers = {
            language: await stack.enter_async_context(polyglot.background(language, *listen)) for language in LANGUAGES
        }
        for language, subscriber in subscribers.items():  # live before anything is published: nothing is missed
            first = await subscriber.first_line()
            assert first == {"subscribed": channel}, f"{language} subscriber printed {first!r}"
        published = await asyncio.gather(
            *(
                polyglot.client(language, "publish", "--channel", channel, "--data", json.dumps(message))
                for language, message in messages.items()
            )
        )
        for run in published:
            assert run.returncode == 0 and run.lines() == [{"published": channel}], run.describe()
        received = {language: await subscriber.finish() for language, subscriber in subscribers.items()}

    def canonical(value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    expected = sorted(messages.values(), key=canonical)
    problems: list[str] = []
    for language, run in received.items():
        lines = run.lines()[1:]
        if run.returncode != 0 or sorted((line.get("data") for line in lines), key=canonical) != expected:
            problems.append(f"{language} subscriber: expected the data {expected!r}: {run.describe()}")
        elif any(line["channel"] != channel or not line["publisher"].startswith("client/") for line in lines):
            problems.append(f"{language} subscriber: channel or publisher wrong: {run.describe()}")
    assert not problems, "\n".join(problems)


def typed(value: Any) -> str:
    """A JSON value as text with sorted keys: equal only for equal values of the same JSON types, so a whole number
    printed as ``2.0`` (a float once parsed) differs from ``2``, and ``1`` from ``true``."""
    return json.dumps(value, sort_keys=True)


@pytest.mark.timeout(60)
async def test_a_client_in_each_language_lists_channels_and_the_audit_trail(polyglot: Polyglot) -> None:
    """The test writes a state key twice (and another key once) and publishes on a channel, over the raw gRPC API;
    each client publishes on a channel of its own. Then every client lists the channels (exactly what the raw
    ListChannels lists, its own channels and the agents' conf.broadcast among them, all with both times) and the
    audit entries of the key (newest first; by action; up to a limit) and of the channel: the same lines in every
    language, the state versions whole numbers."""
    mesh = polyglot.mesh
    suffix = uuid.uuid4().hex[:8]
    namespace = f"mixed-audit-{suffix}"
    for key, value in (("k", {"n": 1}), ("other", {"n": 1}), ("k", {"n": 2})):
        await mesh.state.PutState(state_pb2.PutStateRequest(namespace=namespace, key=key, value=json_payload(value)))
    audit_channel = f"mixed.audit.{suffix}"
    payload = json_payload({"from": "driver", "data": PAYLOAD})
    request = channel_pb2.PublishRequest(channel=audit_channel, payload=payload)
    message = (await mesh.channels.Publish(request)).message

    own = {language: f"mixed.channels.{language}.{suffix}" for language in LANGUAGES}
    published = await asyncio.gather(
        *(
            polyglot.client(language, "publish", "--channel", channel, "--data", json.dumps({"from": language}))
            for language, channel in own.items()
        )
    )
    for run in published:
        assert run.returncode == 0 and run.lines() == [{"published": own[run.language]}], run.describe()

    listed = await mesh.channels.ListChannels(channel_pb2.ListChannelsRequest(page_size=1000))
    assert not listed.next_page_token
    channels = [
        {
            "name": channel.name,
            "has_times": channel.HasField("create_time")
            and channel.HasField("last_use_time")
            and channel.create_time.ToNanoseconds() <= channel.last_use_time.ToNanoseconds(),
        }
        for channel in listed.channels
    ]
    for name in sorted(["conf.broadcast", audit_channel, *own.values()]):
        assert {"name": name, "has_times": True} in channels, f"ListChannels: no {name} with times: {channels}"

    key = f"namespaces/{namespace}/states/k"

    def put(version: int) -> dict[str, Any]:
        return {"actor": "client/anonymous", "action": "state.put", "resource": key, "details": {"version": version}}

    publish_entry = {
        "actor": "client/anonymous",
        "action": "channel.publish",
        "resource": f"channels/{audit_channel}",
        "details": {"message_id": message.message_id, "bytes": len(payload.data)},
    }
    listings: list[tuple[list[str], list[dict[str, Any]]]] = [
        (["list-channels"], channels),
        (["list-audit", "--resource", key], [put(2), put(1)]),
        (["list-audit", "--resource", key, "--action", "state.put", "--limit", "1"], [put(2)]),
        (["list-audit", "--resource", key, "--action", "state.delete"], []),
        (["list-audit", "--resource", f"channels/{audit_channel}"], [publish_entry]),
    ]
    plan = [(language, args, expected) for language in LANGUAGES for args, expected in listings]
    runs = await asyncio.gather(*(polyglot.client(language, *args) for language, args, _ in plan))
    problems: list[str] = []
    for (language, args, expected), run in zip(plan, runs, strict=True):
        if run.returncode != 0 or [typed(line) for line in run.lines()] != [typed(line) for line in expected]:
            problems.append(f"{language} client {args!r}: expected {expected!r}: {run.describe()}")
    assert not problems, "\n".join(problems)
