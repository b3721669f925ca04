"""The composition root: builds every part from Settings, starts them in order, stops them in reverse."""

from __future__ import annotations

import asyncio
import logging
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agent_runtime import __version__  # the project's version (the SDK's is kept equal to it)
from controlplane.api.auth import AuthInterceptor
from controlplane.api.errors import ErrorInterceptor
from controlplane.api.link import AgentLinkServicer
from controlplane.api.listeners import Listeners
from controlplane.api.servicers import AgentServicer, AuditServicer, ChannelServicer, StateServicer, TaskServicer
from controlplane.api.tls import server_credentials
from controlplane.bus.embedded import EmbeddedNats
from controlplane.bus.nats_bus import NatsBus
from controlplane.bus.nats_tls import NatsTls
from controlplane.cluster import Cluster
from controlplane.datadir import DataDirLock
from controlplane.lifecycle import Component, Status, settle
from controlplane.link.registry import SessionRegistry
from controlplane.link.supervisor import SessionSupervisor
from controlplane.observability.grpc_calls import GrpcCalls
from controlplane.observability.metrics import MetricsServer, build_registry
from controlplane.observability.plane_metrics import plane_readings
from controlplane.scheduling.dispatcher import Dispatcher
from controlplane.scheduling.membership import RemoteInstances
from controlplane.scheduling.placement import Placer
from controlplane.scheduling.sweeper import Sweeper
from controlplane.services import channel_codec
from controlplane.services.agents import AgentService
from controlplane.services.audit import AuditTrail
from controlplane.services.channels import ChannelService
from controlplane.services.recovery import RecoveryService
from controlplane.services.reports import ReportService
from controlplane.services.retention import Retention
from controlplane.services.state import StateService
from controlplane.services.tasks import TaskService
from controlplane.services.watch import WatchHub
from controlplane.settings import Settings
from controlplane.store import migrate
from controlplane.store.database import Database, shown_url
from controlplane.store.unit_of_work import Store
from meshplane.v1 import (
    agent_link_pb2,
    agent_link_pb2_grpc,
    agent_service_pb2,
    agent_service_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    channel_pb2,
    channel_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
)

logger = logging.getLogger(__name__)
C = TypeVar("C", bound=Component)

SERVICE_NAMES = [
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    channel_pb2.DESCRIPTOR.services_by_name["ChannelService"].full_name,
    state_pb2.DESCRIPTOR.services_by_name["StateService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    agent_link_pb2.DESCRIPTOR.services_by_name["AgentLinkService"].full_name,
]
# grpc.health.v1 name answering SERVING while the process serves, whatever its database does (for liveness
# probes: restarting a replica does not bring its database back). "" and the API services answer NOT_SERVING
# while the database is out of reach (readiness: clients and new agent connections go to other replicas).
LIVENESS_SERVICE = "meshplane.liveness"
_MAX_MESSAGE = 64 * 1024 * 1024


class ControlPlane(Component):
    """One control plane replica. `async with ControlPlane(settings) as plane:` serves on `plane.address`."""

    name = "control-plane"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.replica_id = settings.replica_id
        self.address = ""
        self.nats_url = settings.nats_url
        self.embedded_nats: EmbeddedNats | None = None
        self.database: Database | None = None
        self.listeners: Listeners | None = None
        self.health_listener: Listeners | None = None  # plaintext grpc.health.v1 alone (settings.health_listen)
        self.health_address = ""
        self._data_dir_lock = DataDirLock(settings.data_dir) if settings.uses_data_dir else None
        self._health = health.aio.HealthServicer()
        self.grpc_calls = GrpcCalls()  # every listener's calls, by method and status (see api.errors)
        self._readiness_shown = False  # the start has set the health answers (the sweep may change them since)
        self._started: list[Component] = []

    # ------------------------------------------------------------ start

    async def _start(self) -> None:
        s = self.settings
        if self._data_dir_lock is not None:
            self._data_dir_lock.acquire()  # before anything in it is touched: one plane per data dir
        nats_max_payload = channel_codec.nats_max_payload(s.max_payload_bytes)  # channel messages' need
        if s.embedded_nats:
            nats_dir = s.data_dir / "nats"
            self.embedded_nats = await self._launch(EmbeddedNats(nats_dir, max_payload=nats_max_payload))
            self.nats_url = self.embedded_nats.url
        self.database = Database(s.effective_database_url, pool_size=s.db_pool_size)
        # DatabaseUnreachable names it when it does not answer; one a newer release migrated is used as it is.
        await migrate.upgrade_at_start(self.database)
        store = Store(self.database)

        nats_servers = [u.strip() for u in self.nats_url.split(",") if u.strip()]
        nats_tls = NatsTls.from_settings(s)
        # Channels need their own messages back (local subscribers hear local publishes through NATS);
        # the cluster signals do not, so they have a connection of their own that skips the echo.
        self.bus = await self._launch(NatsBus(nats_servers, client_name=f"meshplane-{self.replica_id}", tls=nats_tls))
        self.signal_bus = await self._launch(
            NatsBus(nats_servers, client_name=f"meshplane-{self.replica_id}-signals", no_echo=True, tls=nats_tls)
        )
        if self.bus.max_payload < nats_max_payload:
            logger.warning(
                "NATS accepts messages of up to %d bytes (its max_payload); channel messages with payloads near "
                "max_payload_bytes (%d) will be refused (RESOURCE_EXHAUSTED): set max_payload on the NATS "
                "server to %d or more",
                self.bus.max_payload,
                s.max_payload_bytes,
                nats_max_payload,
            )
        self.registry = SessionRegistry()
        self.watch = WatchHub()
        self.cluster = Cluster(self.signal_bus, self.registry, self.watch, replica_id=self.replica_id)
        self.tasks = TaskService(store, s, self.cluster)
        self.reports = ReportService(store, s, self.cluster)
        self.recovery = RecoveryService(store, self.cluster, replica_id=self.replica_id)
        self.state = StateService(store, max_payload_bytes=s.max_payload_bytes)
        self.audit = AuditTrail(store, s)
        self.channels = ChannelService(
            self.bus, store, self.audit, max_payload_bytes=s.max_payload_bytes, use_refresh=s.channel_use_refresh
        )
        self.agents = AgentService(
            store,
            self.registry,
            self.cluster,
            replica_id=self.replica_id,
            default_drain_timeout=s.drain_timeout.total_seconds(),
            batch_max=s.batch_max_size,
        )
        self.remote_instances = RemoteInstances(
            store,
            replica_id=self.replica_id,
            max_age=s.heartbeat_interval.total_seconds(),
            lease_timeout=s.lease_timeout.total_seconds(),
        )
        self.dispatcher = Dispatcher(
            store,
            self.registry,
            Placer(s.default_strategy),
            self.cluster,
            replica_id=self.replica_id,
            batch_max=s.batch_max_size,
            poll_interval=max(0.05, s.sweep_interval.total_seconds()),
            concurrency=2 if store.is_postgres else 1,
            remote=self.remote_instances,
        )
        self.tasks.connect_sync_match(self.dispatcher)  # a submit places what it can at once
        self.supervisor = SessionSupervisor(
            registry=self.registry,
            agents=self.agents,
            recovery=self.recovery,
            reports=self.reports,
            channels=self.channels,
            announce=lambda instance, session: asyncio.ensure_future(self.cluster.announce_session(instance, session)),
            session_joined=self.dispatcher.session_joined,
            slot_freed=self.dispatcher.slot_freed,
            settings=s,
            replica_id=self.replica_id,
        )
        self.cluster.connect(
            work_due=self.dispatcher.wake,
            retries=self.dispatcher.retries_pending,
            drain=self.supervisor.drain,
            replaced=self._session_opened_elsewhere,
        )
        self.sweeper = Sweeper(
            store=store,
            supervisor=self.supervisor,
            recovery=self.recovery,
            agents=self.agents,
            retention=Retention(
                store,
                task_retention=s.task_retention.total_seconds(),
                audit_retention=s.audit_retention.total_seconds(),
                channel_retention=s.channel_retention.total_seconds(),
                instance_retention=s.instance_retention.total_seconds(),
            ),
            record_channel_uses=self.channels.record_subscribed_uses,
            settings=s,
            replica_id=self.replica_id,
            address=lambda: self.address,
            database_reachable=self._database_reachable,
        )

        self.metrics = MetricsServer(build_registry(plane_readings(self), version=__version__))
        if s.metrics_listen:
            self.metrics.start(s.metrics_listen)

        self.listeners = Listeners(self._build_server, s.listen, s.accept_loops, server_credentials(s))
        self.address = _bound_address(s.listen, self.listeners.port)
        if s.health_listen:
            self.health_listener = Listeners(self._build_health_server, s.health_listen, 1)
            self.health_address = _bound_address(s.health_listen, self.health_listener.port)

        await self._launch(self.audit)
        await self._launch(self.cluster)
        await self._launch(self.tasks)
        await self._launch(self.reports)
        await self._launch(self.agents)
        await self._launch(self.supervisor)
        await self._launch(self.sweeper)  # records this replica as alive before any session arrives
        await self.listeners.start()
        if self.health_listener is not None:
            await self.health_listener.start()
        await self._launch(self.dispatcher)
        await self._health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self._readiness_shown = True
        await self._set_ready(not self.sweeper.database_out)
        logger.info(
            "meshplane control plane %s serving on %s%s (database %s, nats %s%s)",
            self.replica_id,
            self.address,
            " with TLS" if s.tls_cert_file else "",
            shown_url(self.database.url),
            self.nats_url,
            f", health checks also in plaintext on {self.health_address}" if self.health_address else "",
        )

    async def _database_reachable(self, reachable: bool) -> None:
        """Readiness follows the database (liveness does not: see LIVENESS_SERVICE). Not while starting (the
        start sets it last) nor once draining (NOT_SERVING for good)."""
        if not self._readiness_shown or self.status not in (Status.STARTING, Status.RUNNING):
            return
        if reachable:
            logger.info("health SERVING again: the database is back")
        else:
            logger.warning(
                "health NOT_SERVING: the database is out of reach (readiness fails, so clients and new agent "
                "connections go to other replicas; %s stays SERVING for liveness)",
                LIVENESS_SERVICE,
            )
        await self._set_ready(reachable)

    async def _set_ready(self, ready: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ["", *SERVICE_NAMES]:
            await self._health.set(service, status)

    async def _session_opened_elsewhere(self, instance_id: str, session_id: str) -> None:
        """Another replica opened a session: a session of that instance here is replaced (unless the store
        shows it is newer), and sticky placement reads the other replicas' instances again."""
        self.remote_instances.invalidate()
        await self.supervisor.replaced_elsewhere(instance_id, session_id)

    async def _launch(self, component: C) -> C:
        await component.start()
        self._started.append(component)
        return component

    def _build_server(self, reuse_port: bool) -> grpc.aio.Server:
        s = self.settings
        # Without tokens there is nothing to check: no auth interceptor (each one costs every RPC a hop).
        interceptors = [AuthInterceptor(s.auth_tokens)] if s.auth_tokens else []
        server = grpc.aio.server(
            # The error interceptor first: it wraps whatever answers a call, so calls the auth interceptor
            # refuses are counted (UNAUTHENTICATED) with the others.
            interceptors=[ErrorInterceptor(self.grpc_calls), *interceptors],
            options=[
                ("grpc.max_receive_message_length", max(_MAX_MESSAGE, 4 * s.max_payload_bytes)),
                ("grpc.max_send_message_length", max(_MAX_MESSAGE, 4 * s.max_payload_bytes)),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                ("grpc.so_reuseport", int(reuse_port)),  # only among our own listeners (see api.listeners)
                # Thousands of agent streams each send a small frame now and then; bandwidth-delay probing
                # pings on those reads cost ~20% of an idle plane's CPU. A fixed 1 MiB stream window
                # instead keeps large payloads moving on high-latency links.
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.lookahead_bytes", 1 << 20),
            ],
        )
        task_service_pb2_grpc.add_TaskServiceServicer_to_server(TaskServicer(self.tasks, self.watch), server)
        agent_service_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(self.agents), server)
        channel_pb2_grpc.add_ChannelServiceServicer_to_server(ChannelServicer(self.channels), server)
        state_pb2_grpc.add_StateServiceServicer_to_server(StateServicer(self.state), server)
        audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(self.audit), server)
        agent_link_pb2_grpc.add_AgentLinkServiceServicer_to_server(
            AgentLinkServicer(self.supervisor, max_payload_bytes=s.max_payload_bytes), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection([*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME], server)
        return server

    def _build_health_server(self, reuse_port: bool) -> grpc.aio.Server:
        """grpc.health.v1 alone, answering as the gRPC port's health does (NOT_SERVING while draining)."""
        server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuse_port))])
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        return server

    # ------------------------------------------------------------ stop

    async def drain(self, grace: float | None = None) -> None:
        """Stop taking traffic: health NOT_SERVING, agents asked to finish their work and leave."""
        if self.status is not Status.RUNNING:
            return
        self.status = Status.DRAINING
        await self._health.enter_graceful_shutdown()
        grace = self.settings.drain_timeout.total_seconds() if grace is None else grace
        logger.info("draining: asking %d agent session(s) to finish (up to %.0fs)", len(self.registry), grace)
        await self.dispatcher.stop()  # no new assignments while agents finish
        await self.supervisor.drain_all(grace)

    async def _stop(self) -> None:
        await self._health.enter_graceful_shutdown()
        if hasattr(self, "supervisor") and self.supervisor.running:
            # Streams end first, while the store and NATS are still up for their cleanup.
            await self.supervisor.close_all(grace=5.0)
        if self.listeners is not None:
            await self.listeners.stop(grace=2.0)
        if self.health_listener is not None:
            await self.health_listener.stop(grace=None)
        for component in reversed(self._started):
            try:
                await component.stop()
            except Exception:
                logger.exception("stopping %s failed", component.name)
        self._started.clear()
        await settle(grace=5.0)  # commits made on callers' behalf finish before the database closes
        if self.database is not None:
            await self.database.dispose()
        if hasattr(self, "metrics"):
            self.metrics.stop()
        if self._data_dir_lock is not None:
            self._data_dir_lock.release()
        logger.info("control plane %s stopped", self.replica_id)


def _bound_address(listen: str, port: int) -> str:
    """`listen` (host:port) with the port it was bound to (port 0 picks one)."""
    host = listen.rsplit(":", 1)[0] or "0.0.0.0"
    return f"{host}:{port}"
