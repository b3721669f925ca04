"""TLS on the plane's gRPC port, with the Python SDK's clients and agents: server TLS, mutual TLS, the
environment's defaults, and settings the plane refuses to start with (one line naming the setting)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from agent_runtime import TLS, MeshClient, Unavailable
from agent_runtime._tls import TlsFiles
from controlplane.api.tls import TlsSetupError
from controlplane.devtools.ports import free_port
from controlplane.settings import Settings
from meshplane.v1 import task_service_pb2, task_service_pb2_grpc
from tests.sdk.conftest import serving
from tests.sdk.test_client import echo_agent
from tests.support.certs import Issued, TestCA, replace_file
from tests.support.eventually import eventually
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(ca: TestCA) -> Issued:
    return ca.server("plane")


@pytest.fixture
def no_tls_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "MESHPLANE_TLS",
        "MESHPLANE_TLS_CA_FILE",
        "MESHPLANE_TLS_CLIENT_CERT_FILE",
        "MESHPLANE_TLS_CLIENT_KEY_FILE",
        "MESHPLANE_TLS_SERVER_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    yield


def _tls_settings(server: Issued, **more: Any) -> dict[str, Any]:
    return {"tls_cert_file": str(server.cert), "tls_key_file": str(server.key), **more}


async def _refused(client: MeshClient) -> None:
    with pytest.raises(Unavailable):
        await client.list_tasks(limit=1)


@pytest.mark.usefixtures("no_tls_env")
async def test_clients_and_agents_work_over_tls_and_plaintext_is_turned_away(
    tmp_path: Path, ca: TestCA, server: Issued
) -> None:
    async with running_plane(tmp_path / "plane", **_tls_settings(server)) as plane:
        tls = TLS(ca_file=ca.cert)
        async with MeshClient(plane.address, tls=tls) as client, serving(echo_agent(), plane.address, tls=tls):
            handle = await client.submit("demo.echo", {"over": "tls"})
            assert await handle.result(timeout=10) == {"over": "tls"}

        async with MeshClient(plane.address, timeout=3) as plaintext:
            await _refused(plaintext)
        other_ca = TestCA(tmp_path / "other-pki", "other")
        async with MeshClient(plane.address, timeout=3, tls=TLS(ca_file=other_ca.cert)) as untrusting:
            await _refused(untrusting)
        # A certificate names its hosts: the plane's names 127.0.0.1 and localhost, so "plane.test" fails.
        async with MeshClient(plane.address, timeout=3, tls=TLS(ca_file=ca.cert, server_name="plane.test")) as wrong:
            await _refused(wrong)


@pytest.mark.usefixtures("no_tls_env")
async def test_a_client_given_a_list_of_addresses_verifies_the_first(
    tmp_path: Path, ca: TestCA, server: Issued
) -> None:
    # No server name: the plane's certificate (127.0.0.1) is verified against the list's first address, as an
    # agent's is, not against the whole list (which gRPC C-core would take as the name by default).
    async with running_plane(tmp_path / "plane", **_tls_settings(server)) as plane:
        listed = f"ipv4:{plane.address},{plane.address}"
        for connections in (1, 2):
            async with MeshClient(listed, timeout=5, connections=connections, tls=TLS(ca_file=ca.cert)) as client:
                assert await client.list_tasks(limit=1) == []
        # A server name given still wins: the plane's certificate does not name "plane.test".
        named = TLS(ca_file=ca.cert, server_name="plane.test")
        async with MeshClient(listed, timeout=3, tls=named) as wrong:
            await _refused(wrong)


@pytest.mark.usefixtures("no_tls_env")
async def test_a_plane_that_requires_client_certificates_takes_only_those_its_ca_signed(
    tmp_path: Path, ca: TestCA, server: Issued
) -> None:
    agent_cert = ca.client("agent")
    stranger = TestCA(tmp_path / "stranger-pki", "stranger").client("stranger")
    settings = _tls_settings(server, tls_client_ca_file=str(ca.cert))
    async with running_plane(tmp_path / "plane", **settings) as plane:
        with_cert = TLS(ca_file=ca.cert, cert_file=agent_cert.cert, key_file=agent_cert.key)
        async with (
            MeshClient(plane.address, tls=with_cert) as client,
            serving(echo_agent(), plane.address, tls=with_cert),
        ):
            assert await (await client.submit("demo.echo", [1])).result(timeout=10) == [1]

        async with MeshClient(plane.address, timeout=3, tls=TLS(ca_file=ca.cert)) as no_cert:
            await _refused(no_cert)
        signed_elsewhere = TLS(ca_file=ca.cert, cert_file=stranger.cert, key_file=stranger.key)
        async with MeshClient(plane.address, timeout=3, tls=signed_elsewhere) as foreign:
            await _refused(foreign)


@pytest.mark.usefixtures("no_tls_env")
async def test_the_environment_turns_tls_on_and_an_explicit_choice_wins(
    tmp_path: Path, ca: TestCA, server: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_plane(tmp_path / "plane", **_tls_settings(server)) as plane:
        monkeypatch.setenv("MESHPLANE_TLS_CA_FILE", str(ca.cert))
        async with MeshClient(plane.address) as from_env:
            assert await from_env.list_tasks(limit=1) == []
        async with MeshClient(plane.address, timeout=3, tls=False) as plaintext:
            await _refused(plaintext)

    assert TLS.from_env({}) is None
    assert TLS.from_env({"MESHPLANE_TLS": "true"}) == TLS()
    assert TLS.from_env({"MESHPLANE_TLS_CA_FILE": "/ca.pem", "MESHPLANE_TLS_SERVER_NAME": "plane"}) == TLS(
        ca_file="/ca.pem", server_name="plane"
    )
    with pytest.raises(ValueError, match="MESHPLANE_TLS_CLIENT_CERT_FILE and MESHPLANE_TLS_CLIENT_KEY_FILE go"):
        TLS.from_env({"MESHPLANE_TLS_CLIENT_CERT_FILE": "/c.pem"})
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        TLS(cert_file="/c.pem")
    with pytest.raises(ValueError, match=r"cannot read TLS ca_file /no/such\.pem"):
        MeshClient("127.0.0.1:1", tls=TLS(ca_file="/no/such.pem"))


async def test_tls_settings_the_plane_cannot_serve_with_are_refused_naming_the_setting(
    tmp_path: Path, ca: TestCA, server: Issued
) -> None:
    with pytest.raises(ValidationError, match="tls_cert_file and tls_key_file go together"):
        Settings(data_dir=tmp_path, tls_cert_file=str(server.cert))
    with pytest.raises(ValidationError, match="tls_client_ca_file needs tls_cert_file"):
        Settings(data_dir=tmp_path, tls_client_ca_file=str(ca.cert))
    assert Settings(data_dir=tmp_path, tls_cert_file="", tls_key_file="").tls_cert_file is None  # empty: unset

    other_key = ca.client("someone").key
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    for settings, message in (
        (_tls_settings(server, tls_key_file=str(other_key)), "are not a PEM certificate and its key"),
        (_tls_settings(server, tls_cert_file=str(tmp_path / "missing.crt")), "cannot read tls_cert_file"),
        (_tls_settings(server, tls_client_ca_file=str(not_pem)), "tls_client_ca_file .* is not a PEM CA bundle"),
    ):
        with pytest.raises(TlsSetupError, match=message):
            async with running_plane(tmp_path / "refused", **settings):
                pass


@pytest.mark.usefixtures("no_tls_env")
async def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(
    tmp_path: Path, ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    files = tmp_path / "mounted"
    files.mkdir()
    served = Issued(files / "tls.crt", files / "tls.key")
    first = ca.server("plane-first")
    replace_file(served.cert, first.cert)
    replace_file(served.key, first.key)
    renewing_ca = TestCA(tmp_path / "renewing-pki", "renewing")
    renewed = renewing_ca.server("plane-renewed")

    async with (
        running_plane(tmp_path / "plane", **_tls_settings(served)) as plane,
        MeshClient(plane.address, tls=TLS(ca_file=ca.cert)) as client,
    ):
        assert await client.list_tasks(limit=1) == []

        # Half a renewal (the new key, the old certificate) cannot be served: the old pair stays in use.
        replace_file(served.key, renewed.key)
        async with MeshClient(plane.address, timeout=3, tls=TLS(ca_file=ca.cert)) as during:
            assert await during.list_tasks(limit=1) == []
        assert "TLS files changed but cannot be served" in caplog.text

        replace_file(served.cert, renewed.cert)
        async with MeshClient(plane.address, tls=TLS(ca_file=renewing_ca.cert)) as after:
            assert await after.list_tasks(limit=1) == []
        async with MeshClient(plane.address, timeout=3, tls=TLS(ca_file=ca.cert)) as trusting_the_old:
            await _refused(trusting_the_old)
        assert await client.list_tasks(limit=1) == [], "a connection made before the renewal was dropped"


@pytest.mark.usefixtures("no_tls_env")
async def test_health_checks_are_also_served_in_plaintext_where_asked_and_nothing_else_is(
    tmp_path: Path, ca: TestCA, server: Issued
) -> None:
    settings = _tls_settings(server, tls_client_ca_file=str(ca.cert), health_listen="127.0.0.1:0")
    async with running_plane(tmp_path / "plane", **settings) as plane:
        assert plane.health_address != plane.address
        async with grpc.aio.insecure_channel(plane.health_address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "meshplane.v1.TaskService"):
                answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await task_service_pb2_grpc.TaskServiceStub(channel).ListTasks(
                    task_service_pb2.ListTasksRequest(), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED

            await plane.drain(grace=0)
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        health_address = plane.health_address
    async with grpc.aio.insecure_channel(health_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as stopped:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert stopped.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.usefixtures("no_tls_env")
async def test_an_agent_reconnects_with_its_renewed_client_certificate(
    tmp_path: Path, ca: TestCA, server: Issued
) -> None:
    """The agent's certificate and the plane's client CA are renewed in place (a new CA), then the plane restarts:
    the agent reconnects showing the renewed certificate (the old one is no longer trusted)."""
    renewing_ca = TestCA(tmp_path / "renewing-pki", "renewing")
    files = tmp_path / "mounted"
    files.mkdir()
    client_ca = files / "client-ca.crt"
    agent_files = Issued(files / "agent.crt", files / "agent.key")
    first = ca.client("agent-first")
    for target, source in ((client_ca, ca.cert), (agent_files.cert, first.cert), (agent_files.key, first.key)):
        replace_file(target, source)
    admin = ca.client("admin")
    renewed_admin = renewing_ca.client("admin-renewed")
    renewed = renewing_ca.client("agent-renewed")
    settings = _tls_settings(server, tls_client_ca_file=str(client_ca), listen=f"127.0.0.1:{free_port()}")

    agent = echo_agent()
    agent_tls = TLS(ca_file=ca.cert, cert_file=agent_files.cert, key_file=agent_files.key)
    serving_task: asyncio.Future[None] | None = None
    try:
        async with (
            running_plane(tmp_path / "plane", **settings) as plane,
            MeshClient(plane.address, tls=TLS(ca_file=ca.cert, cert_file=admin.cert, key_file=admin.key)) as client,
        ):
            serving_task = asyncio.ensure_future(agent.serve(plane.address, tls=agent_tls))
            await agent.wait_connected(timeout=10)
            assert await (await client.submit("demo.echo", "first")).result(timeout=10) == "first"
            renewal = ((client_ca, renewing_ca.cert), (agent_files.cert, renewed.cert), (agent_files.key, renewed.key))
            for target, source in renewal:
                replace_file(target, source)

        # The restarted plane trusts only the renewing CA: the agent gets back in only with its renewed files.
        renewed_tls = TLS(ca_file=ca.cert, cert_file=renewed_admin.cert, key_file=renewed_admin.key)
        async with (
            running_plane(tmp_path / "plane", **settings) as plane,
            MeshClient(plane.address, tls=renewed_tls) as client,
        ):
            assert await (await client.submit("demo.echo", "renewed")).result(timeout=30) == "renewed"
    finally:
        await agent.stop()
        if serving_task is not None:
            await asyncio.wait_for(serving_task, 10)


@pytest.mark.usefixtures("no_tls_env")
async def test_a_client_takes_renewed_files_after_a_call_found_the_plane_unavailable(
    tmp_path: Path, ca: TestCA, server: Issued
) -> None:
    files = tmp_path / "mounted"
    files.mkdir()
    mine = Issued(files / "client.crt", files / "client.key")
    stranger = TestCA(tmp_path / "stranger-pki", "stranger").client("stranger")
    replace_file(mine.cert, stranger.cert)
    replace_file(mine.key, stranger.key)
    trusted = ca.client("trusted")
    settings = _tls_settings(server, tls_client_ca_file=str(ca.cert))
    async with (
        running_plane(tmp_path / "plane", **settings) as plane,
        MeshClient(
            plane.address, timeout=3, tls=TLS(ca_file=ca.cert, cert_file=mine.cert, key_file=mine.key)
        ) as client,
    ):
        await _refused(client)  # a certificate the plane does not trust
        replace_file(mine.cert, trusted.cert)
        replace_file(mine.key, trusted.key)
        await _refused(client)  # the connection made with the old files; this failure reads them again
        assert await client.list_tasks(limit=1) == []


def test_renewed_files_that_do_not_load_keep_the_ones_in_use(
    tmp_path: Path, ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    files = tmp_path / "mounted"
    files.mkdir()
    mine = Issued(files / "client.crt", files / "client.key")
    first, second = ca.client("first"), ca.client("second")
    replace_file(mine.cert, first.cert)
    replace_file(mine.key, first.key)
    tls_files = TlsFiles(TLS(ca_file=ca.cert, cert_file=mine.cert, key_file=mine.key))
    in_use = tls_files.credentials
    assert not tls_files.renew()  # unchanged

    replace_file(mine.cert, second.cert)  # half a renewal: the new certificate, the old key
    assert not tls_files.renew() and not tls_files.renew()
    assert tls_files.credentials is in_use
    assert caplog.text.count("TLS files changed but cannot be used") == 1, caplog.text

    replace_file(mine.key, second.key)
    assert tls_files.renew() and tls_files.credentials is not in_use
    assert not tls_files.renew()


@pytest.mark.usefixtures("no_tls_env")
async def test_an_agent_refused_by_a_mutual_tls_plane_says_where_to_look(
    tmp_path: Path, ca: TestCA, server: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_plane(tmp_path / "plane", **_tls_settings(server, tls_client_ca_file=str(ca.cert))) as plane:
        agent = echo_agent()
        serving_task = asyncio.ensure_future(agent.serve(plane.address, tls=TLS(ca_file=ca.cert)))
        try:
            await eventually(
                lambda: "showing no client certificate: a plane that requires one closes the connection" in caplog.text,
                timeout=20,
                message="the reconnect warning's TLS hint",
            )
        finally:
            await agent.stop()
            await asyncio.wait_for(serving_task, 10)

    # Nothing listening says so itself: no hint then.
    caplog.clear()
    agent = echo_agent()
    serving_task = asyncio.ensure_future(agent.serve(f"127.0.0.1:{free_port()}", tls=TLS(ca_file=ca.cert)))
    try:
        await eventually(lambda: "Connection refused" in caplog.text, timeout=20, message="the refused connection")
        assert "over TLS" not in caplog.text, caplog.text
    finally:
        await agent.stop()
        await asyncio.wait_for(serving_task, 10)


@pytest.mark.usefixtures("no_tls_env")
async def test_closing_a_client_does_not_wait_for_calls_left_on_channels_of_renewed_files(
    tmp_path: Path, ca: TestCA, server: Issued
) -> None:
    trusted = tmp_path / "ca.crt"
    trusted.write_bytes(ca.cert.read_bytes())
    async with running_plane(tmp_path / "plane", **_tls_settings(server)) as plane:
        client = MeshClient(plane.address, tls=TLS(ca_file=trusted))
        task = await client.submit("nobody.serves.this", {})
        events = client.watch(task.id)
        await asyncio.wait_for(anext(events), 10)  # the watch stays open on the first channel, waiting for more

        trusted.write_bytes(ca.cert.read_bytes() + b"\n")  # renewed: the same CA, in a file that changed
        assert client._connection.renew_tls()
        assert [t.id for t in await client.list_tasks(limit=1)] == [task.id]  # on a channel with the new files
        # Closing cancels the watch left on the retired channel instead of waiting out its grace (30 s).
        await asyncio.wait_for(client.close(), 10)
        await events.aclose()


@pytest.mark.usefixtures("no_tls_env")
async def test_a_client_is_told_what_a_tls_mismatch_looks_like(tmp_path: Path, ca: TestCA, server: Issued) -> None:
    """A call that fails on TLS says so, instead of only "unreachable": a plane certificate this side refuses is
    named with OpenSSL's reason; a plane closing the connection (no client certificate, or plaintext to a TLS
    plane) comes with what that would mean."""
    other = TestCA(tmp_path / "other-pki")
    settings = _tls_settings(server, tls_client_ca_file=str(ca.cert))
    async with running_plane(tmp_path / "plane", **settings) as plane:
        said: dict[str, str] = {}
        for case, tls in (("wrong CA", TLS(ca_file=other.cert)), ("no cert", TLS(ca_file=ca.cert)), ("plain", False)):
            async with MeshClient(plane.address, tls=tls, timeout=10) as client:
                with pytest.raises(Unavailable) as refused:
                    await client.list_tasks(limit=1)
                said[case] = str(refused.value)
    assert said["wrong CA"] == (
        f"TLS handshake with the control plane at {plane.address} failed: "
        "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"
    )
    assert said["no cert"].startswith(f"control plane unreachable at {plane.address} (over TLS, showing no client")
    assert said["plain"] == (
        f"control plane unreachable at {plane.address} (it closed the connection: a plane serving TLS does that to "
        "plaintext; set MESHPLANE_TLS_CA_FILE)"
    )
