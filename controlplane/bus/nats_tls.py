"""TLS to an external NATS: the CA that signed its servers' certificates, and the client certificate to show
when they require one. Read and checked once, at start-up: a file that is missing or does not load stops the
plane with a line naming the setting. (A ``tls://`` URL with none of these trusts the system's roots.)"""

from __future__ import annotations

import ssl

from controlplane.settings import Settings


class NatsTlsError(OSError):
    """A NATS TLS setting the plane cannot connect with (the message names it)."""


def nats_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for the NATS connections; None when no NATS TLS file is set."""
    ca, cert, key = settings.nats_tls_ca_file, settings.nats_tls_cert_file, settings.nats_tls_key_file
    if ca is None and cert is None:
        return None
    context = ssl.create_default_context()
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise NatsTlsError(f"nats_tls_ca_file {ca} is not a readable PEM CA bundle ({_why(exc)})") from exc
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise NatsTlsError(
                f"nats_tls_cert_file {cert} and nats_tls_key_file {key} are not a readable PEM certificate and its "
                f"key ({_why(exc)})"
            ) from exc
    return context


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return exc.strerror or str(exc)
