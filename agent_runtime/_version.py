"""The SDK version (reported to the control plane at registration); kept equal to the project's version."""

from __future__ import annotations

# A literal, not importlib.metadata: reading the installed metadata costs ~40 ms at every CLI start.
__version__ = "0.1.0"
