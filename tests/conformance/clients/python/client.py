"""The Python SDK's mixed-language conformance client (tests/conformance/CONTRACT.md, "Mixed-language clients"),
built with the public client API only (MeshClient: submit, submit_many, resubmit, wait, list_tasks_page,
list_agents, list_instances, list_channels, list_audit_entries, publish, subscribe).

python tests/conformance/clients/python/client.py --target HOST:PORT [--token TOKEN] submit --capability C
    --input JSON [--count N] [--batch] [--correlation-id X] [--label-selector K=V[,K=V...]] [--timeout SECONDS]
python tests/conformance/clients/python/client.py --target HOST:PORT [--token TOKEN] resubmit --task-id ID
    [--timeout SECONDS]
python tests/conformance/clients/python/client.py --target HOST:PORT [--token TOKEN] list-tasks [--capability C]
    [--state S] [--correlation-id X] [--page-size N]
python tests/conformance/clients/python/client.py --target HOST:PORT [--token TOKEN] list-agents [--capability C]
python tests/conformance/clients/python/client.py --target HOST:PORT [--token TOKEN] list-instances [--agent NAME]
python tests/conformance/clients/python/client.py --target HOST:PORT [--token TOKEN] list-channels
python tests/conformance/clients/python/client.py --target HOST:PORT [--token TOKEN] list-audit --resource R
    [--action A] [--limit N]
python tests/conformance/clients/python/client.py --target HOST:PORT [--token TOKEN] publish --channel C --data JSON
python tests/conformance/clients/python/client.py --target HOST:PORT [--token TOKEN] subscribe --channel C --count N
    [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from agent_runtime import MeshClient, TaskFailed, TaskSpec, TaskState


def json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def selector(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in filter(None, text.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"bad label selector {text!r}: want K=V[,K=V...]")
        labels[key] = value
    return labels


def nonempty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def print_line(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


async def wait_line(client: MeshClient, task_id: str) -> dict[str, Any]:
    try:
        task = await client.wait(task_id)
    except TaskFailed as exc:
        line: dict[str, Any] = {"task_id": task_id, "state": exc.task.state.value}
        if exc.task.error is not None:
            line["error"] = {"code": exc.task.error.code, "message": exc.task.error.message}
        return line
    return {"task_id": task_id, "state": task.state.value, "output": task.output}


def state(text: str) -> TaskState:
    try:
        return TaskState(text.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown task state {text!r}") from None


async def submit(client: MeshClient, args: argparse.Namespace) -> int:
    spec = TaskSpec(args.capability, args.input, label_selector=args.label_selector, correlation_id=args.correlation_id)
    async with asyncio.timeout(args.timeout):
        if args.batch:
            handles = await client.submit_many([spec] * args.count)
        else:
            handles = [await client.submit_spec(spec) for _ in range(args.count)]
        lines = await asyncio.gather(*(wait_line(client, handle.id) for handle in handles))
    for line in lines:
        print_line(line)
    return 0 if all(line["state"] == "SUCCEEDED" for line in lines) else 1


async def resubmit(client: MeshClient, args: argparse.Namespace) -> int:
    async with asyncio.timeout(args.timeout):
        handle = await client.resubmit(args.task_id)
        line = await wait_line(client, handle.id)
    print_line({**line, "resubmitted_from": handle.task.resubmitted_from})
    return 0 if line["state"] == "SUCCEEDED" else 1


async def list_tasks(client: MeshClient, args: argparse.Namespace) -> int:
    token = ""
    while True:
        page = await client.list_tasks_page(
            state=args.state,
            capability=args.capability,
            correlation_id=args.correlation_id,
            page_size=args.page_size,
            page_token=token,
        )
        for task in page.items:
            print_line(
                {
                    "task_id": task.id,
                    "state": task.state.value,
                    "capability": task.capability,
                    "correlation_id": task.correlation_id,
                }
            )
        token = page.next_page_token
        if not token:
            return 0


async def list_agents(client: MeshClient, args: argparse.Namespace) -> int:
    for agent in await client.list_agents(capability=args.capability):
        print_line(
            {
                "name": agent.name,
                "status": agent.status,
                "connected_instances": agent.connected_instances,
                "capabilities": [capability.name for capability in agent.capabilities],
            }
        )
    return 0


async def list_instances(client: MeshClient, args: argparse.Namespace) -> int:
    for instance in await client.list_instances(args.agent):
        print_line(
            {
                "instance_id": instance.instance_id,
                "agent_name": instance.agent_name,
                "status": instance.status,
                "labels": instance.labels,
            }
        )
    return 0


async def list_channels(client: MeshClient, args: argparse.Namespace) -> int:
    for channel in await client.list_channels():
        created, used = channel.create_time, channel.last_use_time
        print_line({"name": channel.name, "has_times": created is not None and used is not None and created <= used})
    return 0


async def list_audit(client: MeshClient, args: argparse.Namespace) -> int:
    for entry in await client.list_audit_entries(resource=args.resource, action=args.action, limit=args.limit):
        print_line({"actor": entry.actor, "action": entry.action, "resource": entry.resource, "details": entry.details})
    return 0


async def publish(client: MeshClient, args: argparse.Namespace) -> int:
    await client.publish(args.channel, args.data)
    print_line({"published": args.channel})
    return 0


async def subscribe(client: MeshClient, args: argparse.Namespace) -> int:
    async with asyncio.timeout(args.timeout), client.subscribe(args.channel) as subscription:
        print_line({"subscribed": args.channel})  # entering waited until the subscription was live
        received = 0
        async for message in subscription:
            print_line({"channel": message.channel, "data": message.data, "publisher": message.publisher})
            received += 1
            if received == args.count:
                return 0
    return 1  # the stream ended first


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True)
    parser.add_argument("--token", default=None)
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("submit")
    sub.add_argument("--capability", required=True)
    sub.add_argument("--input", type=json_value, required=True)
    sub.add_argument("--count", type=positive, default=1)
    sub.add_argument("--batch", action="store_true")
    sub.add_argument("--correlation-id", default="")
    sub.add_argument("--label-selector", type=selector, default={})
    sub.add_argument("--timeout", type=float, default=30.0)
    again = commands.add_parser("resubmit")
    again.add_argument("--task-id", required=True)
    again.add_argument("--timeout", type=float, default=30.0)
    tasks = commands.add_parser("list-tasks")
    tasks.add_argument("--capability", default="")
    tasks.add_argument("--state", type=state, default=None)
    tasks.add_argument("--correlation-id", default="")
    tasks.add_argument("--page-size", type=positive, default=0)
    agents = commands.add_parser("list-agents")
    agents.add_argument("--capability", default="")
    instances = commands.add_parser("list-instances")
    instances.add_argument("--agent", default="-")
    commands.add_parser("list-channels")
    audit = commands.add_parser("list-audit")
    audit.add_argument("--resource", type=nonempty, required=True)
    audit.add_argument("--action", default="")
    audit.add_argument("--limit", type=positive, default=50)
    pub = commands.add_parser("publish")
    pub.add_argument("--channel", required=True)
    pub.add_argument("--data", type=json_value, required=True)
    listen = commands.add_parser("subscribe")
    listen.add_argument("--channel", required=True)
    listen.add_argument("--count", type=positive, required=True)
    listen.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)  # exits 2 on bad usage

    async with MeshClient(args.target, token=args.token) as client:
        try:
            run = {
                "submit": submit,
                "resubmit": resubmit,
                "list-tasks": list_tasks,
                "list-agents": list_agents,
                "list-instances": list_instances,
                "list-channels": list_channels,
                "list-audit": list_audit,
                "publish": publish,
                "subscribe": subscribe,
            }[args.command]
            return await run(client, args)
        except Exception as exc:
            print(f"{args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
