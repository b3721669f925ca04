"""The ``meshplane`` command line (console script ``meshplane = controlplane.cli:main``)."""

from controlplane.cli.main import main

__all__ = ["main"]
