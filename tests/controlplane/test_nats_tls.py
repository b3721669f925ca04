"""TLS to an external NATS (MESHPLANE_NATS_TLS_*): a plane trusting a private CA, showing a client certificate
to a server that requires one, carries channel messages through it; bad settings stop it naming the setting."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent_runtime import MeshClient
from controlplane.bus.nats_tls import NatsTlsError
from controlplane.settings import Settings
from tests.support.certs import TestCA
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
