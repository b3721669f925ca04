"""Every language's conformance agent against a plane that requires mutual TLS (CONTRACT.md, "TLS").

Each test makes a throwaway CA (tests/support/certs.py), starts a plane serving TLS with a certificate
for 127.0.0.1/localhost and requiring client certificates that CA signed, and launches the language's
agent with its TLS settings in the environment only (``MESHPLANE_TLS_*``: the agent's code sets none).
The driver's Mesh talks to the plane over mTLS too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from controlplane.app import ControlPlane
from controlplane.devtools.ports import free_port
from meshplane.v1 import agent_pb2, task_pb2
from tests.conformance.driver import AgentProcess, Agents, Mesh, describe, output, tls_credentials
from tests.conformance.test_conformance import assert_broadcast_round_trip
from tests.support.certs import Issued, TestCA, replace_file
from tests.support.eventually import eventually
from tests.support.plane import running_plane

TLS_ENV = (
    "MESHPLANE_TLS",
    "MESHPLANE_TLS_CA_FILE",
    "MESHPLANE_TLS_CLIENT_CERT_FILE",
    "MESHPLANE_TLS_CLIENT_KEY_FILE",
    "MESHPLANE_TLS_SERVER_NAME",
)
NO_CERT_WINDOW_S = 5.0  # how long an agent without a client certificate is watched not registering


@pytest.fixture(autouse=True)
def no_tls_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agents get exactly the TLS settings a test gives them, whatever the outer environment says."""
    for name in TLS_ENV:
        monkeypatch.delenv(name, raising=False)


class Pki:
    """A CA, the plane's server certificate (127.0.0.1, localhost) and a client certificate it signed."""

    def __init__(self, directory: Path) -> None:
        self.ca = TestCA(directory)
        self.server: Issued = self.ca.server("plane")
        self.client: Issued = self.ca.client("agent")

    def plane_settings(self) -> dict[str, str]:
        return {
            "tls_cert_file": str(self.server.cert),
            "tls_key_file": str(self.server.key),
            "tls_client_ca_file": str(self.ca.cert),
        }

    def agent_env(self, *, client_cert: bool = True) -> dict[str, str]:
        env = {"MESHPLANE_TLS_CA_FILE": str(self.ca.cert)}
        if client_cert:
            env["MESHPLANE_TLS_CLIENT_CERT_FILE"] = str(self.client.cert)
            env["MESHPLANE_TLS_CLIENT_KEY_FILE"] = str(self.client.key)
        return env

    def mesh_credentials(self) -> grpc.ChannelCredentials:
        return tls_credentials(self.ca.cert, self.client.cert, self.client.key)


@asynccontextmanager
async def mtls_plane(tmp_path: Path, agents: Agents) -> AsyncIterator[tuple[Pki, ControlPlane, Mesh]]:
    """A plane requiring client certificates and an mTLS Mesh on it; on the way out the agents are
    stopped and their disconnection recorded before the plane stops (as conftest's ``plane`` does)."""
    pki = Pki(tmp_path / "pki")
    async with (
        running_plane(tmp_path / "plane", **pki.plane_settings()) as plane,
        Mesh(plane.address, credentials=pki.mesh_credentials()) as mesh,
    ):
        try:
            yield pki, plane, mesh
        finally:
            await agents.close()
            await mesh.wait_all_disconnected()


async def instance_or_none(mesh: Mesh, agent: AgentProcess) -> agent_pb2.AgentInstance | None:
    """The agent's instance on the plane, None if there is none (not even its agent: NOT_FOUND)."""
    try:
        return await mesh.instance(agent.name, agent.instance_id)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


@pytest.mark.timeout(90)
async def test_echo_and_broadcast_over_mutual_tls(language: str, agents: Agents, tmp_path: Path) -> None:
    async with mtls_plane(tmp_path, agents) as (pki, plane, mesh):
        agent = await agents.start(plane.address, env=pki.agent_env())

        instance = await mesh.instance(agent.name, agent.instance_id)
        assert instance is not None, agent.describe()
        assert instance.status == agent_pb2.AGENT_INSTANCE_STATUS_CONNECTED, instance
        assert instance.sdk.language == language, instance

        data = {"over": "mtls", "text": "héllo ✓", "list": [1, None, True], "nested": {"a": {}}}
        task = await mesh.run("conf.echo", data)
        assert task.state == task_pb2.TASK_STATE_SUCCEEDED, describe(task)
        assert output(task) == data
        assert task.attempts[-1].agent_instance_id == agent.instance_id

        await assert_broadcast_round_trip(mesh, agent.instance_id, language)
        assert agent.returncode is None, agent.describe()


@pytest.mark.timeout(90)
async def test_given_a_list_of_addresses_the_agent_verifies_the_first(agents: Agents, tmp_path: Path) -> None:
    # No server name: the plane's certificate (127.0.0.1) is verified against the list's first address, not the
    # whole list (which gRPC C-core would take as the name by default).
    async with mtls_plane(tmp_path, agents) as (pki, plane, mesh):
        agent = await agents.start(f"ipv4:{plane.address},{plane.address}", env=pki.agent_env())
        task = await mesh.run("conf.echo", {"over": "a list"})
        assert task.state == task_pb2.TASK_STATE_SUCCEEDED, describe(task)
        assert task.attempts[-1].agent_instance_id == agent.instance_id


@pytest.mark.timeout(90)
async def test_an_agent_without_a_client_certificate_never_registers(
    language: str, agents: Agents, tmp_path: Path
) -> None:
    async with mtls_plane(tmp_path, agents) as (pki, plane, mesh):
        # It trusts the plane's CA but shows no certificate: the plane's handshake turns it away.
        refused = await agents.start(plane.address, env=pki.agent_env(client_cert=False), wait_ready=False)

        async def registered() -> bool:
            return await instance_or_none(mesh, refused) is not None

        with pytest.raises(AssertionError, match="not met within"):
            await eventually(registered, timeout=NO_CERT_WINDOW_S, interval=0.1, message="no-cert agent registered")
        assert await instance_or_none(mesh, refused) is None, refused.describe()
        assert not any(line.startswith("READY") for line in refused.stdout_lines), refused.describe()
        assert refused.returncode is None, refused.describe()  # still there, retrying as its SDK does

        # The control: an agent of the same name with the certificate registers on this same plane (so the
        # plane was reachable and took registrations all along), and still no instance of the first exists.
        accepted = await agents.start(plane.address, name=refused.name, env=pki.agent_env())
        assert await instance_or_none(mesh, accepted) is not None, accepted.describe()
        assert await mesh.instance(refused.name, refused.instance_id) is None, refused.describe()

        # Never connected, it still stops as the contract says: SIGTERM, STOPPED, exit 0.
        refused.terminate()
        assert await refused.wait_exit() == 0, refused.describe()
        assert refused.stdout_lines == ["STOPPED"], refused.describe()


@pytest.mark.timeout(120)
async def test_an_agent_reconnects_with_its_renewed_client_certificate(
    language: str, agents: Agents, tmp_path: Path
) -> None:
    """The agent's certificate files and the plane's client CA are renewed in place (a new CA), then the plane
    restarts on the same address: the agent, configured by the environment only, gets back in only by showing
    the renewed certificate (the old one is no longer trusted)."""
    pki = Pki(tmp_path / "pki")
    renewing = TestCA(tmp_path / "renewing-pki", "renewing")
    files = tmp_path / "mounted"
    files.mkdir()
    client_ca, cert, key = files / "client-ca.crt", files / "agent.crt", files / "agent.key"
    for target, source in ((client_ca, pki.ca.cert), (cert, pki.client.cert), (key, pki.client.key)):
        replace_file(target, source)
    renewed, renewed_mesh = renewing.client("agent-renewed"), renewing.client("mesh-renewed")
    settings = {**pki.plane_settings(), "tls_client_ca_file": str(client_ca), "listen": f"127.0.0.1:{free_port()}"}
    env = {
        "MESHPLANE_TLS_CA_FILE": str(pki.ca.cert),
        "MESHPLANE_TLS_CLIENT_CERT_FILE": str(cert),
        "MESHPLANE_TLS_CLIENT_KEY_FILE": str(key),
    }

    async with (
        running_plane(tmp_path / "plane", **settings) as plane,
        Mesh(plane.address, credentials=pki.mesh_credentials()) as mesh,
    ):
        agent = await agents.start(plane.address, env=env)
        task = await mesh.run("conf.echo", {"before": "renewal"})
        assert task.state == task_pb2.TASK_STATE_SUCCEEDED, describe(task)
        for target, source in ((client_ca, renewing.cert), (cert, renewed.cert), (key, renewed.key)):
            replace_file(target, source)

    renewed_credentials = tls_credentials(pki.ca.cert, renewed_mesh.cert, renewed_mesh.key)
    async with (
        running_plane(tmp_path / "plane", **settings) as plane,
        Mesh(plane.address, credentials=renewed_credentials) as mesh,
    ):
        try:
            task = await mesh.run("conf.echo", {"after": "renewal"}, timeout=60)
            assert task.state == task_pb2.TASK_STATE_SUCCEEDED, f"{describe(task)}\n{agent.describe()}"
            assert task.attempts[-1].agent_instance_id == agent.instance_id
        finally:
            await agents.close()
            await mesh.wait_all_disconnected()
