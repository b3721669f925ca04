"""Render the chart, then run its workloads locally with exactly the environment the chart gives their
containers, so that chart and code cannot drift apart.

For each values file: `helm template` (the pinned helm), then for each container the kubelet's view of
it — the image's ENV, the ConfigMaps in `envFrom`, the `env` entries with `secretKeyRef` filled from the
test's Secrets and `fieldRef metadata.name` from a fake pod name, service-link variables unless the pod
turns them off, `$(VAR)` expansion, the rendered `command`/`args` run literally (`meshplane` is this
checkout's `.venv/bin/meshplane`, `meshplane-gateway` the `make gateway-build` binary), and every path
under a volume mount mapped to a local directory standing for that volume. The only values chosen by the
test are the ones a cluster supplies: Secret contents (a throwaway PostgreSQL, a real nats-server, bearer
tokens), pod names, and free ports (through `--set controlPlane.ports.*`, as every pod has its own
network namespace in a cluster). Then the running processes must behave as the chart promises: its
probes pass, metrics answer on its metrics port, the Secret's tokens are enforced, the replica is the
pod, the database is the Secret's, and SIGTERM drains and exits 0 within the grace period. The gateway's
metrics parts (port, variable, Service, ServiceMonitor, NetworkPolicy rule) are also checked as rendered,
on and off.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from agent_runtime import TLS, MeshClient, Unavailable
from controlplane.app import LIVENESS_SERVICE, SERVICE_NAMES
from controlplane.store.database import database_url as parse_database_url
from controlplane.store.database import shown_url
from meshplane.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    channel_pb2,
    channel_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
)
from tests.helm.kube import CHART, LocalContainer, Manifests, container_port, pod_spec, render
from tests.helm.pod import LocalPod, host_port, http_get, http_status, run_probe
from tests.helm.release import (
    GATEWAY_READY_PREFIX,
    READY_PREFIX,
    Pods,
    bearer,
    free_ports,
    gateway_flags,
    settings_seen_by_the_plane,
    shutdown_budget,
    startup_budget,
)
from tests.sdk.conftest import serving
from tests.sdk.test_client import echo_agent
from tests.support.certs import Issued, TestCA
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent, json_payload
from tests.support.nats import nats_server, tls_nats_server
from tests.support.postgres import PostgresServer

# Generous: the first test of a session builds helm (make helm-tools, minutes). Each test body has its
# own, much shorter, limit (BODY_SECONDS), so a hang still fails fast.
pytestmark = pytest.mark.timeout(900)
BODY_SECONDS = 240

CONTROL_PLANE = ("Deployment", "meshplane")
GATEWAY = ("Deployment", "meshplane-gateway")
GATEWAY_METRICS = ("Service", "meshplane-gateway-metrics")
GATEWAY_MONITOR = ("ServiceMonitor", "meshplane-gateway")
MIGRATE = ("Job", "meshplane-migrate")


def _postgres_location(url: str) -> str:
    """host:port/database of a SQLAlchemy URL (what the ready line shows)."""
    return url.rsplit("@", maxsplit=1)[-1]


async def _replica_rows(database_url: str) -> dict[str, str]:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await connection.fetch("SELECT replica_id, address FROM replicas")
    finally:
        await connection.close()
    return {row["replica_id"]: row["address"] for row in rows}


async def _assert_auth_enforced(address: str, tokens: list[str]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        for metadata in (None, bearer("not-a-token")):
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.ListTasks(task_service_pb2.ListTasksRequest(), metadata=metadata, timeout=10)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED, denied.value
        for token in tokens:  # every token of the Secret's comma-separated list
            await stub.ListTasks(task_service_pb2.ListTasksRequest(), metadata=bearer(token), timeout=10)


async def _submit(address: str, capability: str, token: str, data: Any) -> task_pb2.Task:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        request = task_service_pb2.SubmitTaskRequest(
            target=task_pb2.TaskTarget(capability=capability), input=json_payload(data)
        )
        response = await stub.SubmitTask(request, metadata=bearer(token), timeout=10)
    return response.task


async def _task_state(address: str, task_id: str, token: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        response = await stub.GetTask(task_service_pb2.GetTaskRequest(task_id=task_id), metadata=bearer(token))
    return int(response.task.state)


async def _instances(address: str, token: str) -> list[Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        request = agent_service_pb2.ListAgentInstancesRequest(agent_name="-")
        return list((await stub.ListAgentInstances(request, metadata=bearer(token), timeout=10)).instances)


async def _start_control_plane(pods: Pods, pod_name: str, container: LocalContainer) -> tuple[LocalPod, str]:
    """Start a control-plane pod and wait as long as its startup probe would: its ready line, then every
    probe the chart renders passing."""
    pod = pods.pod(pod_name, container)
    await pod.start()
    ready = await pod.wait_for_line(READY_PREFIX, timeout=startup_budget(container.spec))
    for kind in ("startup", "readiness", "liveness"):
        if container.spec.get(f"{kind}Probe"):
            await eventually(lambda kind=kind: pod.run_probe(kind), timeout=30, message=f"{pod_name} {kind} probe")
    return pod, ready


def _assert_ports_agree(container: LocalContainer) -> tuple[int, int | None]:
    """The chart's container ports, probe ports and listen settings name the same ports."""
    env = container.env
    grpc_port = container_port(container.spec, "grpc")
    assert env["MESHPLANE_LISTEN"].rsplit(":", 1)[1] == str(grpc_port)
    names = {p.get("name") for p in container.spec.get("ports", [])}
    # Under TLS the probes ask the plaintext health port (the kubelet's gRPC probes cannot do TLS).
    probe_port = grpc_port
    if "MESHPLANE_TLS_CERT_FILE" in env:
        probe_port = container_port(container.spec, "health")
        assert env["MESHPLANE_HEALTH_LISTEN"].rsplit(":", 1)[1] == str(probe_port)
    else:
        assert "health" not in names and "MESHPLANE_HEALTH_LISTEN" not in env
    for kind in ("startup", "readiness", "liveness"):
        probe = container.spec.get(f"{kind}Probe")
        if probe:
            assert probe["grpc"]["port"] == probe_port, f"{kind} probe on {probe['grpc']['port']}, not {probe_port}"
    if "MESHPLANE_METRICS_LISTEN" not in env:
        assert "metrics" not in names, "a metrics port is declared but the plane serves no metrics"
        return grpc_port, None
    metrics_port = container_port(container.spec, "metrics")
    assert env["MESHPLANE_METRICS_LISTEN"].rsplit(":", 1)[1] == str(metrics_port)
    return grpc_port, metrics_port


def _assert_services_reach_ports(manifests: Manifests) -> None:
    """Every Service's targetPort names a port of the workload its selector picks."""
    workloads = manifests.all("Deployment")
    for service in manifests.all("Service"):
        selector = service["spec"]["selector"]
        picked = [w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(picked) == 1, f"Service {service['metadata']['name']} selects {len(picked)} workloads"
        spec = picked[0]["spec"]["template"]["spec"]["containers"][0]
        for port in service["spec"]["ports"]:
            container_port(spec, port["targetPort"])


def _json_logs(pod: LocalPod) -> list[dict[str, Any]]:
    """The pod's stderr, which the chart's logFormat json makes one JSON object per line."""
    text = pod.log_path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def _run_migrations(pods: Pods, manifests: Manifests, secrets: Mapping[str, Mapping[str, str]]) -> str:
    """The pre-install/pre-upgrade hook Job, run twice (it must be idempotent): its output line."""
    job = manifests.one(*MIGRATE)
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    lines = []
    for attempt in (1, 2):
        container, _ = pods.container(manifests, secrets, MIGRATE, "migrate", f"meshplane-migrate-run{attempt}")
        assert container.argv[1:] == ["db", "upgrade"]
        run = pods.pod(f"meshplane-migrate-run{attempt}", container)
        code = await run.run_to_completion(timeout=float(job["spec"].get("activeDeadlineSeconds", 120)))
        assert code == 0, f"meshplane db upgrade exited {code}:\n{run.logs()}"
        lines.append(run.stdout_lines[-1])
    assert lines[0] == lines[1] and " at revision " in lines[0], lines
    return lines[0]


# ---------------------------------------------------------------- default values (+ auth)


@pytest.mark.postgres
async def test_default_values_run_as_rendered(
    helm: Path, gateway_binary: Path, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with (
        asyncio.timeout(BODY_SECONDS),
        nats_server(tmp_path / "nats") as nats_url,
        Pods(tmp_path, gateway_binary=gateway_binary) as pods,
    ):
        database_url = postgres_server.create_database()
        grpc_port, metrics_port, http_port, ingress_port, gateway_metrics_port = free_ports(5)
        manifests = render(
            helm,
            values={
                "nats.url": nats_url,
                "auth.existingSecret": "meshplane-auth",
                "controlPlane.ports.grpc": grpc_port,
                "controlPlane.ports.metrics": metrics_port,
                "gateway.port": http_port,
                "gateway.grpcIngress.port": ingress_port,
                "gateway.metrics.port": gateway_metrics_port,
                "gateway.config.upstream": f"127.0.0.1:{grpc_port}",
            },
        )
        tokens = ["token-one", "token-two"]
        secrets = {"meshplane-database": {"url": database_url}, "meshplane-auth": {"tokens": ",".join(tokens)}}
        _assert_services_reach_ports(manifests)

        revision_line = await _run_migrations(pods, manifests, secrets)
        assert _postgres_location(database_url) in revision_line

        pod_name = "meshplane-7d9c6b5f4-x2k8q"
        plane, cluster = pods.container(manifests, secrets, CONTROL_PLANE, "control-plane", pod_name)
        assert _assert_ports_agree(plane) == (grpc_port, metrics_port)
        settings = settings_seen_by_the_plane(plane, cluster)
        assert settings.replica_id == pod_name and settings.auth_tokens == tokens
        assert settings.database_url == database_url and settings.nats_url == nats_url
        assert str(settings.data_dir) == str(plane.mounts["/var/lib/meshplane"])

        pod, ready = await _start_control_plane(pods, pod_name, plane)
        address = f"127.0.0.1:{grpc_port}"
        assert ready == f"{READY_PREFIX}{address} (database {shown_url(parse_database_url(database_url))})", ready

        # The liveness probe asks the name that outlives a database outage; it may name any service the plane
        # registers with grpc.health (README).
        liveness = plane.spec["livenessProbe"]
        assert liveness["grpc"]["service"] == LIVENESS_SERVICE
        assert await pod.run_probe("liveness")
        for service in SERVICE_NAMES:
            assert await run_probe({**liveness, "grpc": {**liveness["grpc"], "service": service}}, plane.spec)
        assert not await run_probe({**liveness, "grpc": {**liveness["grpc"], "service": "nope"}}, plane.spec)

        # Metrics on the rendered metrics port.
        status, body = await http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and b"meshplane_agent_sessions " in body

        # The Secret's tokens, and only they, get in.
        await _assert_auth_enforced(address, tokens)

        # This replica is the pod: on the agent link, in the API, in PostgreSQL, in the logs.
        agent = LinkAgent(address, name="chart-agent", capabilities=["chart.echo"], token=tokens[0])
        registered = await agent.connect()
        try:
            assert registered is not None and registered.replica_id == pod_name
            instances = await _instances(address, tokens[1])
            assert [(i.instance_id, i.replica_id) for i in instances] == [(agent.instance_id, pod_name)]
            rows = await _replica_rows(database_url)
            assert pod_name in rows, rows
            records = _json_logs(pod)
            assert any(pod_name in r["message"] and "serving on" in r["message"] for r in records), records

            # A task through the plane, then read back through the gateway (its upstream is the plane).
            agent.serve_echo()
            task = await _submit(address, "chart.echo", tokens[0], {"via": "chart"})
            await _wait_succeeded(address, task.id, tokens[0])
            gateway = await _check_gateway(
                pods, manifests, gateway_binary, (http_port, gateway_metrics_port), task.id, tokens[0]
            )
            await _check_grpc_ingress(f"127.0.0.1:{ingress_port}", address, tokens[0])

            # SIGTERM: health NOT_SERVING first (readiness fails, the gateway turns unready), agents told
            # to drain; the plane exits 0 once they have left, within the grace period.
            pod.send_signal(signal.SIGTERM)
            await eventually(lambda: _probe_fails(pod), timeout=30, message="readiness fails while draining")
            # So does liveness: the chart keeps its failure budget above the drain timeout.
            assert not await pod.run_probe("liveness")
            assert liveness["periodSeconds"] * liveness["failureThreshold"] > settings.drain_timeout.total_seconds()
            await eventually(lambda: _probe_fails(gateway), timeout=30, message="gateway /readyz fails")
            await eventually(lambda: agent.drains, timeout=30, message="the agent is asked to drain")
        finally:
            await agent.close()
        code = await pod.terminate(within=shutdown_budget(plane.pod, plane.spec))
        assert code == 0, pod.logs()
        assert _json_logs(pod)[-1]["message"] == "meshplane stopped"
        assert await gateway.terminate(within=shutdown_budget(gateway.container.pod, gateway.container.spec)) == 0


async def _probe_fails(pod: LocalPod, kind: str = "readiness") -> bool:
    return not await pod.run_probe(kind)


async def _wait_succeeded(address: str, task_id: str, token: str) -> None:
    async def succeeded() -> bool:
        return await _task_state(address, task_id, token) == task_pb2.TASK_STATE_SUCCEEDED

    await eventually(succeeded, timeout=30, message=f"task {task_id} succeeded")


async def _check_grpc_ingress(ingress: str, plane: str, token: str) -> None:
    """The gateway's gRPC ingress port: a submit through it runs on the plane's agent; the plane's auth holds."""
    task = await _submit(ingress, "chart.echo", token, {"via": "ingress"})
    await _wait_succeeded(plane, task.id, token)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _submit(ingress, "chart.echo", "not-a-token", {})
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _assert_gateway_reads_its_environment(container: LocalContainer, binary: Path) -> None:
    """Every MESHPLANE_GATEWAY_* variable the chart gives the gateway is one of its flags' (else it is ignored)."""
    known = gateway_flags(binary)
    unread = [n for n in container.env if n.startswith("MESHPLANE_GATEWAY_") and n not in known]
    assert not unread, f"the gateway's environment has {unread}, which it never reads"


async def _check_gateway(
    pods: Pods, manifests: Manifests, binary: Path, ports: tuple[int, int], task_id: str, token: str
) -> LocalPod:
    http_port, metrics_port = ports
    container, _ = pods.container(manifests, {}, GATEWAY, "gateway", "meshplane-gateway-5f8b9c7d6-q4w9z")
    assert container.argv == [str(binary)]
    assert container_port(container.spec, "http") == http_port
    assert container.env["MESHPLANE_GATEWAY_GRPC_LISTEN"] == f":{container_port(container.spec, 'grpc')}"
    assert container_port(container.spec, "metrics") == metrics_port
    assert container.env["MESHPLANE_GATEWAY_METRICS_LISTEN"] == f":{metrics_port}"
    _assert_gateway_reads_its_environment(container, binary)
    gateway = pods.pod("meshplane-gateway-5f8b9c7d6-q4w9z", container)
    await gateway.start()
    await gateway.wait_for_line(GATEWAY_READY_PREFIX, timeout=30)
    for kind in ("liveness", "readiness"):
        await eventually(lambda kind=kind: gateway.run_probe(kind), timeout=30, message=f"gateway {kind} probe")
    url = f"http://127.0.0.1:{http_port}/v1/tasks/{task_id}"
    status, _ = await http_get(url)
    assert status == 401, f"the gateway let an unauthenticated request through: {status}"
    status, body = await http_get(url, headers={"Authorization": f"Bearer {token}"})
    assert status == 200, body
    assert json.loads(body)["task"]["state"] == "TASK_STATE_SUCCEEDED"
    # Metrics on the rendered metrics port, a listener of their own.
    status, body = await http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200 and b"# TYPE " in body, (status, body[:500])
    return gateway


# ---------------------------------------------------------------- gateway metrics: rendered only when on


def _gateway_metrics(manifests: Manifests) -> tuple[int | None, str | None, Any, Any]:
    """The gateway's metrics parts in one render: container port, listen variable, Service, ServiceMonitor."""
    ports = {p["name"]: p["containerPort"] for p in pod_spec(manifests.one(*GATEWAY))["containers"][0]["ports"]}
    listen = manifests.one("ConfigMap", "meshplane-gateway")["data"].get("MESHPLANE_GATEWAY_METRICS_LISTEN")
    return ports.get("metrics"), listen, manifests.find(*GATEWAY_METRICS), manifests.find(*GATEWAY_MONITOR)


def _ingress_from(manifests: Manifests, policy: str, port: int) -> list[Any] | None:
    """The peers a NetworkPolicy admits to `port` ([] = any), or None if no rule names the port."""
    rules = manifests.one("NetworkPolicy", policy)["spec"]["ingress"]
    peers = [rule.get("from", []) for rule in rules if port in [p["port"] for p in rule["ports"]]]
    assert len(peers) <= 1, f"{len(peers)} rules of NetworkPolicy {policy} name port {port}"
    return peers[0] if peers else None


def test_gateway_metrics_rendered_only_when_enabled(helm: Path) -> None:
    """gateway.metrics (on by default): the container port `metrics`, MESHPLANE_GATEWAY_METRICS_LISTEN, the
    metrics Service and the NetworkPolicy rule; a ServiceMonitor only when asked for; with metrics off, none."""
    default = render(helm)
    port, listen, service, monitor = _gateway_metrics(default)
    assert (port, listen, monitor) == (9091, ":9091", None)
    assert service is not None
    assert service["metadata"]["labels"]["meshplane.io/service"] == "metrics"
    assert service["spec"]["selector"] == default.one(*GATEWAY)["spec"]["selector"]["matchLabels"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [("metrics", 9091, "metrics")]

    # HA values: its ServiceMonitor scrapes the gateway's metrics Service (and not the control plane's,
    # which carries the same meshplane.io/service label); the gateway's NetworkPolicy admits metricsFrom
    # to the metrics port, as the control plane's does to its own.
    ha = render(helm, values_files=[CHART / "ci" / "ha-values.yaml"])
    monitor = ha.one(*GATEWAY_MONITOR)
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [s["metadata"]["name"] for s in ha.all("Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert scraped == [GATEWAY_METRICS[1]]
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("metrics", "/metrics")]
    metrics_from = _ingress_from(ha, "meshplane", 9090)
    assert metrics_from and _ingress_from(ha, "meshplane-gateway", 9091) == metrics_from

    # Off: none of them, and the control plane's metrics are untouched.
    off = render(helm, values={"gateway.metrics.enabled": False, "networkPolicy.enabled": True})
    assert _gateway_metrics(off) == (None, None, None, None)
    assert _ingress_from(off, "meshplane-gateway", 9091) is None
    assert off.find("Service", "meshplane-metrics") is not None
    # No gateway, no gateway ServiceMonitor either, even when asked for.
    no_gateway = render(helm, values={"gateway.enabled": False, "gateway.metrics.serviceMonitor.enabled": True})
    assert no_gateway.find(*GATEWAY_METRICS) is None and no_gateway.find(*GATEWAY_MONITOR) is None


# ---------------------------------------------------------------- HA values: two replicas


@pytest.mark.postgres
async def test_ha_values_two_replicas_share_postgres_and_nats(
    helm: Path, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with asyncio.timeout(BODY_SECONDS), nats_server(tmp_path / "nats") as nats_url, Pods(tmp_path) as pods:
        database_url = postgres_server.create_database()
        token = "ha-token-0123456789abcdef"
        secrets = {  # the Secrets ci/ha-values.yaml names
            "meshplane-db-url": {"url": database_url},
            "meshplane-nats": {"url": nats_url},
            "meshplane-auth": {"tokens": token},
        }
        pod_names = ["meshplane-6f7d8c9b5-a1b2c", "meshplane-6f7d8c9b5-d3e4f"]
        ports = free_ports(4)
        renders: list[Manifests] = []
        containers: list[LocalContainer] = []
        for index, pod_name in enumerate(pod_names):
            # One render per pod: in a cluster both pods listen on the same ports in their own network
            # namespaces; here each gets its own (nothing else in the render may differ).
            manifests = render(
                helm,
                values_files=[CHART / "ci" / "ha-values.yaml"],
                values={
                    "controlPlane.ports.grpc": ports[2 * index],
                    "controlPlane.ports.metrics": ports[2 * index + 1],
                },
            )
            renders.append(manifests)
            container, cluster = pods.container(manifests, secrets, CONTROL_PLANE, "control-plane", pod_name)
            assert _assert_ports_agree(container) == (ports[2 * index], ports[2 * index + 1])
            settings = settings_seen_by_the_plane(container, cluster)
            assert (settings.replica_id, settings.nats_url, settings.database_url) == (pod_name, nats_url, database_url)
            assert settings.auth_tokens == [token] and settings.drain_timeout.total_seconds() == 45
            assert (settings.default_max_attempts, settings.batch_max_size, settings.db_pool_size) == (5, 512, 20)
            assert container.env["OTEL_SERVICE_NAME"] == "meshplane"  # controlPlane.extraEnv
            containers.append(container)
        _assert_renders_differ_only_in_ports(*renders)
        assert "MESHPLANE_NATS_URL" not in renders[0].one("ConfigMap", "meshplane")["data"]  # from the Secret

        await _run_migrations(pods, renders[0], secrets)
        (pod_a, ready_a), (pod_b, ready_b) = await asyncio.gather(
            *(_start_control_plane(pods, name, c) for name, c in zip(pod_names, containers, strict=True))
        )
        address_a, address_b = (f"127.0.0.1:{container_port(c.spec, 'grpc')}" for c in containers)
        assert ready_a.startswith(READY_PREFIX + address_a) and ready_b.startswith(READY_PREFIX + address_b)
        assert set(pod_names) <= set(await _replica_rows(database_url))
        for address in (address_a, address_b):
            await _assert_auth_enforced(address, [token])
        for container in containers:
            status, _ = await http_get(f"http://127.0.0.1:{container_port(container.spec, 'metrics')}/metrics")
            assert status == 200

        # An agent on pod A serves a task submitted to pod B (the same PostgreSQL behind both) and hears a
        # message published on pod B (the same NATS: channels are broadcast over it, never stored).
        agent = LinkAgent(
            address_a, name="ha-agent", capabilities=["chart.ha"], subscriptions=["chart.news"], token=token
        )
        registered = await agent.connect()
        try:
            assert registered is not None and registered.replica_id == pod_names[0]
            await eventually(lambda: _published_and_heard(address_b, agent, token), timeout=30)
            agent.serve_echo()
            task = await _submit(address_b, "chart.ha", token, {"across": "replicas"})
            assert task.retry_policy.max_attempts == 5  # controlPlane.extraConfig
            await _wait_succeeded(address_b, task.id, token)
            assert [i.replica_id for i in await _instances(address_b, token)] == [pod_names[0]]
        finally:
            await agent.close()

        codes = await asyncio.gather(
            *(
                pod.terminate(within=shutdown_budget(c.pod, c.spec))
                for pod, c in zip((pod_a, pod_b), containers, strict=True)
            )
        )
        assert codes == [0, 0], (pod_a.logs(), pod_b.logs())


async def _published_and_heard(address: str, agent: LinkAgent, token: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = channel_pb2_grpc.ChannelServiceStub(channel)
        request = channel_pb2.PublishRequest(channel="chart.news", payload=json_payload({"hello": "replicas"}))
        await stub.Publish(request, metadata=bearer(token), timeout=10)
    try:  # the subscription may not be wired to NATS yet: then the next round publishes again
        message = await asyncio.wait_for(agent.channel_messages.get(), 0.5)
    except TimeoutError:
        return False
    return bool(json.loads(message.payload.data) == {"hello": "replicas"})


def _assert_renders_differ_only_in_ports(first: Manifests, second: Manifests) -> None:
    listen = {"MESHPLANE_LISTEN", "MESHPLANE_METRICS_LISTEN"}
    data = [
        {k: v for k, v in m.one("ConfigMap", "meshplane")["data"].items() if k not in listen} for m in (first, second)
    ]
    assert data[0] == data[1]
    env = [m.one(*CONTROL_PLANE)["spec"]["template"]["spec"]["containers"][0]["env"] for m in (first, second)]
    assert env[0] == env[1]


# ---------------------------------------------------------------- minimal values: embedded mode


async def test_embedded_minimal_values_run_as_rendered(helm: Path, tmp_path: Path) -> None:
    async with asyncio.timeout(BODY_SECONDS), Pods(tmp_path) as pods:
        (grpc_port,) = free_ports(1)
        manifests = render(
            helm, values_files=[CHART / "ci" / "minimal-values.yaml"], values={"controlPlane.ports.grpc": grpc_port}
        )
        assert manifests.find(*MIGRATE) is None and manifests.find(*GATEWAY) is None
        pod_name = "meshplane-58c9d7b6f4-zx9vw"
        container, cluster = pods.container(manifests, {}, CONTROL_PLANE, "control-plane", pod_name)
        assert _assert_ports_agree(container) == (grpc_port, None)
        settings = settings_seen_by_the_plane(container, cluster)
        data_dir = container.mounts["/var/lib/meshplane"]  # the data emptyDir
        assert settings.embedded_nats and not settings.database_url and settings.data_dir == data_dir

        pod, ready = await _start_control_plane(pods, pod_name, container)
        address = f"127.0.0.1:{grpc_port}"
        assert ready == f"{READY_PREFIX}{address} (data {data_dir})", ready
        assert (data_dir / "meshplane.db").is_file()  # SQLite on the emptyDir, as the chart says

        agent = LinkAgent(address, name="embedded-agent", capabilities=["chart.embedded"])
        registered = await agent.connect()  # no auth Secret: no token needed
        try:
            assert registered is not None and registered.replica_id == pod_name
        finally:
            await agent.close()
        assert await pod.terminate(within=shutdown_budget(container.pod, container.spec)) == 0, pod.logs()


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_ipv6_listen_host_serves_grpc_and_metrics(helm: Path, tmp_path: Path) -> None:
    """`controlPlane.listenHost: "::"` (IPv6 clusters): gRPC, probes and metrics on every address."""
    if not _ipv6_loopback_works():
        pytest.skip("this machine has no IPv6 loopback")
    async with asyncio.timeout(BODY_SECONDS), Pods(tmp_path) as pods:
        grpc_port, metrics_port = free_ports(2)
        manifests = render(
            helm,
            values_files=[CHART / "ci" / "minimal-values.yaml"],
            values={
                "controlPlane.listenHost": "::",
                "controlPlane.metrics.enabled": True,
                "controlPlane.ports.grpc": grpc_port,
                "controlPlane.ports.metrics": metrics_port,
            },
        )
        pod_name = "meshplane-58c9d7b6f4-v6v6v"
        container, cluster = pods.container(manifests, {}, CONTROL_PLANE, "control-plane", pod_name)
        assert _assert_ports_agree(container) == (grpc_port, metrics_port)
        settings_seen_by_the_plane(container, cluster)
        pod, _ = await _start_control_plane(pods, pod_name, container)
        for host in ("::1", "127.0.0.1"):  # an IPv6 pod IP, and IPv4 where the cluster is dual-stack
            assert await pod.run_probe("readiness", host=host), host
            status, body = await http_get(f"http://{host_port(host, metrics_port)}/metrics")
            assert status == 200 and b"meshplane_agent_sessions " in body, host
        assert await pod.terminate(within=shutdown_budget(container.pod, container.spec)) == 0, pod.logs()


# ---------------------------------------------------------------- NATS over TLS


@pytest.mark.postgres
async def test_nats_tls_values_reach_nats_over_mutual_tls(
    helm: Path, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """nats.tls: the plane trusts the Secret's CA and shows its client certificate to a nats-server that
    requires one, and carries channel messages through it."""
    ca = TestCA(tmp_path / "pki")
    nats_cert = ca.server("nats")
    async with (
        asyncio.timeout(BODY_SECONDS),
        tls_nats_server(tmp_path / "nats", nats_cert.cert, nats_cert.key, client_ca=ca.cert) as nats_url,
        Pods(tmp_path) as pods,
    ):
        (grpc_port,) = free_ports(1)
        manifests = render(
            helm,
            values={
                "nats.url": nats_url,
                "nats.tls.caSecret.name": "nats-ca",
                "nats.tls.clientCertSecret.name": "nats-client",
                "controlPlane.ports.grpc": grpc_port,
                "gateway.enabled": False,
            },
        )
        secrets = {
            "meshplane-database": {"url": postgres_server.create_database()},
            "nats-ca": {"ca.crt": ca.cert.read_text()},
            "nats-client": _tls_secret(ca.client("plane"), ca),
        }
        pod_name = "meshplane-5b7c9d8f6-n4t5s"
        plane, cluster = pods.container(manifests, secrets, CONTROL_PLANE, "control-plane", pod_name)
        settings = settings_seen_by_the_plane(plane, cluster)
        assert settings.nats_tls_ca_file is not None and settings.nats_tls_ca_file.read_text() == ca.cert.read_text()
        assert settings.nats_tls_key_file is not None and settings.nats_tls_key_file.is_file()

        pod, _ = await _start_control_plane(pods, pod_name, plane)
        async with MeshClient(f"127.0.0.1:{grpc_port}") as client, client.subscribe("chart-nats-tls") as messages:
            await client.publish("chart-nats-tls", {"over": "nats tls"})
            assert (await asyncio.wait_for(anext(messages), 10)).data == {"over": "nats tls"}
        assert await pod.terminate(within=shutdown_budget(plane.pod, plane.spec)) == 0, pod.logs()


# ---------------------------------------------------------------- TLS values: mutual TLS, HTTPS gateway


def _tls_secret(issued: Issued, ca: TestCA) -> dict[str, str]:
    """A kubernetes.io/tls Secret as cert-manager writes it."""
    return {"tls.crt": issued.cert.read_text(), "tls.key": issued.key.read_text(), "ca.crt": ca.cert.read_text()}


async def test_tls_values_run_as_rendered(helm: Path, gateway_binary: Path, tmp_path: Path) -> None:
    """ci/tls-values.yaml: the plane serves mutual TLS from its Secrets, its probes pass on the plaintext
    health port, SDK clients and agents with certificates get in and plaintext does not; the gateway shows
    its client certificate upstream and serves HTTPS (its probes too) and TLS on its gRPC ingress; with
    gateway.tls.clientCA it requires client certificates as well, and its probes ask the metrics port."""
    ca = TestCA(tmp_path / "pki")
    plane_cert = ca.server("plane", dns=("meshplane.meshplane.svc", "localhost"))
    secrets = {
        "meshplane-tls": _tls_secret(plane_cert, ca),
        "meshplane-client-ca": {"ca.crt": ca.cert.read_text()},
        "meshplane-gateway-client": _tls_secret(ca.client("gateway-client"), ca),
        "meshplane-gateway-tls": _tls_secret(ca.server("gateway"), ca),
    }
    agent_cert = ca.client("agent")
    with_cert = TLS(ca_file=ca.cert, cert_file=agent_cert.cert, key_file=agent_cert.key)
    async with asyncio.timeout(BODY_SECONDS), Pods(tmp_path, gateway_binary=gateway_binary) as pods:
        grpc_port, health_port, http_port, ingress_port, gateway_metrics_port = free_ports(5)
        ports: dict[str, object] = {
            "controlPlane.ports.grpc": grpc_port,
            "controlPlane.ports.health": health_port,
            "gateway.port": http_port,
            "gateway.grpcIngress.port": ingress_port,
            "gateway.metrics.port": gateway_metrics_port,
            "gateway.config.upstream": f"127.0.0.1:{grpc_port}",
        }
        manifests = render(helm, values_files=[CHART / "ci" / "tls-values.yaml"], values=ports)
        _assert_services_reach_ports(manifests)
        pod_name = "meshplane-6c8d5b7f9-t1s9x"
        plane, cluster = pods.container(manifests, secrets, CONTROL_PLANE, "control-plane", pod_name)
        _assert_ports_agree(plane)
        settings = settings_seen_by_the_plane(plane, cluster)
        assert (
            settings.tls_cert_file is not None
            and settings.tls_cert_file.read_text() == secrets["meshplane-tls"]["tls.crt"]
        )
        assert settings.tls_client_ca_file is not None and settings.tls_client_ca_file.is_file()

        pod, ready = await _start_control_plane(pods, pod_name, plane)  # the probes pass on the health port
        address = f"127.0.0.1:{grpc_port}"
        assert ready.startswith(f"{READY_PREFIX}{address} (") and ", tls" in ready, ready
        assert not await run_probe({"grpc": {"port": grpc_port}, "timeoutSeconds": 2}, plane.spec), (
            "the TLS port answered a plaintext health check"
        )
        async with MeshClient(address, timeout=3, tls=TLS(ca_file=ca.cert)) as without_cert:
            with pytest.raises(Unavailable):
                await without_cert.list_tasks(limit=1)

        async with (
            MeshClient(address, tls=with_cert) as client,
            serving(echo_agent(), address, tls=with_cert),
        ):
            assert await (await client.submit("demo.echo", {"via": "mtls"})).result(timeout=15) == {"via": "mtls"}

            container, _ = pods.container(manifests, secrets, GATEWAY, "gateway", "meshplane-gateway-7b6c5d4e3-t2l5s")
            _assert_gateway_reads_its_environment(container, gateway_binary)
            gateway = pods.pod("meshplane-gateway-7b6c5d4e3-t2l5s", container)
            await gateway.start()
            await gateway.wait_for_line(GATEWAY_READY_PREFIX, timeout=30)
            for kind in ("liveness", "readiness"):  # HTTPS probes; ready only once the plane answers over mTLS
                await eventually(lambda kind=kind: gateway.run_probe(kind), timeout=30, message=f"gateway {kind}")

            trusting = ssl.create_default_context(cafile=str(ca.cert))
            status, body = await http_get(
                f"https://127.0.0.1:{http_port}/v1/tasks",
                tls=trusting,
                headers={"Content-Type": "application/json"},
            )
            assert status == 200, body
            task_id = (await client.submit("demo.echo", {"via": "https"})).id
            await eventually(
                lambda: _rest_state(f"https://127.0.0.1:{http_port}/v1/tasks/{task_id}", trusting),
                timeout=30,
                message="the task read back through the HTTPS gateway",
            )
            assert await http_status(f"http://127.0.0.1:{http_port}/healthz") != 200, "plain HTTP was served"
            async with MeshClient(f"127.0.0.1:{ingress_port}", tls=TLS(ca_file=ca.cert)) as through_ingress:
                handle = await through_ingress.submit("demo.echo", {"via": "ingress"})
                assert await handle.result(timeout=15) == {"via": "ingress"}
            # Metrics stay plain HTTP on their own port.
            status, _ = await http_get(f"http://127.0.0.1:{gateway_metrics_port}/metrics")
            assert status == 200
            assert await gateway.terminate(within=shutdown_budget(container.pod, container.spec)) == 0, gateway.logs()

            # The gateway requiring client certificates too: its probes move to the plain metrics port.
            secrets["meshplane-gateway-client-ca"] = {"ca.crt": ca.cert.read_text()}
            with_client_ca = render(
                helm,
                values_files=[CHART / "ci" / "tls-values.yaml"],
                values={**ports, "gateway.tls.clientCA.existingSecret": "meshplane-gateway-client-ca"},
            )
            container, _ = pods.container(
                with_client_ca, secrets, GATEWAY, "gateway", "meshplane-gateway-5d4c3b2a1-m7l4s"
            )
            gateway = pods.pod("meshplane-gateway-5d4c3b2a1-m7l4s", container)
            await gateway.start()
            await gateway.wait_for_line(GATEWAY_READY_PREFIX, timeout=30)
            for kind in ("liveness", "readiness"):
                assert gateway.probe(kind)["httpGet"]["port"] == "metrics", gateway.probe(kind)
                await eventually(lambda kind=kind: gateway.run_probe(kind), timeout=30, message=f"gateway {kind}")
            url = f"https://127.0.0.1:{http_port}/v1/tasks/{task_id}"
            assert await http_status(url, tls=trusting) == 0, "served a client without a certificate"
            showing = ssl.create_default_context(cafile=str(ca.cert))
            rest_client = ca.client("rest-client")
            showing.load_cert_chain(str(rest_client.cert), str(rest_client.key))
            assert await _rest_state(url, showing)
            async with MeshClient(f"127.0.0.1:{ingress_port}", tls=with_cert) as through_ingress:
                handle = await through_ingress.submit("demo.echo", {"via": "ingress with a certificate"})
                assert await handle.result(timeout=15) == {"via": "ingress with a certificate"}

        assert await gateway.terminate(within=shutdown_budget(container.pod, container.spec)) == 0, gateway.logs()
        assert await pod.terminate(within=shutdown_budget(plane.pod, plane.spec)) == 0, pod.logs()


async def _rest_state(url: str, tls: ssl.SSLContext) -> bool:
    status, body = await http_get(url, tls=tls)
    return status == 200 and json.loads(body)["task"]["state"] == "TASK_STATE_SUCCEEDED"
