"""TLS to an external NATS: the CA that signed its servers' certificates, and the client certificate to show
when they require one. Checked at start-up: a file that is missing or does not load stops the plane with a line
naming the setting. (A ``tls://`` URL with none of these trusts the system's roots.)

Renewed files are taken without a restart: while the connection is down (each failed attempt to reconnect),
the files are compared by their stat and, when they changed and load, loaded into the same context, which the
next attempt uses. A renewed CA bundle adds to the CA trusted so far (ssl cannot forget one).
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from controlplane.filestamps import Stamp, file_stamps
from controlplane.settings import Settings

logger = logging.getLogger(__name__)


class NatsTlsError(OSError):
    """A NATS TLS setting the plane cannot connect with (the message names it)."""


class NatsTls:
    """The ssl context of the NATS connections, and the files it was loaded from."""

    def __init__(self, ca: Path | None, cert: Path | None, key: Path | None) -> None:
        self._ca, self._cert, self._key = ca, cert, key
        self.context = ssl.create_default_context()
        self._load(self.context)  # a file that is missing or does not load fails here, naming its setting
        self._stamp = self._stamps()
        self._problem = ""  # the last renewal problem, logged once

    @classmethod
    def from_settings(cls, settings: Settings) -> NatsTls | None:
        """None when no NATS TLS file is set."""
        ca, cert, key = settings.nats_tls_ca_file, settings.nats_tls_cert_file, settings.nats_tls_key_file
        if ca is None and cert is None:
            return None
        return cls(ca, cert, key)

    def refresh(self) -> bool:
        """Load the files into the context again when they changed since the last look and load (checked in a
        scratch context first); True when they were taken."""
        try:
            stamp = self._stamps()
        except NatsTlsError:
            return False  # being replaced (missing for a moment): look again at the next attempt
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self._load(ssl.create_default_context())
        except NatsTlsError as exc:
            if str(exc) != self._problem:
                self._problem = str(exc)
                logger.warning("NATS TLS files changed but cannot be used; keeping the ones in use: %s", exc)
            return False
        self._problem = ""
        self._load(self.context)
        logger.info("NATS TLS files changed: the next connection uses them")
        return True

    def _load(self, context: ssl.SSLContext) -> None:
        if self._ca is not None:
            try:
                context.load_verify_locations(cafile=self._ca)
            except (OSError, ssl.SSLError) as exc:
                raise NatsTlsError(
                    f"nats_tls_ca_file {self._ca} is not a readable PEM CA bundle ({_why(exc)})"
                ) from exc
        if self._cert is not None and self._key is not None:
            try:
                context.load_cert_chain(self._cert, self._key)
            except (OSError, ssl.SSLError) as exc:
                raise NatsTlsError(
                    f"nats_tls_cert_file {self._cert} and nats_tls_key_file {self._key} are not a readable PEM "
                    f"certificate and its key ({_why(exc)})"
                ) from exc

    def _stamps(self) -> Stamp:
        try:
            return file_stamps(path for path in (self._ca, self._cert, self._key) if path is not None)
        except OSError as exc:
            raise NatsTlsError(f"cannot look at {exc.filename}: {exc.strerror or exc}") from exc


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return exc.strerror or str(exc)
