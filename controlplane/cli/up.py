"""``meshplane up``: the whole mesh in one command (control plane, optional demo agent and REST gateway)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_HTTP_LISTEN = "127.0.0.1:8080"


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = subparsers.add_parser(
        "up",
        help="run the control plane (SQLite + embedded NATS unless URLs are given)",
        description="Run a control plane. MESHPLANE_* environment variables apply; flags override them.",
    )
    up.add_argument("--data-dir", type=Path, default=None, help="SQLite file and NATS data (default .meshplane)")
    up.add_argument("--listen", default=None, help="gRPC listen address (default 127.0.0.1:50051)")
    up.add_argument("--database-url", default=None, help="postgresql+asyncpg://... (default: SQLite in the data dir)")
    up.add_argument("--nats-url", default=None, help="NATS URL(s), comma-separated (default: embedded nats-server)")
    up.add_argument("--demo", action="store_true", help="also run demo agents: demo.echo, demo.sleep, demo.flaky")
    up.add_argument(
        "--http-listen",
        default=None,
        help=f"REST gateway listen address, if the gateway is built (default {DEFAULT_HTTP_LISTEN}; "
        "an address given here that the gateway cannot serve stops `up`, the default only logs a warning)",
    )
    up.add_argument(
        "--no-gateway",
        action="store_true",
        help="serve gRPC only, even when the REST gateway is built (MESHPLANE_GATEWAY=off)",
    )
    up.add_argument(
        "--grpc-ingress-listen",
        default=None,
        help="also serve the gRPC API through the gateway here (MESHPLANE_GRPC_INGRESS_LISTEN; default: off); "
        "clients that submit many tasks at once go faster through it: their submits reach the plane in batches",
    )
    up.set_defaults(run=run_up)


async def run_up(args: argparse.Namespace) -> int:
    from controlplane.cli.mesh import run_mesh  # the control plane's imports are heavy: only when needed

    return await run_mesh(args)
