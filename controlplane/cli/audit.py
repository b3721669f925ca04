"""``meshplane audit ls``: the audit trail, newest first."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from controlplane.cli import output
from controlplane.cli.common import CliError, add_connection_options, add_output_option, client, parse_duration


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = subparsers.add_parser("audit", help="read the audit trail (who changed what, when)")
    commands = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)

    ls = commands.add_parser("ls", help="list audit entries, newest first")
    ls.add_argument("--resource", default="", help="only this resource, e.g. namespaces/carts/states/c1")
    ls.add_argument("--actor", default="", help="only this actor, e.g. client/anonymous")
    ls.add_argument("--action", default="", help="only this action, e.g. state.put")
    ls.add_argument("--correlation-id", default="", help="only entries with this correlation id")
    ls.add_argument("--since", default=None, help="recorded this long ago or later (30m, 2h, 7d) or since a time")
    ls.add_argument("--until", default=None, help="recorded before this long ago (30m, 2h, 7d) or before a time")
    ls.add_argument("--limit", type=int, default=50, help="at most this many entries (1-1000, default 50)")
    ls.set_defaults(run=list_entries)
    add_connection_options(ls, top_level=False)
    add_output_option(ls)


def moment_argument(text: str, option: str, *, now: datetime) -> datetime:
    """A time given as how long ago (a duration: "500ms", "30m", "7d") or as an ISO 8601 time (UTC unless it names
    its offset)."""
    ago = parse_duration(text)
    if ago is not None:
        try:
            return now - timedelta(seconds=ago)
        except OverflowError as exc:
            raise CliError(f"{option} {text} ago is before the year 1") from exc
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise CliError(f"{option} must be a time ago like 30m, 2h or 7d, or an ISO 8601 time: got {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def list_entries(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise CliError("--limit must be within 1..1000")
    now = datetime.now(UTC)
    since = moment_argument(args.since, "--since", now=now) if args.since is not None else None
    until = moment_argument(args.until, "--until", now=now) if args.until is not None else None
    async with client(args) as mesh:
        page = await mesh.list_audit_entries_page(
            resource=args.resource,
            actor=args.actor,
            action=args.action,
            correlation_id=args.correlation_id,
            since=since,
            until=until,
            page_size=args.limit,
        )
    if args.output == "json":
        output.out(page.to_json())
        return 0
    rows = [
        [
            e.time.isoformat(timespec="seconds") if e.time else "-",
            e.actor,
            e.action,
            e.resource,
            e.correlation_id or "-",
        ]
        for e in page.items
    ]
    headers = ["TIME", "ACTOR", "ACTION", "RESOURCE", "CORRELATION ID"]
    output.out(output.table(rows, headers) if rows else "no audit entries")
    return 0
