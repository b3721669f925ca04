"""TLS to the control plane: whom to trust, and the certificate to show when the plane asks for one (mTLS).

Without a `TLS` given, the environment decides: ``MESHPLANE_TLS_CA_FILE`` (trust that CA),
``MESHPLANE_TLS_CLIENT_CERT_FILE`` with ``MESHPLANE_TLS_CLIENT_KEY_FILE`` (show that certificate), or
``MESHPLANE_TLS=true`` (trust the system's roots) turn TLS on; ``MESHPLANE_TLS_SERVER_NAME`` names the host to
verify. Nothing set: plaintext, as a plane without ``MESHPLANE_TLS_CERT_FILE`` serves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

_TRUE = {"1", "true"}  # as the Go and TypeScript SDKs read it


@dataclass(frozen=True, slots=True)
class TLS:
    """TLS settings for a client or an agent: ``ca_file`` (PEM roots; None: the system's), ``cert_file`` and
    ``key_file`` (a client certificate, both or neither), ``server_name`` (the name to verify instead of the
    target's host)."""

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TLS cert_file and key_file go together: give both, or neither")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TLS | None:
        """The TLS the environment asks for, or None for plaintext."""
        env = os.environ if env is None else env
        ca_file = env.get("MESHPLANE_TLS_CA_FILE") or None
        cert_file = env.get("MESHPLANE_TLS_CLIENT_CERT_FILE") or None
        key_file = env.get("MESHPLANE_TLS_CLIENT_KEY_FILE") or None
        wanted = env.get("MESHPLANE_TLS", "").strip().lower() in _TRUE
        if not (wanted or ca_file or cert_file or key_file):
            return None
        if (cert_file is None) != (key_file is None):
            raise ValueError(
                "MESHPLANE_TLS_CLIENT_CERT_FILE and MESHPLANE_TLS_CLIENT_KEY_FILE go together: set both, or neither"
            )
        return cls(ca_file, cert_file, key_file, env.get("MESHPLANE_TLS_SERVER_NAME") or None)

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials (the files are read now: a missing one raises, naming it)."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "ca_file"),
            private_key=_read(self.key_file, "key_file"),
            certificate_chain=_read(self.cert_file, "cert_file"),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        if not self.server_name:
            return []
        return [("grpc.ssl_target_name_override", self.server_name), ("grpc.default_authority", self.server_name)]


def resolve(tls: TLS | bool | None) -> TLS | None:
    """What a ``tls=`` argument means: a TLS as given; True for the system's roots; False for plaintext; None
    for what the environment says."""
    if tls is None:
        return TLS.from_env()
    if tls is True:
        return TLS()
    if tls is False:
        return None
    return tls


def _read(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from exc
