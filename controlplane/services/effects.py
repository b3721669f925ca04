"""The after-commit hook services call: wake watchers and schedulers, deliver cancellations."""

from __future__ import annotations

from typing import Protocol

from controlplane.services.transitions import AfterCommit


class Effects(Protocol):
    async def after_commit(self, after: AfterCommit) -> None:
        """Called once a transaction that changed tasks has committed."""
        ...
