"""Placement vocabulary shared by settings, tasks and the scheduler."""

from __future__ import annotations

from enum import StrEnum


class Strategy(StrEnum):
    """How the scheduler picks among the sessions that can serve a task."""

    LEAST_LOADED = "least_loaded"
    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"
    CONSISTENT_HASH = "consistent_hash"
