"""Agents, their instances and what they register."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class AgentStatus(IntEnum):
    ONLINE = 1
    DRAINING = 2
    OFFLINE = 3


class InstanceStatus(IntEnum):
    CONNECTED = 1
    DRAINING = 2
    DISCONNECTED = 3


@dataclass(frozen=True, slots=True)
class Capability:
    name: str
    description: str = ""
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Registration:
    """What an agent says about itself in its first frame."""

    agent_name: str
    agent_version: str
    instance_id: str
    capabilities: tuple[Capability, ...]
    labels: dict[str, str]
    max_concurrency: int
    sdk_language: str = ""
    sdk_version: str = ""
    description: str = ""
    weight: int = 1
    node: str = ""
    pid: int = 0
    subscriptions: tuple[str, ...] = ()

    @property
    def capability_names(self) -> frozenset[str]:
        return frozenset(c.name for c in self.capabilities)


@dataclass(slots=True)
class Agent:
    name: str
    version: str
    description: str
    capabilities: list[Capability]
    labels: dict[str, str]
    create_time: float
    update_time: float
    status: AgentStatus = AgentStatus.OFFLINE
    connected_instances: int = 0


@dataclass(slots=True)
class AgentInstance:
    instance_id: str
    agent_name: str
    version: str
    session_id: str
    status: InstanceStatus
    sdk_language: str
    sdk_version: str
    node: str
    pid: int
    labels: dict[str, str]
    capabilities: list[str]
    max_concurrency: int
    weight: int
    replica_id: str
    connect_time: float
    last_seen_time: float
    in_flight: int = 0
    load: float = 0.0
    disconnect_time: float | None = None


@dataclass(frozen=True, slots=True)
class RemoteInstance:
    """An instance connected to another replica, as sticky placement sees it."""

    instance_id: str
    agent_name: str
    labels: dict[str, str]
    capabilities: frozenset[str]
    replica_id: str
