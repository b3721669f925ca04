import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from meshplane.v1 import channel_pb2 as _channel_pb2
from meshplane.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskUpdateKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UPDATE_KIND_UNSPECIFIED: _ClassVar[TaskUpdateKind]
    TASK_UPDATE_KIND_STARTED: _ClassVar[TaskUpdateKind]
    TASK_UPDATE_KIND_PROGRESS: _ClassVar[TaskUpdateKind]
    TASK_UPDATE_KIND_HEARTBEAT: _ClassVar[TaskUpdateKind]
TASK_UPDATE_KIND_UNSPECIFIED: TaskUpdateKind
TASK_UPDATE_KIND_STARTED: TaskUpdateKind
TASK_UPDATE_KIND_PROGRESS: TaskUpdateKind
TASK_UPDATE_KIND_HEARTBEAT: TaskUpdateKind

class ConnectRequest(_message.Message):
    __slots__ = ("register", "heartbeat", "task_updates", "task_results", "publish", "subscribe", "unsubscribe", "draining")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    TASK_UPDATES_FIELD_NUMBER: _ClassVar[int]
    TASK_RESULTS_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    task_updates: TaskUpdates
    task_results: TaskResults
    publish: ChannelPublish
    subscribe: ChannelSubscribe
    unsubscribe: ChannelUnsubscribe
    draining: AgentDraining
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., task_updates: _Optional[_Union[TaskUpdates, _Mapping]] = ..., task_results: _Optional[_Union[TaskResults, _Mapping]] = ..., publish: _Optional[_Union[ChannelPublish, _Mapping]] = ..., subscribe: _Optional[_Union[ChannelSubscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[ChannelUnsubscribe, _Mapping]] = ..., draining: _Optional[_Union[AgentDraining, _Mapping]] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("registered", "assignments", "cancellations", "channel_message", "drain", "error", "result_acks")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    CANCELLATIONS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACKS_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    assignments: Assignments
    cancellations: Cancellations
    channel_message: _channel_pb2.ChannelMessage
    drain: Drain
    error: LinkError
    result_acks: ResultAcks
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., assignments: _Optional[_Union[Assignments, _Mapping]] = ..., cancellations: _Optional[_Union[Cancellations, _Mapping]] = ..., channel_message: _Optional[_Union[_channel_pb2.ChannelMessage, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., error: _Optional[_Union[LinkError, _Mapping]] = ..., result_acks: _Optional[_Union[ResultAcks, _Mapping]] = ...) -> None: ...

class TaskRef(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("agent_name", "agent_version", "instance_id", "description", "capabilities", "labels", "max_concurrency", "sdk", "held_tasks", "weight", "node", "pid", "subscriptions")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    SDK_FIELD_NUMBER: _ClassVar[int]
    HELD_TASKS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    agent_name: str
    agent_version: str
    instance_id: str
    description: str
    capabilities: _containers.RepeatedCompositeFieldContainer[_common_pb2.Capability]
    labels: _containers.ScalarMap[str, str]
    max_concurrency: int
    sdk: _common_pb2.SdkInfo
    held_tasks: _containers.RepeatedCompositeFieldContainer[TaskRef]
    weight: int
    node: str
    pid: int
    subscriptions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_name: _Optional[str] = ..., agent_version: _Optional[str] = ..., instance_id: _Optional[str] = ..., description: _Optional[str] = ..., capabilities: _Optional[_Iterable[_Union[_common_pb2.Capability, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., max_concurrency: _Optional[int] = ..., sdk: _Optional[_Union[_common_pb2.SdkInfo, _Mapping]] = ..., held_tasks: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ..., weight: _Optional[int] = ..., node: _Optional[str] = ..., pid: _Optional[int] = ..., subscriptions: _Optional[_Iterable[str]] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("session_id", "heartbeat_interval", "lease_timeout", "replica_id", "kept_tasks", "max_payload_bytes")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    LEASE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    KEPT_TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    heartbeat_interval: _duration_pb2.Duration
    lease_timeout: _duration_pb2.Duration
    replica_id: str
    kept_tasks: _containers.RepeatedCompositeFieldContainer[TaskRef]
    max_payload_bytes: int
    def __init__(self, session_id: _Optional[str] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lease_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., replica_id: _Optional[str] = ..., kept_tasks: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ..., max_payload_bytes: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("in_flight", "load", "cpu_percent", "memory_bytes")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    load: float
    cpu_percent: float
    memory_bytes: int
    def __init__(self, in_flight: _Optional[int] = ..., load: _Optional[float] = ..., cpu_percent: _Optional[float] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class TaskUpdate(_message.Message):
    __slots__ = ("task_id", "attempt", "kind", "progress", "message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    kind: TaskUpdateKind
    progress: float
    message: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., kind: _Optional[_Union[TaskUpdateKind, str]] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class TaskUpdates(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[TaskUpdate]
    def __init__(self, updates: _Optional[_Iterable[_Union[TaskUpdate, _Mapping]]] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "attempt", "output", "error")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    output: _common_pb2.Payload
    error: _common_pb2.TaskError
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., output: _Optional[_Union[_common_pb2.Payload, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.TaskError, _Mapping]] = ...) -> None: ...

class TaskResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TaskResult]
    def __init__(self, results: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ...) -> None: ...

class ChannelPublish(_message.Message):
    __slots__ = ("channel", "payload", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    channel: str
    payload: _common_pb2.Payload
    headers: _containers.ScalarMap[str, str]
    def __init__(self, channel: _Optional[str] = ..., payload: _Optional[_Union[_common_pb2.Payload, _Mapping]] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ChannelSubscribe(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: str
    def __init__(self, channel: _Optional[str] = ...) -> None: ...

class ChannelUnsubscribe(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: str
    def __init__(self, channel: _Optional[str] = ...) -> None: ...

class AgentDraining(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("task_id", "attempt", "capability", "input", "priority", "correlation_id", "metadata", "deadline", "heartbeat_timeout", "max_attempts", "traceparent", "tracestate")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    capability: str
    input: _common_pb2.Payload
    priority: int
    correlation_id: str
    metadata: _containers.ScalarMap[str, str]
    deadline: _timestamp_pb2.Timestamp
    heartbeat_timeout: _duration_pb2.Duration
    max_attempts: int
    traceparent: str
    tracestate: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., capability: _Optional[str] = ..., input: _Optional[_Union[_common_pb2.Payload, _Mapping]] = ..., priority: _Optional[int] = ..., correlation_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., heartbeat_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_attempts: _Optional[int] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...

class Assignments(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    def __init__(self, assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ...) -> None: ...

class Cancellation(_message.Message):
    __slots__ = ("task_id", "attempt", "reason", "message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    reason: str
    message: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Cancellations(_message.Message):
    __slots__ = ("cancellations",)
    CANCELLATIONS_FIELD_NUMBER: _ClassVar[int]
    cancellations: _containers.RepeatedCompositeFieldContainer[Cancellation]
    def __init__(self, cancellations: _Optional[_Iterable[_Union[Cancellation, _Mapping]]] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("timeout", "reason")
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    timeout: _duration_pb2.Duration
    reason: str
    def __init__(self, timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class LinkError(_message.Message):
    __slots__ = ("code", "message", "field", "fatal")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    FATAL_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field: str
    fatal: bool
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., fatal: _Optional[bool] = ...) -> None: ...

class ResultAcks(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskRef]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ...) -> None: ...
