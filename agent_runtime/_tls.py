"""TLS to the control plane: whom to trust, and the certificate to show when the plane asks for one (mTLS).

Without a `TLS` given, the environment decides: ``MESHPLANE_TLS_CA_FILE`` (trust that CA),
``MESHPLANE_TLS_CLIENT_CERT_FILE`` with ``MESHPLANE_TLS_CLIENT_KEY_FILE`` (show that certificate), or
``MESHPLANE_TLS=true`` (trust the system's roots) turn TLS on; ``MESHPLANE_TLS_SERVER_NAME`` names the host to
verify. Nothing set: plaintext, as a plane without ``MESHPLANE_TLS_CERT_FILE`` serves.

Renewed files (cert-manager replacing a Kubernetes Secret's files) are taken without a restart: before an agent
reconnects, and after a client's call found the plane unavailable, the files are read again (`TlsFiles`), and
new connections use them when they changed and load; connections already open keep theirs.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

logger = logging.getLogger("agent_runtime.tls")

_TRUE = {"1", "true"}  # as the Go and TypeScript SDKs read it

_Contents = tuple[bytes | None, bytes | None, bytes | None]  # the CA bundle, the certificate, the key


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
        return _credentials(self.read_files())

    def read_files(self) -> _Contents:
        """The CA bundle, certificate and key as the files hold them now (None where not set)."""
        return _read(self.ca_file, "ca_file"), _read(self.cert_file, "cert_file"), _read(self.key_file, "key_file")

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


class TlsFiles:
    """Channel credentials from a TLS's files, made again when the files change (a renewed certificate)."""

    def __init__(self, tls: TLS) -> None:
        self._tls = tls
        self._contents = tls.read_files()  # a file that cannot be read fails here, naming it
        self.credentials = _credentials(self._contents)
        self._problem = ""  # the last renewal problem, logged once

    def renew(self) -> bool:
        """Read the files again; True when they changed and load, and `credentials` are now theirs. Files that
        cannot be read or do not load keep the credentials in use (logged once per problem)."""
        try:
            contents = self._tls.read_files()
            if contents == self._contents:
                return False
            _check(contents)
        except ValueError as exc:
            if str(exc) != self._problem:
                self._problem = str(exc)
                logger.warning("TLS files changed but cannot be used; keeping the ones in use: %s", exc)
            return False
        self._problem = ""
        self._contents = contents
        self.credentials = _credentials(contents)
        logger.info("TLS files changed: new connections use the renewed ones")
        return True


def _credentials(contents: _Contents) -> grpc.ChannelCredentials:
    ca, cert, key = contents
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def _check(contents: _Contents) -> None:
    """ValueError unless `contents` load as grpc will use them: a PEM CA bundle, a certificate and its key."""
    ca, cert, key = contents
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if ca is not None:
            context.load_verify_locations(cadata=ca.decode("ascii", errors="replace"))
        if cert is not None and key is not None:
            with tempfile.TemporaryDirectory(prefix="meshplane-tls-") as directory:  # ssl loads pairs from files
                cert_path, key_path = Path(directory, "cert.pem"), Path(directory, "key.pem")
                cert_path.write_bytes(cert)
                key_path.write_bytes(key)
                context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        raise ValueError(f"the CA bundle, certificate or key do not load ({exc.reason or exc})") from exc


def _read(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from exc
