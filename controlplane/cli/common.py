"""What every command shares: global options, the client, JSON arguments, and the CLI's own error."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from agent_runtime import MeshClient

DEFAULT_TARGET = "127.0.0.1:50051"

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A mistake in how the CLI was called (bad JSON, unreadable file, ...): exit code 2."""

    exit_code = EXIT_USAGE


class CliFailure(CliError):
    """The command was right but what it needed failed (a database it cannot reach, a port in use): exit code 1."""

    exit_code = EXIT_FAILURE


def add_connection_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """``--target`` and ``--token``: on the top level with their defaults, on commands only when given."""
    default_target: Any = os.environ.get("MESHPLANE_TARGET") or DEFAULT_TARGET if top_level else argparse.SUPPRESS
    default_token: Any = os.environ.get("MESHPLANE_TOKEN") or None if top_level else argparse.SUPPRESS
    parser.add_argument(
        "--target",
        default=default_target,
        help=f"control plane gRPC address (env MESHPLANE_TARGET, default {DEFAULT_TARGET})",
    )
    parser.add_argument("--token", default=default_token, help="bearer token (env MESHPLANE_TOKEN)")


def add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        "-o",
        choices=["text", "json"],
        default="text",
        help="text for people, json for the resource as protobuf JSON (default text)",
    )


def client(args: argparse.Namespace) -> MeshClient:
    return MeshClient(args.target, token=args.token)


def json_argument(text: str, option: str) -> Any:
    """A JSON value given inline, as @FILE, or as @- (stdin)."""
    if text.startswith("@"):
        source = text[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise CliError(f"cannot read {option} file {source}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{option} is not valid JSON: {exc}") from exc


def duration_argument(text: str, option: str) -> float:
    """Seconds: "1.5", "500ms", "30s", "5m", "2h"."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    value = text.strip().lower()
    for unit in ("ms", "s", "m", "h"):
        if value.endswith(unit):
            number, scale = value[: -len(unit)], units[unit]
            break
    else:
        number, scale = value, 1.0
    try:
        return float(number) * scale
    except ValueError as exc:
        raise CliError(f"{option} must be a duration like 30s, 5m or 1.5: got {text!r}") from exc
