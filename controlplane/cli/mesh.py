"""Running the mesh for ``meshplane up``: settings, the control plane, the demo agent, the gateway, shutdown."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import pydantic

from agent_runtime import TLS, Agent
from controlplane.app import ControlPlane
from controlplane.cli import output
from controlplane.cli.common import EXIT_INTERRUPTED, CliError, CliFailure, database_url_setting
from controlplane.cli.demo import DEMO_CAPABILITIES, demo_agent
from controlplane.cli.gateway import Gateway, find_gateway
from controlplane.cli.logs import configure_logging
from controlplane.cli.up import DEFAULT_HTTP_LISTEN
from controlplane.credentials import credential
from controlplane.runtime import tune_interpreter
from controlplane.settings import Settings, warn_about_unknown_variables
from controlplane.store.database import UnsupportedDatabaseUrl, database_url, shown_url

logger = logging.getLogger(__name__)

_DEMO_CONNECT_SECONDS = 15.0


def build_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        name: value
        for name in ("data_dir", "listen", "database_url", "nats_url")
        if (value := getattr(args, name)) is not None
    }
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise CliError(f"invalid settings: {problems}") from exc


def connect_address(address: str) -> str:
    """Where a local client reaches a server listening on ``address`` (0.0.0.0 is not dialable everywhere)."""
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def local_tls(settings: Settings) -> TLS | None:
    """How `up`'s own clients (the demo agent, the gateway) reach its plane: plaintext, or, when the plane serves
    TLS, the MESHPLANE_TLS_* client settings if given, else trusting the plane's own certificate (self-signed)."""
    if settings.tls_cert_file is None:
        return None
    try:
        given = TLS.from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if given is not None:
        return given
    return TLS(ca_file=settings.tls_cert_file, server_name=os.environ.get("MESHPLANE_TLS_SERVER_NAME") or None)


def _gateway_tls_args(tls: TLS | None) -> list[str]:
    """The gateway's flags to dial the plane as `tls` says."""
    if tls is None:
        return []
    args = ["--upstream-tls"]
    if tls.ca_file is not None:
        args += ["--upstream-ca-file", str(tls.ca_file)]
    if tls.server_name:
        args += ["--upstream-server-name", tls.server_name]
    if tls.cert_file is not None and tls.key_file is not None:
        args += ["--upstream-cert-file", str(tls.cert_file), "--upstream-key-file", str(tls.key_file)]
    return args


def _where(settings: Settings) -> str:
    """Where the plane keeps its data, for the ready line: the database URL (as `shown_url` shows it, password
    hidden wherever the URL holds it), or the data dir."""
    if settings.database_url:
        return "database " + shown_url(database_url(settings.database_url))
    return f"data {settings.data_dir}"


class _Signals:
    """SIGTERM/SIGINT set an event (the first time); the mesh then shuts down gracefully."""

    def __init__(self) -> None:
        self.received = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._installed: list[signal.Signals] = []

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
                self._installed.append(sig)
        return self

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.received.is_set():
            logger.warning("%s received again; still shutting down", sig.name)
            return
        logger.info("%s received: shutting down gracefully", sig.name)
        self.received.set()

    def __exit__(self, *exc: object) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)


async def _start_demo(address: str, token: str | None, tls: TLS | None) -> tuple[Agent, asyncio.Task[None]]:
    agent = demo_agent()
    serving = asyncio.ensure_future(agent.serve(address, token=token, tls=tls or False))
    connected = asyncio.ensure_future(agent.wait_connected(timeout=_DEMO_CONNECT_SECONDS))
    await asyncio.wait({serving, connected}, return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        connected.cancel()
        serving.result()  # raises why it stopped
    await connected
    return agent, serving


def _ingress_listen(args: argparse.Namespace) -> str:
    return str(args.grpc_ingress_listen or os.environ.get("MESHPLANE_GRPC_INGRESS_LISTEN") or "")


def _gateway_turned_off(args: argparse.Namespace) -> bool:
    """`--no-gateway` or MESHPLANE_GATEWAY=off (checked before anything starts)."""
    setting = os.environ.get("MESHPLANE_GATEWAY", "").strip().lower()
    if setting not in ("", "on", "off"):
        raise CliError(f"MESHPLANE_GATEWAY must be on or off (got {setting!r})")
    turned_off = bool(args.no_gateway) or setting == "off"
    if turned_off and _ingress_listen(args):
        raise CliError("the gRPC ingress is served by the gateway, which is turned off (--no-gateway)")
    return turned_off


async def _start_gateway(args: argparse.Namespace, address: str, settings: Settings, tls: TLS | None) -> Gateway | None:
    """The REST gateway when it is built (else none, logged); with a gRPC ingress asked for, it must start."""
    ingress = _ingress_listen(args)
    if settings.tls_client_ca_file is not None and (tls is None or tls.cert_file is None):
        why = (
            "the plane requires client certificates (MESHPLANE_TLS_CLIENT_CA_FILE) and the gateway has none to show "
            "(MESHPLANE_TLS_CLIENT_CERT_FILE and MESHPLANE_TLS_CLIENT_KEY_FILE)"
        )
        if ingress:
            raise CliError(f"the gRPC ingress is served by the gateway, and {why}")
        logger.warning("REST gateway not started: %s; serving gRPC only", why)
        return None
    binary = find_gateway()
    if binary is None and ingress:
        raise CliError("the gRPC ingress is served by the gateway, which is not built: run `make gateway-build`")
    if binary is None:
        logger.info(
            "REST gateway not built (no meshplane-gateway in .tools/bin, on PATH or in MESHPLANE_GATEWAY_BIN); "
            "serving gRPC only"
        )
        return None
    asked_for = args.http_listen or os.environ.get("MESHPLANE_HTTP_LISTEN")
    listen = asked_for or DEFAULT_HTTP_LISTEN
    # The gateway reads its other MESHPLANE_GATEWAY_* variables itself; this one is asked for so that its
    # address (port 0 picks one) can be read and shown.
    metrics = os.environ.get("MESHPLANE_GATEWAY_METRICS_LISTEN", "")
    gateway = Gateway(
        binary,
        listen=listen,
        upstream=address,
        grpc_listen=ingress,
        metrics_listen=metrics,
        extra_args=_gateway_tls_args(tls),
    )
    try:
        await gateway.start()
    except (OSError, RuntimeError) as exc:
        if ingress:
            raise CliFailure(f"the gateway (REST and gRPC ingress) did not start: {exc}") from exc
        if asked_for:
            # An address the user chose (--http-listen, MESHPLANE_HTTP_LISTEN) is a promise of REST there:
            # failing beats serving without it. Only the default address (8080 may be busy) falls back.
            raise CliFailure(f"the REST gateway did not start on {listen}: {exc} (its reason is logged above)") from exc
        logger.warning("REST gateway did not start on %s (%s); serving gRPC only", listen, exc)
        return None
    return gateway


async def _start_unless_stopped(plane: ControlPlane, stop: asyncio.Event, url_setting: str) -> bool:
    """Start the plane; False if a signal came first (the start is abandoned and what it began is stopped:
    a plane still waiting for NATS or the database must not ignore Ctrl-C or SIGTERM). `url_setting` names
    where the database URL came from, for a message refusing it."""
    try:
        database_url(plane.settings.effective_database_url)  # a bad setting: before anything starts
    except UnsupportedDatabaseUrl as exc:
        raise CliError(f"{url_setting}: {exc}") from exc
    starting = asyncio.ensure_future(plane.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
        logger.info("stopped while starting")
        return False
    try:
        starting.result()
    except (OSError, RuntimeError) as exc:
        raise CliFailure(f"the control plane did not start: {exc}") from exc
    except UnsupportedDatabaseUrl as exc:  # an option the driver refuses when connecting (e.g. sslmode=bogus)
        raise CliError(f"{url_setting}: {exc}") from exc
    return True


async def run_mesh(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    gateway_off = _gateway_turned_off(args)
    configure_logging(settings.log_level, settings.log_format)
    warn_about_unknown_variables()
    plane = ControlPlane(settings)
    demo: tuple[Agent, asyncio.Task[None]] | None = None
    gateway: Gateway | None = None
    with _Signals() as signals:
        if not await _start_unless_stopped(plane, signals.received, database_url_setting(args)):
            return EXIT_INTERRUPTED
        tune_interpreter()
        try:
            address = connect_address(plane.address)
            token = credential(settings.auth_tokens[0]).token if settings.auth_tokens else None
            secured = ", tls" if settings.tls_cert_file is not None else ""
            ready = f"meshplane ready: grpc {address} ({_where(settings)}{secured})"
            if plane.health_address:
                ready += f", health {connect_address(plane.health_address)}"
            tls = local_tls(settings)
            if args.demo:
                demo = await _start_demo(address, token, tls)
                ready += f", demo agent: {' '.join(DEMO_CAPABILITIES)}"
            if gateway_off:
                logger.info("REST gateway turned off; serving gRPC only")
            else:
                gateway = await _start_gateway(args, address, settings, tls)
            if gateway is not None:
                ready += f", rest {gateway.url}"
                if gateway.grpc_address:
                    ready += f", grpc ingress {gateway.grpc_address}"
                if gateway.metrics_url:
                    ready += f", gateway metrics {gateway.metrics_url}"
            output.out(ready)
            await signals.received.wait()
        finally:
            await _shut_down(plane, demo, gateway, settings.drain_timeout.total_seconds())
    return 0


async def _shut_down(
    plane: ControlPlane, demo: tuple[Agent, asyncio.Task[None]] | None, gateway: Gateway | None, grace: float
) -> None:
    if gateway is not None:
        await gateway.stop()

    async def demo_leaves() -> None:
        if demo is not None:
            agent, serving = demo
            await agent.drain(grace)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await serving

    # Together: the plane's drain turns its health NOT_SERVING at once and asks every agent to drain, the demo
    # agent's own as one of them (one drain timeout in all, not the demo's and then the others').
    await asyncio.gather(plane.drain(), demo_leaves())
    await plane.stop()
    logger.info("meshplane stopped")
