"""Protobuf <-> domain, for the API edge only. Nothing past this module sees a `_pb2` object."""

from __future__ import annotations

import functools
import json
import math
from typing import Any, TypeVar

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from controlplane.domain.agents import Agent, AgentInstance, Capability, Registration
from controlplane.domain.audit import AuditEntry, AuditFilter
from controlplane.domain.channels import Channel, ChannelMessage
from controlplane.domain.payload import BINARY_CONTENT_TYPE, JSON_CONTENT_TYPE, Payload
from controlplane.domain.scheduling import Strategy
from controlplane.domain.state import StateEntry
from controlplane.domain.tasks import (
    Attempt,
    RetryPolicy,
    RetryRequest,
    SubmitRequest,
    Task,
    TaskError,
    TaskEvent,
    TaskRef,
    TaskTarget,
    Timeouts,
    TimeoutsRequest,
)
from controlplane.errors import InvalidArgument
from controlplane.link import messages as link
from meshplane.v1 import (
    agent_link_pb2,
    agent_pb2,
    audit_pb2,
    channel_pb2,
    common_pb2,
    state_pb2,
    task_pb2,
    task_service_pb2,
)

# ---------------------------------------------------------------- scalars


def timestamp(value: float | None) -> timestamp_pb2.Timestamp | None:
    """Whole microseconds, as the store keeps times: a write's answer shows the time later reads show."""
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(round(value * 1_000_000))
    return ts


def epoch(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


# ---------------------------------------------------------------- JSON values


def value_to_python(value: struct_pb2.Value) -> Any:
    """A protobuf Value as plain Python; integral numbers come back as int, not 1.0."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if math.isfinite(number) and number.is_integer() and abs(number) < 2**53:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: value_to_python(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [value_to_python(v) for v in value.list_value.values]
    return None


def python_to_value(data: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    json_format.ParseDict(data, value)
    return value


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {k: value_to_python(v) for k, v in struct.fields.items()}


def dict_to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    json_format.ParseDict(data, struct)
    return struct


# ---------------------------------------------------------------- payloads


def payload_from_proto(message: common_pb2.Payload, field_path: str) -> Payload:
    """Either form becomes bytes + content type; an absent payload is JSON null."""
    kind = message.WhichOneof("kind")
    if kind == "json":
        data = json.dumps(value_to_python(message.json), separators=(",", ":"), ensure_ascii=False).encode()
        content_type = message.content_type or JSON_CONTENT_TYPE
        if not (content_type == JSON_CONTENT_TYPE or content_type.endswith("+json")):
            raise InvalidArgument.of(f"{field_path}.content_type", "a json payload needs a JSON content type")
        return Payload(data, content_type)
    if kind == "data":
        return Payload(message.data, message.content_type or BINARY_CONTENT_TYPE)
    return Payload(b"null", JSON_CONTENT_TYPE)


def payload_for_client(payload: Payload) -> common_pb2.Payload:
    """Clients (and REST) get JSON payloads as JSON values."""
    if payload.is_json:
        try:
            return common_pb2.Payload(json=python_to_value(payload.json_value()), content_type=payload.content_type)
        except (ValueError, RecursionError, json_format.ParseError):
            pass  # not JSON after all, or nested too deep for a Value (stored before the depth limit): as bytes
    return common_pb2.Payload(data=payload.data, content_type=payload.content_type)


def required_payload(request: Any, field: str) -> Payload:
    """The payload in `request`'s field `field`, which the caller must set (JSON null is `{"json": null}`)."""
    if not request.HasField(field):
        raise InvalidArgument.of(field, 'required (for JSON null, send {"json": null})')
    return payload_from_proto(getattr(request, field), field)


def payload_for_agent(payload: Payload) -> common_pb2.Payload:
    """Agents get bytes: cheaper than a Value, and every SDK decodes JSON itself."""
    return common_pb2.Payload(data=payload.data, content_type=payload.content_type)


# ---------------------------------------------------------------- errors


def task_error_to_proto(error: TaskError | None) -> common_pb2.TaskError | None:
    if error is None:
        return None
    proto = common_pb2.TaskError(code=error.code, message=error.message, retryable=error.retryable)
    if error.details:
        proto.details.CopyFrom(dict_to_struct(error.details))
    return proto


def task_error_from_proto(proto: common_pb2.TaskError) -> TaskError:
    return TaskError(
        code=proto.code or "error",
        message=proto.message,
        retryable=proto.retryable,
        details=struct_to_dict(proto.details) if proto.HasField("details") else None,
    )


# ---------------------------------------------------------------- tasks

_STRATEGIES = {
    task_pb2.SCHEDULING_STRATEGY_LEAST_LOADED: Strategy.LEAST_LOADED,
    task_pb2.SCHEDULING_STRATEGY_ROUND_ROBIN: Strategy.ROUND_ROBIN,
    task_pb2.SCHEDULING_STRATEGY_WEIGHTED: Strategy.WEIGHTED,
    task_pb2.SCHEDULING_STRATEGY_CONSISTENT_HASH: Strategy.CONSISTENT_HASH,
}
_STRATEGY_NUMBERS = {v: k for k, v in _STRATEGIES.items()}


# Submissions in a batch mostly repeat the same target, retry policy and timeouts: each distinct one is
# converted once (keyed by its wire bytes) and shared.
_SHARED: dict[bytes, Any] = {}
_SHARED_LIMIT = 4096


def _shared(kind: bytes, message: Any, build: Any) -> Any:
    key = kind + message.SerializeToString()
    value = _SHARED.get(key)
    if value is None:
        if len(_SHARED) >= _SHARED_LIMIT:
            _SHARED.clear()
        value = _SHARED[key] = build(message)
    return value


def _target(target: task_pb2.TaskTarget) -> TaskTarget:
    return TaskTarget(
        capability=target.capability,
        agent_name=target.agent_name,
        label_selector=dict(target.label_selector),
        routing_key=target.routing_key,
        strategy=_STRATEGIES.get(target.strategy),
    )


def _retry(retry: task_pb2.RetryPolicy) -> RetryRequest:
    return RetryRequest(
        max_attempts=retry.max_attempts,
        initial_backoff=seconds(retry.initial_backoff),
        max_backoff=seconds(retry.max_backoff),
        backoff_multiplier=retry.backoff_multiplier,
        non_retryable_error_codes=tuple(retry.non_retryable_error_codes),
    )


def _timeouts(timeouts: task_pb2.TaskTimeouts) -> TimeoutsRequest:
    return TimeoutsRequest(
        schedule_to_start=seconds(timeouts.schedule_to_start),
        start_to_close=seconds(timeouts.start_to_close),
        heartbeat=seconds(timeouts.heartbeat),
        schedule_to_close=seconds(timeouts.schedule_to_close),
    )


def submit_request_from_proto(
    request: task_service_pb2.SubmitTaskRequest,
    *,
    field_prefix: str = "",
    traceparent: str = "",
    tracestate: str = "",
    call_correlation_id: str = "",
) -> SubmitRequest:
    """A submit as the domain takes it. A request without its own correlation_id takes the call's (its
    `x-correlation-id` or `x-request-id` metadata, which the audit trail records for the call)."""
    target = request.target
    if target.strategy and target.strategy not in _STRATEGIES:
        raise InvalidArgument.of(f"{field_prefix}target.strategy", f"unknown strategy {target.strategy}")
    return SubmitRequest(
        target=_shared(b"t", target, _target),  # shared: never mutated
        input=payload_from_proto(request.input, f"{field_prefix}input"),
        priority=request.priority,
        idempotency_key=request.idempotency_key,
        retry=_shared(b"r", request.retry_policy, _retry),
        timeouts=_shared(b"o", request.timeouts, _timeouts),
        correlation_id=request.correlation_id or call_correlation_id,
        metadata=dict(request.metadata) if request.metadata else {},
        traceparent=traceparent,
        tracestate=tracestate,
    )


def _attempt_to_proto(attempt: Attempt) -> task_pb2.TaskAttempt:
    return task_pb2.TaskAttempt(
        attempt=attempt.attempt,
        agent_name=attempt.agent_name,
        agent_instance_id=attempt.agent_instance_id,
        session_id=attempt.session_id,
        outcome=int(attempt.outcome),  # type: ignore[arg-type]
        error=task_error_to_proto(attempt.error),
        assign_time=timestamp(attempt.assign_time),
        start_time=timestamp(attempt.start_time),
        end_time=timestamp(attempt.end_time),
    )


@functools.lru_cache(maxsize=512)
def _retry_policy_proto(policy: RetryPolicy) -> task_pb2.RetryPolicy:
    """Shared by the many tasks that use the same policy (treat as read-only)."""
    return task_pb2.RetryPolicy(
        max_attempts=policy.max_attempts,
        initial_backoff=duration(policy.initial_backoff),
        max_backoff=duration(policy.max_backoff),
        backoff_multiplier=policy.backoff_multiplier,
        non_retryable_error_codes=list(policy.non_retryable_error_codes),
    )


@functools.lru_cache(maxsize=512)
def _timeouts_proto(timeouts: Timeouts) -> task_pb2.TaskTimeouts:
    """Shared by the many tasks that use the same deadlines (treat as read-only)."""
    return task_pb2.TaskTimeouts(
        schedule_to_start=duration(timeouts.schedule_to_start),
        start_to_close=duration(timeouts.start_to_close),
        heartbeat=duration(timeouts.heartbeat),
        schedule_to_close=duration(timeouts.schedule_to_close),
    )


class ProtoMemo:
    """Sub-messages shared by the tasks of one response (alike tasks of a batch): built once each."""

    def __init__(self) -> None:
        self._targets: dict[int, tuple[TaskTarget, task_pb2.TaskTarget]] = {}
        self._stamps: dict[float, timestamp_pb2.Timestamp] = {}
        # Keyed by the ids of the spec's parts; the value keeps them alive, so an id is not reused meanwhile.
        self._shells: dict[tuple[int, int, int, int, float, float], tuple[object, task_pb2.Task]] = {}

    def target(self, target: TaskTarget) -> task_pb2.TaskTarget:
        found = self._targets.get(id(target))
        if found is None or found[0] is not target:
            found = self._targets[id(target)] = (target, _target_proto(target))
        return found[1]

    def stamp(self, value: float) -> timestamp_pb2.Timestamp:
        found = self._stamps.get(value)
        if found is None:
            found = self._stamps[value] = timestamp(value)  # type: ignore[assignment]
        return found  # type: ignore[return-value]

    def shell(self, task: Task) -> task_pb2.Task:
        """A Task holding what alike tasks share: target, retry policy, deadlines, priority, times."""
        spec = task.spec
        key = (
            id(spec.target),
            id(spec.retry_policy),
            id(spec.timeouts),
            spec.priority,
            task.create_time,
            task.update_time,
        )
        found = self._shells.get(key)
        if found is None:
            parts = (spec.target, spec.retry_policy, spec.timeouts)
            found = self._shells[key] = (parts, _task_shell(task, self))
        return found[1]


def _target_proto(target: TaskTarget) -> task_pb2.TaskTarget:
    return task_pb2.TaskTarget(
        capability=target.capability,
        agent_name=target.agent_name,
        label_selector=target.label_selector or None,  # an empty map: skip the generic update()
        routing_key=target.routing_key,
        strategy=_STRATEGY_NUMBERS.get(target.strategy, 0) if target.strategy else 0,  # type: ignore[arg-type]
    )


def _task_shell(task: Task, memo: ProtoMemo) -> task_pb2.Task:
    spec = task.spec
    return task_pb2.Task(
        target=memo.target(spec.target),
        priority=spec.priority,
        retry_policy=_retry_policy_proto(spec.retry_policy),
        timeouts=_timeouts_proto(spec.timeouts),
        create_time=memo.stamp(task.create_time),
        update_time=memo.stamp(task.update_time),
    )


def task_to_proto(task: Task, *, include_input: bool = True, memo: ProtoMemo | None = None) -> task_pb2.Task:
    """The task as clients see it. Pass one `memo` for the tasks of one response: alike tasks (a batch)
    then copy their shared fields from one prebuilt message instead of building them each."""
    spec = task.spec
    proto = task_pb2.Task()
    proto.CopyFrom((memo or ProtoMemo()).shell(task))
    proto.id = task.id
    proto.state = int(task.state)  # type: ignore[assignment]
    # Fields a new task leaves empty are set only when not (an assignment costs, even of a default).
    if task.attempt:
        proto.attempt = task.attempt
    if spec.idempotency_key:
        proto.idempotency_key = spec.idempotency_key
    if spec.correlation_id:
        proto.correlation_id = spec.correlation_id
    if task.progress:
        proto.progress = task.progress
    if task.progress_message:
        proto.progress_message = task.progress_message
    if task.resubmitted_from:
        proto.resubmitted_from = task.resubmitted_from
    if task.cancel_reason:
        proto.cancel_reason = task.cancel_reason
    if spec.metadata:
        proto.metadata.update(spec.metadata)
    if task.attempts:
        proto.attempts.extend(_attempt_to_proto(a) for a in task.attempts)
    error = task_error_to_proto(task.error)
    if error is not None:
        proto.error.CopyFrom(error)
    if task.end_time is not None:
        proto.end_time.FromMicroseconds(round(task.end_time * 1_000_000))
    if include_input:
        proto.input.CopyFrom(payload_for_client(spec.input))
    if task.output is not None:
        proto.output.CopyFrom(payload_for_client(task.output))
    scheduled = task.scheduled_time
    if scheduled is not None and scheduled > task.create_time and not task.state.is_terminal:
        proto.scheduled_time.FromMicroseconds(round(scheduled * 1_000_000))
    return proto


def task_event_to_proto(event: TaskEvent) -> task_pb2.TaskEvent:
    proto = task_pb2.TaskEvent(
        task_id=event.task_id,
        sequence=event.sequence,
        type=int(event.type),  # type: ignore[arg-type]
        state=int(event.state),  # type: ignore[arg-type]
        attempt=event.attempt,
        time=timestamp(event.time),
        agent_instance_id=event.agent_instance_id,
        progress=event.progress,
        message=event.message,
        error=task_error_to_proto(event.error),
        actor=event.actor,
    )
    if event.output is not None:
        proto.output.CopyFrom(payload_for_client(event.output))
    return proto


# ---------------------------------------------------------------- agents


def _capability_from_proto(proto: common_pb2.Capability) -> Capability:
    return Capability(
        name=proto.name,
        description=proto.description,
        input_schema=struct_to_dict(proto.input_schema) if proto.HasField("input_schema") else None,
        output_schema=struct_to_dict(proto.output_schema) if proto.HasField("output_schema") else None,
    )


def _capability_to_proto(capability: Capability) -> common_pb2.Capability:
    proto = common_pb2.Capability(name=capability.name, description=capability.description)
    if capability.input_schema is not None:
        proto.input_schema.CopyFrom(dict_to_struct(capability.input_schema))
    if capability.output_schema is not None:
        proto.output_schema.CopyFrom(dict_to_struct(capability.output_schema))
    return proto


def registration_from_proto(register: agent_link_pb2.Register) -> tuple[Registration, list[TaskRef]]:
    registration = Registration(
        agent_name=register.agent_name,
        agent_version=register.agent_version,
        instance_id=register.instance_id,
        capabilities=tuple(_capability_from_proto(c) for c in register.capabilities),
        labels=dict(register.labels),
        max_concurrency=register.max_concurrency,
        sdk_language=register.sdk.language,
        sdk_version=register.sdk.version,
        description=register.description,
        weight=register.weight or 1,
        node=register.node,
        pid=register.pid,
        subscriptions=tuple(register.subscriptions),
    )
    held = [TaskRef(h.task_id, h.attempt) for h in register.held_tasks]
    return registration, held


def agent_to_proto(agent: Agent) -> agent_pb2.Agent:
    return agent_pb2.Agent(
        name=agent.name,
        version=agent.version,
        description=agent.description,
        capabilities=[_capability_to_proto(c) for c in agent.capabilities],
        labels=agent.labels,
        status=int(agent.status),  # type: ignore[arg-type]
        connected_instances=agent.connected_instances,
        create_time=timestamp(agent.create_time),
        update_time=timestamp(agent.update_time),
    )


def instance_to_proto(instance: AgentInstance) -> agent_pb2.AgentInstance:
    return agent_pb2.AgentInstance(
        instance_id=instance.instance_id,
        agent_name=instance.agent_name,
        version=instance.version,
        session_id=instance.session_id,
        status=int(instance.status),  # type: ignore[arg-type]
        sdk=common_pb2.SdkInfo(language=instance.sdk_language, version=instance.sdk_version),
        node=instance.node,
        pid=instance.pid,
        labels=instance.labels,
        capabilities=instance.capabilities,
        max_concurrency=instance.max_concurrency,
        in_flight=instance.in_flight,
        load=instance.load,
        weight=instance.weight,
        replica_id=instance.replica_id,
        connect_time=timestamp(instance.connect_time),
        last_seen_time=timestamp(instance.last_seen_time),
        disconnect_time=timestamp(instance.disconnect_time),
    )


# ---------------------------------------------------------------- channels and state


def channel_message_to_proto(message: ChannelMessage, *, for_agent: bool = False) -> channel_pb2.ChannelMessage:
    return channel_pb2.ChannelMessage(
        channel=message.channel,
        message_id=message.message_id,
        payload=payload_for_agent(message.payload) if for_agent else payload_for_client(message.payload),
        headers=message.headers,
        publisher=message.publisher,
        publish_time=timestamp(message.publish_time),
    )


def audit_filter_from_proto(request: audit_pb2.ListAuditEntriesRequest) -> AuditFilter:
    return AuditFilter(
        resource=request.resource,
        actor=request.actor,
        action=request.action,
        correlation_id=request.correlation_id,
        start_time=epoch(request.start_time) if request.HasField("start_time") else None,
        end_time=epoch(request.end_time) if request.HasField("end_time") else None,
    )


def audit_entry_to_proto(entry: AuditEntry) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        id=entry.id,
        time=timestamp(entry.time),
        actor=entry.actor,
        action=entry.action,
        resource=entry.resource,
        correlation_id=entry.correlation_id,
        details=dict_to_struct(entry.details) if entry.details is not None else None,
    )


def channel_to_proto(channel: Channel) -> channel_pb2.Channel:
    return channel_pb2.Channel(
        name=channel.name,
        create_time=timestamp(channel.create_time),
        last_use_time=timestamp(channel.last_use_time),
    )


def state_entry_to_proto(entry: StateEntry) -> state_pb2.StateEntry:
    return state_pb2.StateEntry(
        namespace=entry.namespace,
        key=entry.key,
        value=payload_for_client(entry.value),
        version=entry.version,
        expire_time=timestamp(entry.expire_time),
        create_time=timestamp(entry.create_time),
        update_time=timestamp(entry.update_time),
    )


# ---------------------------------------------------------------- link frames

_MAX_PER_FRAME = 256
_M = TypeVar("_M")


def _ref(ref: TaskRef) -> agent_link_pb2.TaskRef:
    return agent_link_pb2.TaskRef(task_id=ref.task_id, attempt=ref.attempt)


def _assignments_frame(run: list[link.AssignmentMsg]) -> agent_link_pb2.ConnectResponse:
    """One frame of assignments, built in place. Assignments of one dispatch round mostly agree on
    capability, priority, deadline and limits: those are copied from one shell message per kind."""
    frame = agent_link_pb2.ConnectResponse()
    assignments = frame.assignments.assignments
    shells: dict[tuple[str, int, float | None, float, int], agent_link_pb2.Assignment] = {}
    for message in run:
        key = (message.capability, message.priority, message.deadline, message.heartbeat_timeout, message.max_attempts)
        shell = shells.get(key)
        if shell is None:
            shell = shells[key] = agent_link_pb2.Assignment(
                capability=message.capability,
                priority=message.priority,
                deadline=timestamp(message.deadline),
                heartbeat_timeout=duration(message.heartbeat_timeout) if message.heartbeat_timeout else None,
                max_attempts=message.max_attempts,
            )
        assignment = assignments.add()
        assignment.CopyFrom(shell)
        assignment.task_id = message.task_id
        assignment.attempt = message.attempt
        assignment.input.data = message.input.data  # agents get bytes; every SDK decodes JSON itself
        assignment.input.content_type = message.input.content_type
        if message.correlation_id:
            assignment.correlation_id = message.correlation_id
        if message.metadata:
            assignment.metadata.update(message.metadata)
        if message.traceparent:
            assignment.traceparent = message.traceparent
        if message.tracestate:
            assignment.tracestate = message.tracestate
    return frame


def _run_of(messages: list[link.Outbound], index: int, kind: type[_M], limit: int = _MAX_PER_FRAME) -> list[_M]:
    """The consecutive messages of one kind starting at `index` (at most `limit`)."""
    run: list[_M] = []
    while index + len(run) < len(messages) and len(run) < limit:
        message = messages[index + len(run)]
        if not isinstance(message, kind):
            break
        run.append(message)
    return run


def frames(messages: list[link.Outbound]) -> list[agent_link_pb2.ConnectResponse]:
    """Outbound messages as frames, in order; runs of assignments, cancels and acks share a frame."""
    out: list[agent_link_pb2.ConnectResponse] = []
    index = 0
    while index < len(messages):
        message = messages[index]
        if isinstance(message, link.AssignmentMsg):
            assignments = _run_of(messages, index, link.AssignmentMsg)
            index += len(assignments)
            out.append(_assignments_frame(assignments))
        elif isinstance(message, link.CancelMsg):
            cancels = _run_of(messages, index, link.CancelMsg)
            index += len(cancels)
            cancellations = [
                agent_link_pb2.Cancellation(
                    task_id=c.ref.task_id, attempt=c.ref.attempt, reason=c.reason, message=c.message
                )
                for c in cancels
            ]
            out.append(
                agent_link_pb2.ConnectResponse(cancellations=agent_link_pb2.Cancellations(cancellations=cancellations))
            )
        elif isinstance(message, link.AckMsg):
            acks = _run_of(messages, index, link.AckMsg, limit=len(messages))
            index += len(acks)
            refs = [_ref(r) for ack in acks for r in ack.refs]
            out.append(agent_link_pb2.ConnectResponse(result_acks=agent_link_pb2.ResultAcks(tasks=refs)))
        else:
            index += 1
            out.append(_single_frame(message))
    return out


def _single_frame(message: link.Outbound) -> agent_link_pb2.ConnectResponse:
    if isinstance(message, link.RegisteredMsg):
        return agent_link_pb2.ConnectResponse(
            registered=agent_link_pb2.Registered(
                session_id=message.session_id,
                heartbeat_interval=duration(message.heartbeat_interval),
                lease_timeout=duration(message.lease_timeout),
                replica_id=message.replica_id,
                kept_tasks=[_ref(r) for r in message.kept],
                max_payload_bytes=message.max_payload_bytes,
            )
        )
    if isinstance(message, link.ChannelDelivery):
        return agent_link_pb2.ConnectResponse(channel_message=channel_message_to_proto(message.message, for_agent=True))
    if isinstance(message, link.DrainMsg):
        return agent_link_pb2.ConnectResponse(
            drain=agent_link_pb2.Drain(timeout=duration(message.timeout), reason=message.reason)
        )
    if isinstance(message, link.ErrorMsg):
        return error_frame(message)
    raise TypeError(f"no frame for {type(message).__name__}")


def error_frame(message: link.ErrorMsg) -> agent_link_pb2.ConnectResponse:
    return agent_link_pb2.ConnectResponse(
        error=agent_link_pb2.LinkError(
            code=message.code, message=message.message, field=message.field, fatal=message.fatal
        )
    )
