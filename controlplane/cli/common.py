"""What every command shares: global options, the client, JSON arguments, and the CLI's own error."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import ssl
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from agent_runtime import TLS, MeshClient
from agent_runtime._rpc import bearer_token, fits_a_header

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


def token_argument(token: str | None) -> str | None:
    """The --token (or MESHPLANE_TOKEN) as it will be sent: a trailing newline (from a file) stripped; a token a
    request header cannot carry is a CliError."""
    try:
        return bearer_token(token)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


# The metadata key the plane records a call's correlation id from, with what the call changes (its audit entry).
CORRELATION_ID_KEY = "x-correlation-id"


def client(args: argparse.Namespace, *, correlation_id: str = "") -> MeshClient:
    """A client whose every call carries `correlation_id` (`task submit --correlation-id`) when a header can carry
    it, else this invocation's own (`invocation_correlation_id`): the audit trail then ties what one command changed
    together."""
    sent = correlation_id if correlation_id and fits_a_header(correlation_id) else invocation_correlation_id(args)
    return MeshClient(
        args.target, token=token_argument(args.token), tls=tls_from_env(), metadata=[(CORRELATION_ID_KEY, sent)]
    )


def invocation_correlation_id(args: argparse.Namespace) -> str:
    """The correlation id of this invocation's calls: made at its first call ("cli-" and 32 hex digits), and kept on
    `args` (one per invocation, however many clients it opens)."""
    made = getattr(args, "invocation_correlation_id", None)
    if not isinstance(made, str):
        made = args.invocation_correlation_id = f"cli-{uuid.uuid4().hex}"
    return made


_TLS_VARIABLES = {
    "ca_file": "MESHPLANE_TLS_CA_FILE",
    "cert_file": "MESHPLANE_TLS_CLIENT_CERT_FILE",
    "key_file": "MESHPLANE_TLS_CLIENT_KEY_FILE",
}


def tls_from_env() -> TLS | bool:
    """The TLS the MESHPLANE_TLS* variables ask for (False: plaintext), with its files checked now: one that
    cannot be read or does not load is a CliError naming its variable (rather than a traceback from the client,
    or a plane that looks unreachable)."""
    try:
        tls = TLS.from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if tls is None:
        return False
    for attribute, variable in _TLS_VARIABLES.items():
        path = getattr(tls, attribute)
        if path is not None:
            try:
                Path(path).read_bytes()
            except OSError as exc:
                raise CliError(f"cannot read {variable} {path}: {exc.strerror or exc}") from exc
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.ca_file))
        except (ssl.SSLError, ValueError) as exc:
            raise CliError(
                f"MESHPLANE_TLS_CA_FILE {tls.ca_file} holds no usable PEM certificate ({_reason(exc)})"
            ) from exc
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            # No password: gRPC cannot use an encrypted key either (and OpenSSL would ask for one on the tty).
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=lambda: b"")
        except (ssl.SSLError, ValueError) as exc:
            raise CliError(
                f"MESHPLANE_TLS_CLIENT_CERT_FILE {tls.cert_file} and MESHPLANE_TLS_CLIENT_KEY_FILE {tls.key_file} "
                f"are not a PEM certificate and its unencrypted key ({_reason(exc)})"
            ) from exc
    return tls


def _reason(error: Exception) -> str:
    return str(getattr(error, "reason", None) or error)


def json_argument(text: str, option: str) -> Any:
    """A JSON value given inline, as @FILE, or as @- (stdin); only what JSON can carry (no NaN, no Infinity,
    no number beyond a double, no lone surrogate)."""
    if text.startswith("@"):
        source = text[1:]
        try:
            data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {option} file {source}: {exc.strerror}") from exc
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            where = "stdin" if source == "-" else f"file {source}"
            raise CliError(f"{option} {where} is not UTF-8 text (byte {exc.start})") from exc

    def no_constant(name: str) -> NoReturn:
        raise CliError(f"{option} is not valid JSON: {name} is not a JSON number")

    def finite(number: str) -> float:
        value = float(number)
        if math.isinf(value):
            raise CliError(f"{option} holds the number {number}, too large for JSON (a double)")
        return value

    try:
        value = json.loads(text, parse_constant=no_constant, parse_float=finite)
    except json.JSONDecodeError as exc:
        raise CliError(f"{option} is not valid JSON: {exc}") from exc
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        surrogate = exc.object[exc.start : exc.end]
        raise CliError(f"{option} holds {surrogate!r}, a lone surrogate that UTF-8 cannot carry") from exc
    return value


MAX_DURATION_SECONDS = 315_576_000_000  # what a protobuf Duration holds (10,000 years)
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d|w)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}


def parse_duration(text: str) -> float | None:
    """Seconds of a duration: "1.5" (seconds), "500ms", "30s", "5m", "2h", "7d", "1w"; None if ``text`` is none."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def duration_argument(text: str, option: str) -> float:
    """The seconds of a duration option (see :func:`parse_duration`); anything else is a CliError."""
    seconds = parse_duration(text)
    if seconds is None or seconds > MAX_DURATION_SECONDS:
        raise CliError(f"{option} must be a duration like 500ms, 30s, 5m, 2h or 7d (up to 10000 years): got {text!r}")
    return seconds


def int_argument(value: int, option: str, low: int, high: int) -> int:
    """``value`` if within ``low..high``; otherwise a CliError."""
    if not low <= value <= high:
        raise CliError(f"{option} must be within {low}..{high}")
    return value


def key_value_arguments(items: Sequence[str] | None, option: str) -> dict[str, str]:
    """A repeatable ``KEY=VALUE`` option as a dict (the value may hold ``=`` and may be empty): an item without
    ``=``, an empty key, or one key given twice with different values is a CliError."""
    pairs: dict[str, str] = {}
    for item in items or ():
        key, equals, value = item.partition("=")
        if not equals:
            raise CliError(f"{option} must be KEY=VALUE: got {item!r}")
        if not key:
            raise CliError(f"{option} must be KEY=VALUE with a key before the =: got {item!r}")
        if pairs.get(key, value) != value:
            raise CliError(f"{option} gives the key {key!r} two values: {pairs[key]!r} and {value!r}")
        pairs[key] = value
    return pairs


def database_url_setting(args: argparse.Namespace) -> str:
    """How the user gave the database URL, for messages about it: --database-url, else MESHPLANE_DATABASE_URL."""
    return "--database-url" if getattr(args, "database_url", None) is not None else "MESHPLANE_DATABASE_URL"
