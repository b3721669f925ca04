"""Typed values the client returns (never raw protobuf messages), built from the API's messages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar, cast

from google.protobuf import json_format, message, timestamp_pb2

from agent_runtime import _payload
from meshplane.v1 import agent_pb2, audit_pb2, channel_pb2, common_pb2, state_pb2, task_pb2

T = TypeVar("T")

Strategy = Literal["least_loaded", "round_robin", "weighted", "consistent_hash"]
"""How the plane picks among the instances that can run a task (see ``TaskSpec.strategy``)."""


class TaskState(StrEnum):
    """The lifecycle state of a task."""

    UNSPECIFIED = "UNSPECIFIED"
    QUEUED = "QUEUED"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    DEAD_LETTER = "DEAD_LETTER"

    @property
    def is_terminal(self) -> bool:
        """True for states a task never leaves."""
        return self in _TERMINAL

    def to_proto(self) -> int:
        return int(task_pb2.TaskState.Value(f"TASK_STATE_{self.value}"))

    @classmethod
    def from_proto(cls, value: int) -> TaskState:
        return cls(task_pb2.TaskState.Name(value).removeprefix("TASK_STATE_"))


_TERMINAL = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT, TaskState.DEAD_LETTER}
)


class TaskEventType(StrEnum):
    """What happened to a task."""

    UNSPECIFIED = "UNSPECIFIED"
    CREATED = "CREATED"
    ASSIGNED = "ASSIGNED"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    DEAD_LETTERED = "DEAD_LETTERED"

    @classmethod
    def from_proto(cls, value: int) -> TaskEventType:
        return cls(task_pb2.TaskEventType.Name(value).removeprefix("TASK_EVENT_TYPE_"))


def _time(ts: timestamp_pb2.Timestamp, present: bool = True) -> datetime | None:
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


class _FromProto:
    """Keeps the message it was built from, so it can be printed exactly as the API sent it."""

    __slots__ = ()
    _message: message.Message

    def to_json(self, *, indent: int | None = 2) -> str:
        """The resource as protobuf JSON, as the REST gateway prints it (see `to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_dict(self) -> dict[str, Any]:
        """The resource as protobuf JSON data (``json_format.MessageToDict``), with whole numbers whole: JSON
        numbers in payloads and details travel as doubles, and ``{"n": 3}`` must not come back as ``3.0``."""
        return cast(dict[str, Any], _whole_numbers_whole(json_format.MessageToDict(self._message)))


def _whole_numbers_whole(value: Any) -> Any:
    if isinstance(value, float):
        return _payload.whole_number(value)
    if isinstance(value, dict):
        return {key: _whole_numbers_whole(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers_whole(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class ErrorInfo(_FromProto):
    """A task error as recorded: stable code, message, whether a retry may help, details."""

    code: str
    message: str
    retryable: bool
    details: dict[str, Any]
    _message: common_pb2.TaskError = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, proto: common_pb2.TaskError) -> ErrorInfo:
        return cls(proto.code, proto.message, proto.retryable, _payload.struct_to_dict(proto.details), proto)


def _error(proto: Any, present: bool) -> ErrorInfo | None:
    return ErrorInfo.from_proto(proto) if present else None


@dataclass(frozen=True, slots=True)
class AttemptInfo(_FromProto):
    """One attempt of a task on one agent instance."""

    attempt: int
    agent_name: str
    agent_instance_id: str
    outcome: str
    error: ErrorInfo | None
    assign_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    _message: task_pb2.TaskAttempt = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, proto: task_pb2.TaskAttempt) -> AttemptInfo:
        return cls(
            attempt=proto.attempt,
            agent_name=proto.agent_name,
            agent_instance_id=proto.agent_instance_id,
            outcome=task_pb2.AttemptOutcome.Name(proto.outcome).removeprefix("ATTEMPT_OUTCOME_"),
            error=_error(proto.error, proto.HasField("error")),
            assign_time=_time(proto.assign_time),
            start_time=_time(proto.start_time),
            end_time=_time(proto.end_time),
            _message=proto,
        )


def _strategy_name(value: int) -> str | None:
    if value == task_pb2.SCHEDULING_STRATEGY_UNSPECIFIED:
        return None
    return task_pb2.SchedulingStrategy.Name(value).removeprefix("SCHEDULING_STRATEGY_").lower()


@dataclass(frozen=True, slots=True)
class TaskInfo(_FromProto):
    """A task as the control plane stores it."""

    id: str
    capability: str
    state: TaskState
    input: Any
    output: Any
    error: ErrorInfo | None
    attempt: int
    max_attempts: int
    attempts: tuple[AttemptInfo, ...]
    priority: int
    progress: float
    progress_message: str
    correlation_id: str
    idempotency_key: str
    metadata: dict[str, str]
    agent_name: str
    label_selector: dict[str, str]
    routing_key: str
    strategy: str | None  # "least_loaded", "round_robin", "weighted", "consistent_hash"; None: the plane's default
    cancel_reason: str
    resubmitted_from: str
    create_time: datetime | None
    update_time: datetime | None
    end_time: datetime | None
    _message: task_pb2.Task = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, proto: task_pb2.Task) -> TaskInfo:
        return cls(
            id=proto.id,
            capability=proto.target.capability,
            state=TaskState.from_proto(proto.state),
            input=_payload.decode(proto.input) if proto.HasField("input") else None,
            output=_payload.decode(proto.output) if proto.HasField("output") else None,
            error=_error(proto.error, proto.HasField("error")),
            attempt=proto.attempt,
            max_attempts=proto.retry_policy.max_attempts,
            attempts=tuple(AttemptInfo.from_proto(a) for a in proto.attempts),
            priority=proto.priority,
            progress=proto.progress,
            progress_message=proto.progress_message,
            correlation_id=proto.correlation_id,
            idempotency_key=proto.idempotency_key,
            metadata=dict(proto.metadata),
            agent_name=proto.target.agent_name,
            label_selector=dict(proto.target.label_selector),
            routing_key=proto.target.routing_key,
            strategy=_strategy_name(proto.target.strategy),
            cancel_reason=proto.cancel_reason,
            resubmitted_from=proto.resubmitted_from,
            create_time=_time(proto.create_time),
            update_time=_time(proto.update_time),
            end_time=_time(proto.end_time),
            _message=proto,
        )


@dataclass(frozen=True, slots=True)
class SubmitResult(TaskInfo):
    """A task just submitted, as :class:`SyncMeshClient`'s submits return it: the :class:`TaskInfo` as stored (use
    it as one), and ``deduplicated``: whether its idempotency key matched an existing task, which came back
    instead of a new one. ``task`` is the same record, so that code reads it as from :class:`TaskHandle`."""

    deduplicated: bool = False

    @classmethod
    def of(cls, task: TaskInfo, deduplicated: bool) -> SubmitResult:
        """``task`` with whether the submission was deduplicated."""
        return cls(**{f.name: getattr(task, f.name) for f in fields(TaskInfo)}, deduplicated=deduplicated)

    @property
    def task(self) -> TaskInfo:
        return self

    def to_dict(self) -> dict[str, Any]:
        """The task as protobuf JSON data (see :meth:`TaskInfo.to_dict`) with ``"deduplicated"``, false too: the
        one thing a submit says that the task does not. ``to_json`` prints it as well."""
        # TaskInfo's named explicitly: zero-argument super() fails in a slots dataclass (it is a new class).
        return {**TaskInfo.to_dict(self), "deduplicated": self.deduplicated}


@dataclass(frozen=True, slots=True)
class TaskEvent(_FromProto):
    """One entry of a task's history (sequence numbers start at 1)."""

    task_id: str
    sequence: int
    type: TaskEventType
    state: TaskState
    attempt: int
    time: datetime | None
    agent_instance_id: str
    progress: float
    message: str
    error: ErrorInfo | None
    output: Any
    actor: str  # who caused it: "client/<principal>", "system/timeouts", ...; "" for the plane's own steps
    _message: task_pb2.TaskEvent = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, proto: task_pb2.TaskEvent) -> TaskEvent:
        return cls(
            task_id=proto.task_id,
            sequence=proto.sequence,
            type=TaskEventType.from_proto(proto.type),
            state=TaskState.from_proto(proto.state),
            attempt=proto.attempt,
            time=_time(proto.time),
            agent_instance_id=proto.agent_instance_id,
            progress=proto.progress,
            message=proto.message,
            error=_error(proto.error, proto.HasField("error")),
            output=_payload.decode(proto.output) if proto.HasField("output") else None,
            actor=proto.actor,
            _message=proto,
        )


@dataclass(frozen=True, slots=True)
class CapabilityInfo:
    """A capability an agent registered."""

    name: str
    description: str
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None

    @classmethod
    def from_proto(cls, proto: common_pb2.Capability) -> CapabilityInfo:
        return cls(
            name=proto.name,
            description=proto.description,
            input_schema=_payload.struct_to_dict(proto.input_schema) if proto.HasField("input_schema") else None,
            output_schema=_payload.struct_to_dict(proto.output_schema) if proto.HasField("output_schema") else None,
        )


@dataclass(frozen=True, slots=True)
class AgentInfo(_FromProto):
    """A registered agent (all its instances together)."""

    name: str
    version: str
    description: str
    status: str
    connected_instances: int
    capabilities: tuple[CapabilityInfo, ...]
    labels: dict[str, str]
    update_time: datetime | None
    _message: agent_pb2.Agent = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, proto: agent_pb2.Agent) -> AgentInfo:
        return cls(
            name=proto.name,
            version=proto.version,
            description=proto.description,
            status=agent_pb2.AgentStatus.Name(proto.status).removeprefix("AGENT_STATUS_"),
            connected_instances=proto.connected_instances,
            capabilities=tuple(CapabilityInfo.from_proto(c) for c in proto.capabilities),
            labels=dict(proto.labels),
            update_time=_time(proto.update_time),
            _message=proto,
        )


@dataclass(frozen=True, slots=True)
class AgentInstanceInfo(_FromProto):
    """One running copy of an agent and its current (or last) session."""

    instance_id: str
    agent_name: str
    version: str
    status: str
    session_id: str
    capabilities: tuple[str, ...]
    max_concurrency: int
    in_flight: int
    load: float
    labels: dict[str, str]
    sdk: str
    node: str
    pid: int
    connect_time: datetime | None
    last_seen_time: datetime | None
    _message: agent_pb2.AgentInstance = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, proto: agent_pb2.AgentInstance) -> AgentInstanceInfo:
        return cls(
            instance_id=proto.instance_id,
            agent_name=proto.agent_name,
            version=proto.version,
            status=agent_pb2.AgentInstanceStatus.Name(proto.status).removeprefix("AGENT_INSTANCE_STATUS_"),
            session_id=proto.session_id,
            capabilities=tuple(proto.capabilities),
            max_concurrency=proto.max_concurrency,
            in_flight=proto.in_flight,
            load=proto.load,
            labels=dict(proto.labels),
            sdk=f"{proto.sdk.language} {proto.sdk.version}".strip(),
            node=proto.node,
            pid=proto.pid,
            connect_time=_time(proto.connect_time),
            last_seen_time=_time(proto.last_seen_time),
            _message=proto,
        )


@dataclass(frozen=True, slots=True)
class ChannelInfo(_FromProto):
    """A channel that has been used: its first use, and its last (to within an hour; see ListChannels)."""

    name: str
    create_time: datetime | None
    last_use_time: datetime | None
    _message: channel_pb2.Channel = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, proto: channel_pb2.Channel) -> ChannelInfo:
        return cls(
            name=proto.name,
            create_time=_time(proto.create_time),
            last_use_time=_time(proto.last_use_time),
            _message=proto,
        )


@dataclass(frozen=True, slots=True)
class ChannelMessage(_FromProto):
    """A message on a channel."""

    channel: str
    message_id: str
    data: Any
    content_type: str
    headers: dict[str, str]
    publisher: str
    publish_time: datetime | None
    _message: channel_pb2.ChannelMessage = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, proto: channel_pb2.ChannelMessage) -> ChannelMessage:
        return cls(
            channel=proto.channel,
            message_id=proto.message_id,
            data=_payload.decode(proto.payload),
            content_type=proto.payload.content_type or _payload.JSON_CONTENT_TYPE,
            headers=dict(proto.headers),
            publisher=proto.publisher,
            publish_time=_time(proto.publish_time),
            _message=proto,
        )


@dataclass(frozen=True, slots=True)
class StateEntry(_FromProto):
    """One state entry: its value and version (for compare-and-set)."""

    namespace: str
    key: str
    value: Any
    version: int
    expire_time: datetime | None
    create_time: datetime | None
    update_time: datetime | None
    _message: state_pb2.StateEntry = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, proto: state_pb2.StateEntry) -> StateEntry:
        return cls(
            namespace=proto.namespace,
            key=proto.key,
            value=_payload.decode(proto.value),
            version=proto.version,
            expire_time=_time(proto.expire_time, proto.HasField("expire_time")),
            create_time=_time(proto.create_time),
            update_time=_time(proto.update_time),
            _message=proto,
        )


@dataclass(frozen=True, slots=True)
class AuditEntry(_FromProto):
    """One entry of the audit trail: who changed what, when, under which correlation id."""

    id: int
    time: datetime | None
    actor: str
    action: str
    resource: str
    correlation_id: str
    details: dict[str, Any]
    _message: audit_pb2.AuditEntry = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, proto: audit_pb2.AuditEntry) -> AuditEntry:
        return cls(
            id=proto.id,
            time=_time(proto.time),
            actor=proto.actor,
            action=proto.action,
            resource=proto.resource,
            correlation_id=proto.correlation_id,
            details=_payload.struct_to_dict(proto.details),
            _message=proto,
        )


@dataclass(frozen=True, slots=True)
class Page(_FromProto, Generic[T]):
    """One page of a listing; pass ``next_page_token`` to get the next (empty on the last page)."""

    items: list[T]
    next_page_token: str
    _message: message.Message = field(repr=False, compare=False)
