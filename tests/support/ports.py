"""Free TCP ports (shared with `meshplane bench`)."""

from controlplane.devtools.ports import free_port

__all__ = ["free_port"]
