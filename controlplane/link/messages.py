"""What the plane sends to an agent, as domain values (the servicer turns them into frames)."""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.domain.channels import ChannelMessage
from controlplane.domain.payload import Payload
from controlplane.domain.tasks import TaskRef


@dataclass(slots=True)
class AssignmentMsg:
    task_id: str
    attempt: int
    capability: str
    input: Payload
    priority: int
    correlation_id: str
    metadata: dict[str, str]
    deadline: float | None
    heartbeat_timeout: float
    max_attempts: int
    traceparent: str = ""
    tracestate: str = ""


@dataclass(slots=True)
class CancelMsg:
    ref: TaskRef
    reason: str  # the link's code: "cancelled", "timed_out", "not_held"
    message: str = ""  # the caller's words to CancelTask, when the cancel comes from one


@dataclass(slots=True)
class AckMsg:
    refs: tuple[TaskRef, ...]


@dataclass(slots=True)
class DrainMsg:
    timeout: float
    reason: str


@dataclass(slots=True)
class ChannelDelivery:
    message: ChannelMessage


@dataclass(slots=True)
class ErrorMsg:
    code: int
    message: str
    field: str = ""
    fatal: bool = False


@dataclass(slots=True)
class RegisteredMsg:
    session_id: str
    heartbeat_interval: float
    lease_timeout: float
    replica_id: str
    kept: tuple[TaskRef, ...] = field(default_factory=tuple)
    max_payload_bytes: int = 0


Outbound = AssignmentMsg | CancelMsg | AckMsg | DrainMsg | ChannelDelivery | ErrorMsg | RegisteredMsg
