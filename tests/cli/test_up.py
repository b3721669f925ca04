"""`meshplane up`: ready line, JSON logs, serving through the CLI, SIGTERM -> graceful exit 0; what it says when
it cannot start (a data dir in use, NATS or the database unreachable), and SIGTERM while it waits for NATS."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controlplane.cli.gateway import find_gateway
from tests.cli.conftest import MESHPLANE, Mesh, cli_env, run_cli, start_mesh
from tests.support.certs import TestCA
from tests.support.eventually import eventually
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(120)


def test_up_serves_until_sigterm_and_logs_json(tmp_path: Path) -> None:
    env = cli_env(MESHPLANE_LOG_FORMAT="json", MESHPLANE_GATEWAY_BIN=str(tmp_path / "no-gateway"))
    mesh = start_mesh(tmp_path / "data", env=env)
    try:
        assert mesh.ready_line == (
            f"meshplane ready: grpc {mesh.address} (data {tmp_path / 'data'}), "
            "demo agent: demo.echo demo.sleep demo.flaky"
        )
        result = mesh.cli("task", "submit", "demo.flaky", "--input", '{"failures": 1}', "--wait")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"attempt": 2}
    finally:
        code = mesh.stop()
    assert code == 0

    records = [json.loads(line) for line in mesh.log.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    failure = next(r for r in records if r["logger"] == "agent_runtime.task" and "FlakyError" in r["message"])
    assert failure["level"] == "WARNING" and len(failure["task_id"]) == 26 and failure["attempt"] == 1
    assert any(r["message"].startswith("REST gateway not built") for r in records)
    assert records[-1]["message"] == "meshplane stopped"


async def test_up_turns_not_serving_as_soon_as_sigterm_comes_while_its_demo_agent_drains(tmp_path: Path) -> None:
    """Readiness fails at once (clients go elsewhere), not after the demo agent's drain: the plane's drain and
    the demo agent's run together."""
    mesh = start_mesh(tmp_path / "data")
    try:
        task_id = mesh.cli("task", "submit", "demo.sleep", "--input", '{"seconds": 8}').stdout.strip()
        await eventually(lambda: _task_state(mesh, task_id) == "TASK_STATE_RUNNING")
        mesh.process.send_signal(signal.SIGTERM)
        async with grpc.aio.insecure_channel(mesh.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def not_serving() -> bool:
                answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
                return bool(answer.status == health_pb2.HealthCheckResponse.NOT_SERVING)

            await eventually(not_serving, message="health NOT_SERVING after SIGTERM")
        assert _task_state(mesh, task_id) == "TASK_STATE_RUNNING", "the demo agent still works on its task"
        assert mesh.process.wait(timeout=60) == 0
    finally:
        mesh.stop()


def _task_state(mesh: Mesh, task_id: str) -> str:
    result = mesh.cli("task", "get", task_id, "-o", "json")
    return str(json.loads(result.stdout)["state"]) if result.returncode == 0 else ""


def test_up_starts_the_rest_gateway_when_it_is_built(gateway_binary: Path, tmp_path: Path) -> None:
    assert find_gateway() == gateway_binary  # where `make gateway-build` puts it is where `up` looks
    mesh = start_mesh(tmp_path / "data", env=cli_env(), demo=False)
    try:
        assert ", rest http://127.0.0.1:" in mesh.ready_line
        url = mesh.ready_line.split(", rest ")[1].split(",")[0]
        submitted = mesh.cli("task", "submit", "nobody.serves.this", "--input", '{"via": "grpc"}').stdout.strip()
        with urllib.request.urlopen(f"{url}/v1/tasks/{submitted}", timeout=10) as response:
            task = json.loads(response.read())["task"]
        assert task["id"] == submitted and task["input"]["json"] == {"via": "grpc"}
    finally:
        assert mesh.stop() == 0


def test_up_serves_tls_to_the_cli_its_demo_agent_and_its_gateway(gateway_binary: Path, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.server("plane")
    tls = {"MESHPLANE_TLS_CERT_FILE": str(server.cert), "MESHPLANE_TLS_KEY_FILE": str(server.key)}
    trust = {"MESHPLANE_TLS_CA_FILE": str(ca.cert)}
    mesh = start_mesh(tmp_path / "data", env=cli_env(**tls, **trust))
    try:
        assert f"grpc {mesh.address} (data {tmp_path / 'data'}, tls), demo agent:" in mesh.ready_line
        # The CLI over TLS (the environment's CA), to the demo agent that connected over TLS too.
        waited = run_cli("task", "submit", "demo.echo", "--input", '{"over": "tls"}', "--wait", target=None,
                         env=cli_env(mesh.address, **trust))  # fmt: skip
        assert (waited.returncode, json.loads(waited.stdout or "null")) == (0, {"over": "tls"}), waited.stderr
        plaintext = run_cli("task", "ls", target=mesh.address, timeout=60)
        assert plaintext.returncode == 1 and plaintext.stderr.startswith("error: "), plaintext.stderr
        # The REST gateway `up` started dials the plane with TLS.
        url = mesh.ready_line.split(", rest ")[1].split(",")[0]
        with urllib.request.urlopen(f"{url}/v1/tasks?capability=demo.echo", timeout=10) as response:
            assert [t["state"] for t in json.loads(response.read())["tasks"]] == ["TASK_STATE_SUCCEEDED"]
    finally:
        assert mesh.stop() == 0


def test_up_under_mutual_tls_shows_the_environments_client_certificate(gateway_binary: Path, tmp_path: Path) -> None:
    """A plane requiring client certificates: `up`'s demo agent and gateway show MESHPLANE_TLS_CLIENT_CERT_FILE's;
    without one, `up` serves gRPC only and says why."""
    ca = TestCA(tmp_path / "pki")
    server, client = ca.server("plane"), ca.client("up")
    tls = {
        "MESHPLANE_TLS_CERT_FILE": str(server.cert),
        "MESHPLANE_TLS_KEY_FILE": str(server.key),
        "MESHPLANE_TLS_CLIENT_CA_FILE": str(ca.cert),
        "MESHPLANE_TLS_CA_FILE": str(ca.cert),
    }
    certificate = {"MESHPLANE_TLS_CLIENT_CERT_FILE": str(client.cert), "MESHPLANE_TLS_CLIENT_KEY_FILE": str(client.key)}
    mesh = start_mesh(tmp_path / "data", env=cli_env(**tls, **certificate))
    try:
        assert ", demo agent:" in mesh.ready_line and ", rest http://127.0.0.1:" in mesh.ready_line, mesh.ready_line
        waited = run_cli("task", "submit", "demo.echo", "--input", '{"over": "mtls"}', "--wait", target=None,
                         env=cli_env(mesh.address, **tls, **certificate))  # fmt: skip
        assert (waited.returncode, json.loads(waited.stdout or "null")) == (0, {"over": "mtls"}), waited.stderr
        url = mesh.ready_line.split(", rest ")[1].split(",")[0]
        with urllib.request.urlopen(f"{url}/v1/tasks?capability=demo.echo", timeout=10) as response:
            assert [t["state"] for t in json.loads(response.read())["tasks"]] == ["TASK_STATE_SUCCEEDED"]
    finally:
        assert mesh.stop() == 0

    mesh = start_mesh(tmp_path / "data", env=cli_env(**tls), demo=False)
    try:
        assert ", rest " not in mesh.ready_line, mesh.ready_line
    finally:
        assert mesh.stop() == 0
    assert "the gateway has none to show (MESHPLANE_TLS_CLIENT_CERT_FILE" in mesh.log.read_text()


def test_up_without_a_gateway_says_so_and_carries_on(tmp_path: Path) -> None:
    mesh = start_mesh(tmp_path / "data", env=cli_env(MESHPLANE_GATEWAY_BIN=str(tmp_path / "none")), demo=False)
    try:
        assert mesh.ready_line == f"meshplane ready: grpc {mesh.address} (data {tmp_path / 'data'})"
        assert mesh.cli("agents", "ls").stdout.strip() == "no agents"
    finally:
        assert mesh.stop() == 0
    assert "REST gateway not built" in mesh.log.read_text()


def test_up_serves_grpc_only_when_the_built_gateway_is_turned_off(gateway_binary: Path, tmp_path: Path) -> None:
    http_port = free_port()
    mesh = start_mesh(
        tmp_path / "data", "--no-gateway", "--http-listen", f"127.0.0.1:{http_port}", env=cli_env(), demo=False
    )
    try:
        assert mesh.ready_line == f"meshplane ready: grpc {mesh.address} (data {tmp_path / 'data'})"
        assert mesh.cli("agents", "ls").stdout.strip() == "no agents"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/tasks", timeout=5)
    finally:
        assert mesh.stop() == 0
    assert "REST gateway turned off" in mesh.log.read_text()


def test_up_refuses_a_grpc_ingress_with_the_gateway_turned_off(tmp_path: Path) -> None:
    env = cli_env(MESHPLANE_GATEWAY="off", MESHPLANE_GRPC_INGRESS_LISTEN="127.0.0.1:0")
    result = run_cli("up", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", target=None, env=env)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("the gRPC ingress is served by the gateway, which is turned off (--no-gateway)")
    )


def test_up_fails_when_the_gateway_cannot_serve_the_http_address_it_was_given(
    gateway_binary: Path, tmp_path: Path
) -> None:
    """An address given with --http-listen is a promise of REST there: a busy port stops `up` (exit 1, the plane
    stopped again), rather than a ready line without REST."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        result = run_cli(
            *("up", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--http-listen", taken),
            target=None,
            env=cli_env(),
        )
    assert result.returncode == 1, result.stderr
    assert "meshplane ready" not in result.stdout
    assert result.stderr.splitlines()[-1].startswith(f"error: the REST gateway did not start on {taken}: ")
    assert "address already in use" in result.stderr  # the gateway's own reason, logged above
    assert "meshplane stopped" in result.stderr


def test_up_names_a_gateway_setting_it_does_not_know(tmp_path: Path) -> None:
    env = cli_env(MESHPLANE_GATEWAY="maybe")
    result = run_cli("up", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", target=None, env=env)
    assert result.returncode == 2
    assert "MESHPLANE_GATEWAY must be on or off (got 'maybe')" in result.stderr


def test_up_serves_the_grpc_ingress_when_asked(gateway_binary: Path, tmp_path: Path) -> None:
    mesh = start_mesh(tmp_path / "data", "--grpc-ingress-listen", "127.0.0.1:0", env=cli_env())
    try:
        assert ", grpc ingress 127.0.0.1:" in mesh.ready_line
        ingress = mesh.ready_line.split(", grpc ingress ")[1].split(",")[0]
        result = run_cli("task", "submit", "demo.echo", "--input", '{"via": "ingress"}', "--wait", target=ingress)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"via": "ingress"}
    finally:
        assert mesh.stop() == 0


def test_up_shows_the_gateway_metrics_address_when_they_are_asked_for(gateway_binary: Path, tmp_path: Path) -> None:
    mesh = start_mesh(tmp_path / "data", env=cli_env(MESHPLANE_GATEWAY_METRICS_LISTEN="127.0.0.1:0"), demo=False)
    try:
        assert ", gateway metrics http://127.0.0.1:" in mesh.ready_line
        rest = mesh.ready_line.split(", rest ")[1].split(",")[0]
        metrics = mesh.ready_line.split(", gateway metrics ")[1].split(",")[0]
        with urllib.request.urlopen(f"{rest}/healthz", timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(metrics, timeout=10) as response:
            text = response.read().decode()
        assert 'meshplane_gateway_http_requests_total{code="200",method="GET"} 1' in text
    finally:
        assert mesh.stop() == 0


def test_up_refuses_a_grpc_ingress_without_a_gateway(tmp_path: Path) -> None:
    env = cli_env(MESHPLANE_GATEWAY_BIN=str(tmp_path / "none"), MESHPLANE_GRPC_INGRESS_LISTEN="127.0.0.1:0")
    result = subprocess.run(
        [MESHPLANE, "up", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    assert "the gRPC ingress is served by the gateway, which is not built" in result.stderr


def _up_without_gateway(tmp_path: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`meshplane up` run to its end (for the cases where it does not start), no gateway found."""
    return run_cli(
        *("up", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *extra),
        target=None,
        env=cli_env(MESHPLANE_GATEWAY_BIN=str(tmp_path / "none")),
    )


def test_up_refuses_a_data_dir_another_plane_is_using_in_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_mesh(data_dir, env=cli_env(MESHPLANE_GATEWAY_BIN=str(tmp_path / "none")), demo=False)
    try:
        second = _up_without_gateway(tmp_path, data_dir)
        assert second.returncode == 1  # a failure, not a usage error
        assert second.stderr.splitlines()[-1] == (
            f"error: the control plane did not start: data dir {data_dir} is in use by another control plane "
            f"(pid {first.process.pid}): give each plane its own data dir, or run replicas on one PostgreSQL and "
            "NATS (--database-url, --nats-url)"
        )
        assert first.cli("agents", "ls").stdout.strip() == "no agents"  # the first one serves on
    finally:
        assert first.stop() == 0


async def test_up_waiting_for_nats_says_so_once_and_stops_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    log = data_dir / "up.log"
    up = [MESHPLANE, "up", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*up, "--nats-url", f"nats://127.0.0.1:{free_port()}"],  # nothing listens there
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=cli_env(MESHPLANE_GATEWAY_BIN=str(tmp_path / "none")),
        )
    try:
        await eventually(lambda: log.read_text().count("controlplane.bus.nats_bus") >= 1, message="the retry line")
        await asyncio.sleep(1.2)  # NATS is tried twice a second: a couple more attempts, still one line
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert text.count("NATS unreachable, retrying: ") == 1 and "NATS error" not in text
    assert text.rstrip().endswith("stopped while starting")


def test_up_names_a_database_it_cannot_reach_without_its_password(tmp_path: Path) -> None:
    port = free_port()
    database_url = f"postgresql+asyncpg://meshplane:secret@127.0.0.1:{port}/mesh"
    result = _up_without_gateway(tmp_path, tmp_path / "data", "--database-url", database_url)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: the control plane did not start: cannot reach the database "
        f"postgresql+asyncpg://meshplane:***@127.0.0.1:{port}/mesh ([Errno 111] Connection refused)"
    )
