"""``meshplane state get|put|rm NAMESPACE KEY``."""

from __future__ import annotations

import argparse
import sys

from agent_runtime import NotFound
from controlplane.cli import output
from controlplane.cli.common import (
    add_connection_options,
    add_output_option,
    client,
    duration_argument,
    int_argument,
    json_argument,
)

_MAX_VERSION = 2**63 - 1


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    state = subparsers.add_parser("state", help="read and write key/value state")
    commands = state.add_subparsers(dest="state_command", metavar="COMMAND", required=True)

    get = commands.add_parser("get", help="print an entry's value (or the whole entry with -o json)")
    get.set_defaults(run=get_state)

    put = commands.add_parser("put", help="write an entry (prints its new version)")
    put.add_argument("--value", required=True, help="the value: JSON, @FILE or @- (stdin)")
    put.add_argument("--ttl", default=None, help="expire after this long (e.g. 30s, 5m, 7d)")
    put.add_argument(
        "--expected-version",
        type=int,
        default=None,
        help="compare-and-set: only if the stored version is this (0: new)",
    )
    put.set_defaults(run=put_state)

    rm = commands.add_parser("rm", help="delete an entry")
    rm.add_argument("--expected-version", type=int, default=None, help="only if the stored version is this")
    rm.set_defaults(run=delete_state)

    for command in (get, put, rm):
        command.add_argument("namespace", help="namespace (an agent's tasks use the agent's name)")
        command.add_argument("key")
        add_connection_options(command, top_level=False)
        add_output_option(command)


def _not_found(args: argparse.Namespace) -> int:
    output.out(f"error: state {args.namespace}/{args.key} not found", sys.stderr)
    return 1


async def get_state(args: argparse.Namespace) -> int:
    async with client(args) as mesh:
        entry = await mesh.get_state(args.namespace, args.key)
    if entry is None:
        return _not_found(args)
    output.out(entry.to_json() if args.output == "json" else output.value_text(entry.value))
    return 0


async def put_state(args: argparse.Namespace) -> int:
    value = json_argument(args.value, "--value")
    ttl = duration_argument(args.ttl, "--ttl") if args.ttl is not None else None
    if args.expected_version is not None:
        int_argument(args.expected_version, "--expected-version", 0, _MAX_VERSION)
    async with client(args) as mesh:
        entry = await mesh.put_state(args.namespace, args.key, value, ttl=ttl, expected_version=args.expected_version)
    output.out(entry.to_json() if args.output == "json" else f"version {entry.version}")
    return 0


async def delete_state(args: argparse.Namespace) -> int:
    if args.expected_version is not None:
        int_argument(args.expected_version, "--expected-version", 0, _MAX_VERSION)
    async with client(args) as mesh:
        try:
            deleted = await mesh.state(args.namespace).delete(args.key, expected_version=args.expected_version)
        except NotFound:
            deleted = False
    if not deleted:
        return _not_found(args)
    if args.output == "text":
        output.out(f"deleted {args.namespace}/{args.key}")
    else:
        output.out("{}")
    return 0
