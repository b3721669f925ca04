"""TLS on the plane's gRPC port: the server's certificate, and the clients' CA when it requires theirs (mTLS).

The files are read and checked at start-up (`ssl` loads them as grpc would): a missing file, a key that is not
the certificate's, or a CA bundle that is no PEM stops the plane with a line naming the setting.

They are read again when they change, so a renewed certificate (a Kubernetes Secret updated in place,
cert-manager) is served without a restart. gRPC asks before each TLS handshake; the files are compared by
their `stat` (modification time, size, inode), and only re-read when that changed. New files that do not load
(a key written before its certificate, a broken PEM) are logged and the files in use are kept; connections
already open keep the certificate they were made with.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from controlplane.filestamps import Stamp, file_stamps
from controlplane.settings import Settings

logger = logging.getLogger(__name__)


class TlsSetupError(OSError):
    """A TLS setting the plane cannot serve with (the message names it)."""


def server_credentials(settings: Settings) -> Callable[[], grpc.ServerCredentials] | None:
    """Makes the gRPC port's credentials, one for each server on it; None for plaintext (no tls_cert_file)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return ServerCertificates(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file).credentials


class ServerCertificates:
    """The certificate, key and client CA files the port serves, read again whenever one of them changes."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self._cert, self._key, self._client_ca = cert, key, client_ca
        self._lock = threading.Lock()  # gRPC may ask from several of its threads
        self._configuration = self._load()  # a file that is missing or does not load fails here, naming its setting
        self._stamp = self._stamps()
        self._generation = 0  # counts the configurations loaded since the first

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for one server. Each needs its own: gRPC hands the initial configuration to the first
        server that asks, and each server's credentials learn of a new configuration on their own."""
        handed_out = self._generation

        def changed_configuration() -> grpc.ServerCertificateConfiguration | None:
            nonlocal handed_out
            with self._lock:
                self._look_at_the_files()
                if handed_out == self._generation:
                    return None
                handed_out = self._generation
                return self._configuration

        return grpc.dynamic_ssl_server_credentials(
            self._configuration, changed_configuration, require_client_authentication=self._client_ca is not None
        )

    def _look_at_the_files(self) -> None:
        """Load the files again if they changed since the last look (called with the lock held)."""
        try:
            stamp = self._stamps()
        except TlsSetupError:
            return  # a file being replaced (missing for a moment): look again at the next handshake
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._configuration = self._load()
        except TlsSetupError as exc:
            logger.warning("TLS files changed but cannot be served; the certificate in use stays: %s", exc)
            return
        self._generation += 1
        logger.info("TLS files changed: new connections get the certificate in %s", self._cert)

    def _stamps(self) -> Stamp:
        try:
            return file_stamps(path for path in (self._cert, self._key, self._client_ca) if path is not None)
        except OSError as exc:
            raise TlsSetupError(f"cannot look at {exc.filename}: {exc.strerror or exc}") from exc

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert, key, client_ca = self._cert, self._key, self._client_ca
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
        return grpc.ssl_server_certificate_configuration([(private_key, chain)], root_certificates=roots)


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
