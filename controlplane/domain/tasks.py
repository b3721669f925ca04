"""Tasks: what clients submit, what the store keeps, and how their lifecycle moves."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from controlplane.domain.payload import Payload
from controlplane.domain.scheduling import Strategy


class TaskState(IntEnum):
    """Mirrors meshplane.v1.TaskState (same numbers)."""

    QUEUED = 1
    ASSIGNED = 2
    RUNNING = 3
    SUCCEEDED = 4
    FAILED = 5
    CANCELLED = 6
    TIMED_OUT = 7
    DEAD_LETTER = 8

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        """Assigned to an agent session (holding one of its slots)."""
        return self in (TaskState.ASSIGNED, TaskState.RUNNING)


TERMINAL_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT, TaskState.DEAD_LETTER}
)
ACTIVE_STATES = (TaskState.ASSIGNED, TaskState.RUNNING)


class AttemptOutcome(IntEnum):
    """Mirrors meshplane.v1.AttemptOutcome."""

    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    TIMED_OUT = 4
    LOST = 5
    CANCELLED = 6


class TaskEventType(IntEnum):
    """Mirrors meshplane.v1.TaskEventType."""

    CREATED = 1
    ASSIGNED = 2
    STARTED = 3
    PROGRESS = 4
    RETRYING = 5
    SUCCEEDED = 6
    FAILED = 7
    CANCELLED = 8
    TIMED_OUT = 9
    DEAD_LETTERED = 10


@dataclass(slots=True)
class TaskTarget:
    capability: str
    agent_name: str = ""
    label_selector: dict[str, str] = field(default_factory=dict)
    routing_key: str = ""
    strategy: Strategy | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Resolved retry policy (defaults filled in). Durations in seconds."""

    max_attempts: int
    initial_backoff: float
    max_backoff: float
    backoff_multiplier: float
    non_retryable_error_codes: tuple[str, ...] = ()

    def backoff_before(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before `attempt` (2, 3, ...): exponential, capped, with ±20 % jitter."""
        base = self.initial_backoff * (self.backoff_multiplier ** max(0, attempt - 2))
        capped = min(base, self.max_backoff)
        jitter = (rng or random).uniform(0.8, 1.2)
        return max(0.0, min(capped * jitter, self.max_backoff))


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Resolved deadlines in seconds; 0 means "no limit"."""

    schedule_to_start: float
    start_to_close: float
    heartbeat: float
    schedule_to_close: float


@dataclass(slots=True)
class TaskError:
    code: str
    message: str
    retryable: bool = True
    details: dict[str, Any] | None = None


@dataclass(slots=True)
class TaskSpec:
    """Everything a client decides about a task."""

    target: TaskTarget
    input: Payload
    retry_policy: RetryPolicy
    timeouts: Timeouts
    priority: int = 0
    idempotency_key: str = ""
    correlation_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    traceparent: str = ""
    tracestate: str = ""

    def differences(self, other: TaskSpec) -> list[str]:
        """The fields in which `other` asks for different work than this spec: its target, input and priority.

        An idempotency key stands for one request; a retry of it may carry a new correlation id or trace
        context, and its retry policy and timeouts are compared as resolved with the plane's defaults at the
        time, so those are left out. JSON inputs compare by value (key order and spacing may differ).
        """
        fields = [
            f"target.{name}"
            for name in ("capability", "agent_name", "label_selector", "routing_key", "strategy")
            if getattr(self.target, name) != getattr(other.target, name)
        ]
        if not _same_payload(self.input, other.input):
            fields.append("input")
        if self.priority != other.priority:
            fields.append("priority")
        return fields


def _same_payload(a: Payload, b: Payload) -> bool:
    if a.data == b.data and a.content_type == b.content_type:
        return True
    if a.content_type != b.content_type or not a.is_json:
        return False
    try:
        return _canonical_json(a) == _canonical_json(b)
    except ValueError:
        return False


def _canonical_json(payload: Payload) -> str:
    # Compared as text, not as Python values: those would take true for 1.
    return json.dumps(payload.json_value(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class Attempt:
    attempt: int
    agent_name: str
    agent_instance_id: str
    session_id: str
    outcome: AttemptOutcome
    assign_time: float
    error: TaskError | None = None
    start_time: float | None = None
    end_time: float | None = None


@dataclass(slots=True)
class Task:
    """A task as stored. Times are epoch seconds."""

    id: str
    spec: TaskSpec
    state: TaskState
    create_time: float
    update_time: float
    attempt: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    output: Payload | None = None
    error: TaskError | None = None
    progress: float = 0.0
    progress_message: str = ""
    resubmitted_from: str = ""
    cancel_reason: str = ""
    end_time: float | None = None
    scheduled_time: float | None = None
    session_id: str = ""
    agent_instance_id: str = ""
    replica_id: str = ""


@dataclass(slots=True)
class TaskEvent:
    task_id: str
    sequence: int
    type: TaskEventType
    state: TaskState
    attempt: int
    time: float
    agent_instance_id: str = ""
    progress: float = 0.0
    message: str = ""
    error: TaskError | None = None
    output: Payload | None = None
    actor: str = ""  # who caused it (see the audit trail's actors); "" for the plane's own steps


@dataclass(frozen=True, slots=True)
class TaskRef:
    """One attempt of one task."""

    task_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class TaskFilter:
    state: TaskState | None = None
    capability: str = ""
    correlation_id: str = ""


@dataclass(frozen=True, slots=True)
class RetryRequest:
    """What a client asked for; zeros take the control plane's defaults."""

    max_attempts: int = 0
    initial_backoff: float = 0.0
    max_backoff: float = 0.0
    backoff_multiplier: float = 0.0
    non_retryable_error_codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TimeoutsRequest:
    """Deadlines a client asked for, in seconds; zeros take the control plane's defaults."""

    schedule_to_start: float = 0.0
    start_to_close: float = 0.0
    heartbeat: float = 0.0
    schedule_to_close: float = 0.0


@dataclass(slots=True)
class SubmitRequest:
    """A task as a client submits it, before validation and defaults."""

    target: TaskTarget
    input: Payload
    priority: int = 0
    idempotency_key: str = ""
    retry: RetryRequest = field(default_factory=RetryRequest)
    timeouts: TimeoutsRequest = field(default_factory=TimeoutsRequest)
    correlation_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    traceparent: str = ""
    tracestate: str = ""


@dataclass(slots=True)
class Submitted:
    task: Task
    deduplicated: bool
