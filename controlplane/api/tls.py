"""TLS on the plane's gRPC port: the server's certificate, and the clients' CA when it requires theirs (mTLS).

The files are read and checked once, at start-up (`ssl` loads them as grpc would): a missing file, a key that
is not the certificate's, or a CA bundle that is no PEM stops the plane with a line naming the setting.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import grpc

from controlplane.settings import Settings


class TlsSetupError(OSError):
    """A TLS setting the plane cannot serve with (the message names it)."""


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The gRPC port's credentials: None for plaintext (no tls_cert_file)."""
    cert, key, client_ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    if cert is None or key is None:
        return None
    chain, private_key = _read(cert, "tls_cert_file"), _read(key, "tls_key_file")
    _check(
        lambda context: context.load_cert_chain(cert, key),
        f"tls_cert_file {cert} and tls_key_file {key} are not a PEM certificate and its key",
    )
    roots = None
    if client_ca is not None:
        roots = _read(client_ca, "tls_client_ca_file")
        _check(
            lambda context: context.load_verify_locations(cafile=client_ca),
            f"tls_client_ca_file {client_ca} is not a PEM CA bundle",
        )
    return grpc.ssl_server_credentials([(private_key, chain)], root_certificates=roots, require_client_auth=bool(roots))


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsSetupError(f"cannot read {setting} {path}: {exc.strerror or exc}") from exc


def _check(load: Callable[[ssl.SSLContext], None], problem: str) -> None:
    """Load the files as grpc will (`load` into an `ssl` context); `problem` (and why) if they do not load."""
    try:
        load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    except ssl.SSLError as exc:
        raise TlsSetupError(f"{problem} ({exc.reason})") from exc
