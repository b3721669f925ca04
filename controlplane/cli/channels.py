"""``meshplane channel publish|subscribe|ls``."""

from __future__ import annotations

import argparse
import json
import sys

from controlplane.cli import output
from controlplane.cli.common import CliError, add_connection_options, add_output_option, client, json_argument


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    channel = subparsers.add_parser("channel", help="publish to and subscribe to broadcast channels")
    commands = channel.add_subparsers(dest="channel_command", metavar="COMMAND", required=True)

    publish = commands.add_parser("publish", help="publish one message (prints its id)")
    publish.add_argument("name", help="channel name")
    publish.add_argument("--data", "-d", required=True, help="the message: JSON, @FILE or @- (stdin)")
    publish.add_argument("--header", action="append", default=[], metavar="KEY=VALUE", help="a header (repeatable)")
    publish.set_defaults(run=publish_message)

    subscribe = commands.add_parser("subscribe", help="print messages as they arrive (one per line)")
    subscribe.add_argument("name", help="channel name")
    subscribe.add_argument("--count", "-n", type=int, default=0, help="exit after this many messages")
    subscribe.set_defaults(run=subscribe_channel)

    ls = commands.add_parser("ls", help="list the channels in use, by name, with their first and last use")
    ls.set_defaults(run=list_channels)

    for command in (publish, subscribe, ls):
        add_connection_options(command, top_level=False)
        add_output_option(command)


def _headers(pairs: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise CliError(f"--header must be KEY=VALUE: got {pair!r}")
        headers[key] = value
    return headers


async def publish_message(args: argparse.Namespace) -> int:
    data = json_argument(args.data, "--data")
    async with client(args) as mesh:
        message = await mesh.publish(args.name, data, headers=_headers(args.header))
    output.out(message.to_json() if args.output == "json" else message.message_id)
    return 0


async def subscribe_channel(args: argparse.Namespace) -> int:
    received = 0
    async with client(args) as mesh, mesh.subscribe(args.name) as subscription:
        output.out(f"subscribed to {args.name}", sys.stderr)
        async for message in subscription:
            output.out(message.to_json(indent=None) if args.output == "json" else output.value_text(message.data))
            received += 1
            if args.count and received >= args.count:
                break
    return 0


async def list_channels(args: argparse.Namespace) -> int:
    async with client(args) as mesh:
        found = await mesh.list_channels()
    if args.output == "json":
        output.out(json.dumps({"channels": [c.to_dict() for c in found]}, indent=2))  # the response's JSON
        return 0
    rows = [[c.name, output.age(c.create_time), output.age(c.last_use_time)] for c in found]
    output.out(output.table(rows, ["NAME", "CREATED", "LAST USED"]) if rows else "no channels")
    return 0
