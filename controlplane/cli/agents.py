"""``meshplane agents ls|instances|drain`` and ``meshplane agent run FILE_OR_MODULE:ATTR``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path

from agent_runtime import Agent
from controlplane.cli import output
from controlplane.cli.common import (
    CliError,
    add_connection_options,
    add_output_option,
    client,
    duration_argument,
    tls_from_env,
    token_argument,
)
from controlplane.cli.logs import configure_logging


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agents = subparsers.add_parser("agents", help="list registered agents and their instances; drain an instance")
    agents_commands = agents.add_subparsers(dest="agents_command", metavar="COMMAND", required=True)
    ls = agents_commands.add_parser("ls", help="list agents and their connected instances")
    ls.add_argument("--capability", default="", help="only agents that registered this capability")
    ls.set_defaults(run=list_agents)

    instances = agents_commands.add_parser("instances", help="list the running copies of one agent (or of all)")
    instances.add_argument("agent", nargs="?", default="-", help="the agent's name (default: every agent)")
    instances.add_argument("--all", action="store_true", help="include disconnected instances")
    instances.set_defaults(run=list_instances)

    drain = agents_commands.add_parser(
        "drain", help="ask an instance to finish its tasks, take no new ones and reconnect (rolling upgrades)"
    )
    drain.add_argument("agent", help="the agent's name")
    drain.add_argument("instance_id")
    drain.add_argument("--timeout", default=None, help="how long its tasks get to finish, e.g. 30s (plane default)")
    drain.add_argument("--reason", default="", help="recorded and sent to the agent")
    drain.set_defaults(run=drain_instance)

    for command in (ls, instances, drain):
        add_connection_options(command, top_level=False)
        add_output_option(command)

    agent = subparsers.add_parser("agent", help="run an agent written with the Python SDK")
    agent_commands = agent.add_subparsers(dest="agent_command", metavar="COMMAND", required=True)
    run = agent_commands.add_parser(
        "run", help="load an Agent from FILE.py:ATTR or package.module:ATTR and serve it until SIGTERM"
    )
    run.add_argument("spec", metavar="FILE_OR_MODULE[:ATTR]", help="where the Agent object is (ATTR defaults to agent)")
    run.set_defaults(run=run_agent)
    add_connection_options(run, top_level=False)


async def list_agents(args: argparse.Namespace) -> int:
    async with client(args) as mesh:
        page = await mesh.list_agents_page(capability=args.capability, page_size=1000)
    if args.output == "json":
        output.out(page.to_json())
        return 0
    rows = [
        [a.name, a.version, a.status, str(a.connected_instances), " ".join(c.name for c in a.capabilities)]
        for a in page.items
    ]
    output.out(output.table(rows, ["NAME", "VERSION", "STATUS", "INSTANCES", "CAPABILITIES"]) if rows else "no agents")
    return 0


async def list_instances(args: argparse.Namespace) -> int:
    async with client(args) as mesh:
        found = await mesh.list_instances(args.agent, include_disconnected=args.all)
    if args.output == "json":
        output.out(json.dumps({"instances": [i.to_dict() for i in found]}, indent=2))  # the response's JSON
        return 0
    rows = [
        [
            i.instance_id,
            i.agent_name,
            i.status,
            f"{i.in_flight}/{i.max_concurrency}",
            f"{i.load:.2f}",
            i.sdk or "-",
            f"{i.node or '-'}:{i.pid}",
            output.age(i.last_seen_time),
        ]
        for i in found
    ]
    headers = ["INSTANCE", "AGENT", "STATUS", "IN FLIGHT", "LOAD", "SDK", "NODE:PID", "LAST SEEN"]
    output.out(output.table(rows, headers) if rows else "no instances")
    return 0


async def drain_instance(args: argparse.Namespace) -> int:
    timeout = duration_argument(args.timeout, "--timeout") if args.timeout is not None else None
    if timeout is not None and timeout <= 0:
        raise CliError("--timeout must be more than 0")
    async with client(args) as mesh:
        instance = await mesh.drain_instance(args.agent, args.instance_id, timeout=timeout, reason=args.reason)
    output.out(instance.to_json() if args.output == "json" else f"instance {instance.instance_id} {instance.status}")
    return 0


def load_agent(spec: str) -> Agent:
    """The Agent at ``path/to/file.py:attr`` or ``package.module:attr`` (attr defaults to ``agent``)."""
    location, _, attribute = spec.partition(":")
    if os.path.splitdrive(spec)[0] and spec.count(":") == 1:  # C:\\path\\agent.py on Windows
        location, attribute = spec, ""
    attribute = attribute or "agent"
    if location.endswith(".py") or os.sep in location or "/" in location:
        path = Path(location)
        if not path.is_file():
            raise CliError(f"no such file: {location}")
        module_name = f"meshplane_agent_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise CliError(f"cannot load {location}")
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, str(path.resolve().parent))  # its neighbours import like in `python file.py`
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as exc:
            raise CliError(f"cannot import {location}: {exc}") from exc
    candidate = getattr(module, attribute, None)
    if candidate is None:
        raise CliError(f"{location} has no attribute {attribute!r}")
    if callable(candidate) and not isinstance(candidate, Agent):
        try:
            inspect.signature(candidate).bind()
        except TypeError as exc:
            raise CliError(
                f"{location}:{attribute} is neither an Agent nor a factory callable without arguments"
            ) from exc
        except ValueError:  # no signature to inspect (some builtins): call it and see
            pass
        candidate = candidate()  # a factory
    if not isinstance(candidate, Agent):
        raise CliError(f"{location}:{attribute} is a {type(candidate).__name__}, not an agent_runtime.Agent")
    if not candidate.capabilities and not candidate.channels:
        raise CliError(f"agent {candidate.name!r} has no task or channel handlers: nothing to serve")
    return candidate


async def run_agent(args: argparse.Namespace) -> int:
    configure_logging(os.environ.get("MESHPLANE_LOG_LEVEL", "INFO"), os.environ.get("MESHPLANE_LOG_FORMAT", "text"))
    sys.path.insert(0, os.getcwd())
    agent = load_agent(args.spec)
    tls = tls_from_env()  # a TLS file it cannot use: one line now, not a traceback from the link
    serving = asyncio.ensure_future(agent.run_async(args.target, token=token_argument(args.token), tls=tls))
    connected = asyncio.ensure_future(agent.wait_connected(timeout=None))
    try:
        done, _ = await asyncio.wait({serving, connected}, return_when=asyncio.FIRST_COMPLETED)
        if connected in done and not connected.exception():
            output.out(
                f"agent {agent.name} connected to {args.target} as {agent.instance_id} "
                f"(capabilities: {' '.join(agent.capabilities) or '-'})"
            )
        await serving
    finally:
        connected.cancel()
    return 0
