"""Chaos reports collected during the session, printed in pytest's terminal summary."""

from __future__ import annotations

from typing import Any

REPORTS: list[dict[str, Any]] = []
