"""TLS on the plane's gRPC port: the server's certificate, and the clients' CA when it requires theirs (mTLS).

The files are read and checked once, at start-up (`ssl` loads them as grpc would): a missing file, a key that
is not the certificate's, or a CA bundle that is no PEM stops the plane with a line naming the setting.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from controlplane.settings import Settings


class TlsSetupError(OSError):
    """A TLS setting the plane cannot serve with (the message names it)."""


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The gRPC port's credentials: None for plaintext (no tls_cert_file)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    _check_pair(settings.tls_cert_file, settings.tls_key_file)
    chain = _read(settings.tls_cert_file, "tls_cert_file")
    key = _read(settings.tls_key_file, "tls_key_file")
    client_ca = None
    if settings.tls_client_ca_file is not None:
        _check_ca(settings.tls_client_ca_file)
        client_ca = _read(settings.tls_client_ca_file, "tls_client_ca_file")
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca, require_client_auth=bool(client_ca))


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsSetupError(f"cannot read {setting} {path}: {exc.strerror or exc}") from exc


def _check_pair(cert: Path, key: Path) -> None:
    for path, setting in ((cert, "tls_cert_file"), (key, "tls_key_file")):
        _read(path, setting)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise TlsSetupError(
            f"tls_cert_file {cert} and tls_key_file {key} are not a PEM certificate and its key ({exc.reason})"
        ) from exc


def _check_ca(path: Path) -> None:
    _read(path, "tls_client_ca_file")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TlsSetupError(f"tls_client_ca_file {path} is not a PEM CA bundle ({exc.reason})") from exc
