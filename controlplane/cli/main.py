"""The ``meshplane`` command: parse, dispatch, and turn expected failures into one line on stderr."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pydantic

from agent_runtime import MeshplaneError, __version__
from controlplane.cli import agents, audit, channels, db, state, tasks, up
from controlplane.cli.common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    add_connection_options,
    token_argument,
)
from controlplane.runtime import run_event_loop

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshplane",
        description="Meshplane: a gRPC agent mesh. Run `meshplane up --demo`, then submit tasks.",
        epilog="To a plane serving TLS, commands connect as the environment says: MESHPLANE_TLS_CA_FILE (trust that "
        "CA), MESHPLANE_TLS=true (the system's roots), MESHPLANE_TLS_CLIENT_CERT_FILE and "
        "MESHPLANE_TLS_CLIENT_KEY_FILE (a client certificate), MESHPLANE_TLS_SERVER_NAME (the name to verify).",
    )
    parser.add_argument("--version", action="version", version=f"meshplane {__version__}")
    add_connection_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up.add_command(commands)
    db.add_commands(commands)
    tasks.add_commands(commands)
    agents.add_commands(commands)
    channels.add_commands(commands)
    state.add_commands(commands)
    audit.add_commands(commands)
    bench = commands.add_parser("bench", help="benchmark the control plane (meshplane bench --help)", add_help=False)
    bench.set_defaults(run=run_bench, bench_args=[])
    return parser


async def run_bench(args: argparse.Namespace) -> int:
    """Hand over to controlplane.bench (imported only now: it is heavy, and may not exist yet)."""
    try:
        bench: Any = importlib.import_module("controlplane.bench")
    except ModuleNotFoundError as exc:
        if exc.name != "controlplane.bench":
            raise
        print("error: the benchmark is not available in this build (controlplane.bench is missing)", file=sys.stderr)
        return EXIT_USAGE
    parser = argparse.ArgumentParser(prog="meshplane bench", description="Benchmark the control plane.")
    bench.add_arguments(parser)
    defaults = argparse.Namespace(target=args.target, token=token_argument(args.token))
    bench_args = parser.parse_args(args.bench_args, namespace=defaults)
    return int(await bench.run(bench_args))


def _message(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _settings_error(error: BaseException | None) -> pydantic.ValidationError | None:
    """`error` if it is the control plane's Settings refusing what it was given (any command that builds them)."""
    if isinstance(error, pydantic.ValidationError) and error.title == "Settings":
        return error
    return None


def _settings_message(error: pydantic.ValidationError, args: argparse.Namespace) -> str:
    """What was refused, on one line, naming each setting as the user gave it: by its flag when the command was
    given one (`up --listen`), else by its MESHPLANE_* variable."""
    from controlplane.settings import Settings, describe_errors, variable  # pydantic-settings: only when needed

    flags = {
        name: "--" + name.replace("_", "-") for name in Settings.model_fields if getattr(args, name, None) is not None
    }
    return describe_errors(error, lambda name: flags.get(name) or variable(name))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = extra  # the benchmark parses its own options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    command: Command = args.run
    try:
        return run_event_loop(command(args))
    except CliError as error:
        refused = _settings_error(error.__cause__)  # (`up` wraps what Settings said)
        message = _message(error) if refused is None else _settings_message(refused, args)
        print(f"error: {message}", file=sys.stderr)
        return error.exit_code
    except pydantic.ValidationError as error:
        if _settings_error(error) is None:
            raise
        print(f"error: {_settings_message(error, args)}", file=sys.stderr)
        return EXIT_USAGE
    except MeshplaneError as error:
        print(f"error: {_message(error)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILURE
