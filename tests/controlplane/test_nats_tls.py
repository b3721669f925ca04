"""TLS to an external NATS (MESHPLANE_NATS_TLS_*): a plane trusting a private CA, showing a client certificate
to a server that requires one, carries channel messages through it, and shows a renewed certificate when it
reconnects; bad settings stop it naming the setting."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent_runtime import MeshClient
from controlplane.bus.nats_tls import NatsTls, NatsTlsError
from controlplane.devtools.ports import free_port
from controlplane.settings import Settings
from tests.support.certs import TestCA, replace_file
from tests.support.eventually import eventually
from tests.support.nats import tls_nats_server
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


async def test_a_plane_reaches_nats_over_mutual_tls_with_a_private_ca(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    nats_cert, plane_cert = ca.server("nats"), ca.client("plane")
    async with tls_nats_server(tmp_path / "nats", nats_cert.cert, nats_cert.key, client_ca=ca.cert) as url:
        settings: dict[str, Any] = {
            "nats_url": url,
            "nats_tls_ca_file": str(ca.cert),
            "nats_tls_cert_file": str(plane_cert.cert),
            "nats_tls_key_file": str(plane_cert.key),
        }
        async with running_plane(tmp_path / "plane", **settings) as plane, MeshClient(plane.address) as client:
            assert plane.bus.client.connected_url is not None and plane.bus.client.connected_url.scheme == "tls"
            async with client.subscribe("over-tls") as subscription:
                await client.publish("over-tls", {"carried": "by NATS over TLS"})
                message = await asyncio.wait_for(anext(subscription), 10)
            assert message.data == {"carried": "by NATS over TLS"}


async def _round_trip(client: MeshClient, channel: str) -> None:
    async with client.subscribe(channel) as subscription:
        await client.publish(channel, {"on": channel})
        message = await asyncio.wait_for(anext(subscription), 10)
    assert message.data == {"on": channel}


async def test_a_renewed_nats_client_certificate_is_shown_when_the_plane_reconnects(tmp_path: Path) -> None:
    """The plane's NATS client certificate is renewed (a new CA) and NATS restarts trusting only that CA: the
    plane reconnects showing the renewed certificate, and channel messages flow again."""
    ca, renewing = TestCA(tmp_path / "pki"), TestCA(tmp_path / "renewing-pki", "renewing")
    nats_cert = ca.server("nats")
    files = tmp_path / "mounted"
    files.mkdir()
    cert, key = files / "tls.crt", files / "tls.key"
    first, renewed = ca.client("plane"), renewing.client("plane-renewed")
    replace_file(cert, first.cert)
    replace_file(key, first.key)
    port = free_port()
    settings: dict[str, Any] = {
        "nats_url": f"tls://127.0.0.1:{port}",
        "nats_tls_ca_file": str(ca.cert),
        "nats_tls_cert_file": str(cert),
        "nats_tls_key_file": str(key),
    }
    async with contextlib.AsyncExitStack() as first_nats:
        await first_nats.enter_async_context(
            tls_nats_server(tmp_path / "nats-1", nats_cert.cert, nats_cert.key, client_ca=ca.cert, port=port)
        )
        async with running_plane(tmp_path / "plane", **settings) as plane, MeshClient(plane.address) as client:
            await _round_trip(client, "before-renewal")
            replace_file(cert, renewed.cert)
            replace_file(key, renewed.key)
            await first_nats.aclose()
            async with tls_nats_server(
                tmp_path / "nats-2", nats_cert.cert, nats_cert.key, client_ca=renewing.cert, port=port
            ):
                await eventually(
                    lambda: plane.bus.connected and plane.signal_bus.connected,
                    timeout=20,
                    message="the plane reconnected to NATS with its renewed certificate",
                )
                await _round_trip(client, "after-renewal")


async def test_nats_tls_settings_the_plane_cannot_use_are_refused_naming_the_setting(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    client = ca.client("plane")
    with pytest.raises(ValidationError, match="nats_tls_cert_file and nats_tls_key_file go together"):
        Settings(data_dir=tmp_path, nats_url="tls://nats:4222", nats_tls_cert_file=str(client.cert))
    with pytest.raises(ValidationError, match="nats_tls_\\* settings need nats_url"):
        Settings(data_dir=tmp_path, nats_tls_ca_file=str(ca.cert))

    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    other_key = ca.client("someone").key
    for settings, message in (
        ({"nats_tls_ca_file": str(not_pem)}, "nats_tls_ca_file .* is not a readable PEM CA bundle"),
        ({"nats_tls_ca_file": str(tmp_path / "missing.pem")}, "nats_tls_ca_file .* is not a readable PEM CA bundle"),
        (
            {"nats_tls_cert_file": str(client.cert), "nats_tls_key_file": str(other_key)},
            "nats_tls_cert_file .* and nats_tls_key_file .* are not a readable PEM certificate and its key",
        ),
    ):
        with pytest.raises(NatsTlsError, match=message):
            async with running_plane(tmp_path / "refused", nats_url="tls://127.0.0.1:1", **settings):
                pass


def test_renewed_nats_files_that_do_not_load_keep_the_ones_in_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = TestCA(tmp_path / "pki")
    files = tmp_path / "mounted"
    files.mkdir()
    cert, key = files / "tls.crt", files / "tls.key"
    first, second = ca.client("first"), ca.client("second")
    replace_file(cert, first.cert)
    replace_file(key, first.key)
    tls = NatsTls(ca.cert, cert, key)
    assert not tls.refresh()  # unchanged

    replace_file(cert, second.cert)  # half a renewal: the new certificate, the old key
    assert not tls.refresh() and not tls.refresh()
    assert caplog.text.count("NATS TLS files changed but cannot be used") == 1, caplog.text

    replace_file(key, second.key)
    assert tls.refresh()
    assert not tls.refresh()
